"""`deeprestore describe`: train patch descriptors and score them with the HPatches protocol."""

import dataclasses

import click

from deeprestore import settings as defaults
from deeprestore.commands.aliases import aliased_option
from deeprestore.commands.common import devices_option, run_recipe
from deeprestore.commands.resume import resume_run, training_options
from deeprestore.errors import DeepRestoreError

TRAIN = defaults.DESCRIBE
EVALUATE = defaults.DESCRIBE_EVALUATE


def data_options(function):
    """The options shared by `train` and `evaluate`: dataset, split, inputs and task files."""
    options = [
        click.option("--data", type=click.Path(exists=True, file_okay=False), default=TRAIN.data,
                     help="HPatches-format dataset folder (default: a synthetic one made from the bundled photos)."),
        click.option("--split", default=TRAIN.split,
                     help=f"Benchmark split: {', '.join(defaults.DESCRIBE_SPLITS)}, or one named in the splits.json "
                     "of the dataset folder or of <tasks>/splits/ (which replaces the official ones)."),
        click.option("--inputs", type=click.Choice(defaults.DESCRIBE_INPUTS), default=TRAIN.inputs,
                     help="Patches the descriptor sees: clean, the _noise twins, or those through --denoiser."),
        click.option("--denoiser", type=click.Path(exists=True, dir_okay=False), default=TRAIN.denoiser,
                     help="Saved Keras model (.keras) mapping (N,32,32,1) to (N,32,32,1), for --inputs denoised."),
        click.option("--tasks", type=click.Path(exists=True, file_okay=False), default=TRAIN.tasks,
                     help="Folder of benchmark task files (default: <data>/tasks, else generated, seeded)."),
        click.option("--patches", type=click.IntRange(min=8), default=TRAIN.patches,
                     help="Tracks per sequence of the synthetic dataset."),
        click.option("--pairs", type=click.IntRange(min=10), default=TRAIN.pairs,
                     help="Verification pairs to generate when there are no task files (benchmark: 1000000)."),
        click.option("--queries", type=click.IntRange(min=1), default=TRAIN.queries,
                     help="Retrieval queries to generate (benchmark: 5000)."),
        click.option("--distractors", type=click.IntRange(min=1), default=TRAIN.distractors,
                     help="Retrieval distractors to generate (benchmark: 20000)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group("describe")
def command():
    """Patch descriptors (seed 004): train on triplets, evaluate with the HPatches benchmark protocol."""


@command.command("train")
@data_options
@click.option("--train-inputs", type=click.Choice(defaults.DESCRIBE_INPUTS), default=TRAIN.train_inputs,
              help="Patches to train on (default: --inputs).")
@click.option("--loss", type=click.Choice(defaults.DESCRIBE_LOSSES), default=TRAIN.loss,
              help="triplet: seed 004's margin on mean squared distances; hardest: HardNet's hardest in batch.")
@click.option("--margin", type=click.FloatRange(min=0.0), default=TRAIN.margin)
@aliased_option("--optimiser", "optimiser", aliases=("--optimizer",), type=click.Choice(defaults.DESCRIBE_OPTIMISERS),
                default=TRAIN.optimiser, help="Plain SGD (seed 004) or Adam.")
@click.option("--learning-rate", type=click.FloatRange(min=0.0, min_open=True), default=TRAIN.learning_rate,
              help="Default 0.1 for SGD (seed 004), 0.001 for Adam.")
@click.option("--steps", type=click.IntRange(min=1), default=TRAIN.steps,
              help="Training steps in all, also when resuming; an epoch is --triplets // --batch-size steps of fresh "
              "triplets, with the mAPs measured after each.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, hidden=True,
              help="Old spelling of the training length: --steps of that many epochs.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=TRAIN.checkpoint_every,
              help="Steps between checkpoints.")
@click.option("--triplets", type=click.IntRange(min=1), default=TRAIN.triplets, help="Fresh triplets per epoch.")
@click.option("--batch-size", type=click.IntRange(min=2), default=TRAIN.batch_size)
@click.option("--l2-normalise/--no-l2-normalise", default=TRAIN.l2_normalise,
              help="L2-normalise descriptors (HardNet).")
@click.option("--standardise/--no-standardise", default=TRAIN.standardise,
              help="Standardise each patch (zero mean, unit deviation) inside the model; seed 004 did not.")
@click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=TRAIN.dropout)
@devices_option(TRAIN.devices)
@training_options(TRAIN)
@click.pass_context
def train_command(context, resume, epochs, **options):
    """Train seed 004's descriptor; mAP after every epoch, checkpoints, results.json/txt/png."""
    from deeprestore.recipes import describe as recipe

    state = context.obj
    if epochs is not None:
        _epochs_to_steps(context, resume, epochs, options)
    if resume is not None:
        resume_run(context, resume, "describe-train", defaults.DescribeSettings, options,
                   lambda settings, run, seed: recipe.train(settings, run, seed=seed, echo=state.echo,
                                                            show_progress=not state.quiet, resume=True))
        return
    settings = defaults.DescribeSettings(**options)
    _check_inputs(settings)
    recipe.steps_per_epoch(settings.triplets, settings.batch_size)
    run_recipe(state, "describe-train", settings, lambda run: recipe.train(
        settings, run, seed=state.seed, echo=state.echo, show_progress=not state.quiet))


def _epochs_to_steps(context, resume, epochs, options):
    """Turns the old `--epochs N` into `--steps`: N epochs of `--triplets // --batch-size` steps (those
    of the resumed run unless given)."""
    from deeprestore.commands.resume import given_options
    from deeprestore.recipes.describe import steps_per_epoch
    from deeprestore.rundir import RunDir

    if "steps" in given_options(context, options):
        raise DeepRestoreError(f"Got --epochs {epochs} and --steps {options['steps']}; expected one (--epochs is the "
                               "old spelling of --steps).")
    sizes = {name: options[name] for name in ("triplets", "batch_size")}
    if resume is not None:
        stored = RunDir.open(resume).config.get("settings") or {}
        sizes = {name: value if name in given_options(context, options) else stored.get(name, value)
                 for name, value in sizes.items()}
    options["steps"] = epochs * steps_per_epoch(sizes["triplets"], sizes["batch_size"])
    context.set_parameter_source("steps", click.core.ParameterSource.COMMANDLINE)


@command.command("evaluate")
@data_options
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(defaults.DESCRIBE_BASELINES),
              help="Also score a built-in descriptor: raw16 (16x16 pixels, zero mean, unit norm) or sift "
              "(scikit-image's, at the patch centre); repeat for several.")
@click.option("--delimiter", default=EVALUATE.delimiter,
              help="Field separator of the descriptor CSVs (default: detected per file: , ; tab or spaces).")
@click.option("--model", type=click.Path(exists=True), default=EVALUATE.model,
              help="A `describe train` run directory or a descriptor .keras file.")
@click.option("--descriptors", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Descriptor CSV folder in the benchmark layout (<root>/<name>); repeat to compare several.")
@click.option("--export", is_flag=True, default=EVALUATE.export,
              help="Also write the model's descriptors as CSV into the run's descriptors/.")
@click.pass_obj
def evaluate_command(state, **options):
    """Score a trained descriptor, baselines and/or descriptor CSV folders with the HPatches protocol, side by side."""
    from deeprestore.recipes import describe_evaluate as recipe

    options["descriptors"], options["baselines"] = tuple(options["descriptors"]), tuple(options["baselines"])
    settings = defaults.DescribeEvaluateSettings(**options)
    _check_inputs(settings)
    if settings.model is not None:  # only a trained descriptor needs Keras
        state.load_backend()
    run_recipe(state, "describe-evaluate", settings, lambda run: recipe.evaluate(settings, run, seed=state.seed,
                                                                                 echo=state.echo),
               uses_backend=settings.model is not None)


evaluate_command.lazy_backend = True  # Keras loads only for a trained descriptor (see `deeprestore.cli`)


@command.command("synth")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write the dataset into.")
@click.option("--patches", type=click.IntRange(min=8), default=TRAIN.patches, help="Tracks per sequence.")
@click.option("--patch-size", type=click.IntRange(min=8), default=32, help="32 (N-HPatches) or 65 (hpatches-release).")
@click.option("--heldout", is_flag=True, help="Photos that training never sees (score it with --split full).")
@click.pass_obj
def synth_command(state, out, patches, patch_size, heldout):
    """Write the synthetic HPatches-format dataset (bundled photos, known warps, _noise twins) to a folder."""
    from deeprestore.descriptors import synthetic

    base = synthetic.HELDOUT if heldout else synthetic.SyntheticSpec()
    seed = base.seed + state.seed
    spec = dataclasses.replace(base, count=patches, patch_size=patch_size, region=max(32, patch_size), seed=seed)
    click.echo(str(synthetic.synthesize(out, spec)))


def _check_inputs(settings):
    """Fails before any work when denoised inputs lack a denoiser."""
    wanted = {settings.inputs, getattr(settings, "train_inputs", None)}
    if "denoised" in wanted and settings.denoiser is None:
        raise click.BadParameter("--inputs/--train-inputs denoised need --denoiser PATH.", param_hint="--denoiser")
