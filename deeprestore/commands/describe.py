"""`deeprestore describe`: train patch descriptors and score them with the HPatches protocol."""

import dataclasses

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import run_recipe
from deeprestore.commands.options import settings_options
from deeprestore.commands.resume import name_option as training_name_option
from deeprestore.commands.resume import resume_option
from deeprestore.commands.resume import train_command as train
from deeprestore.errors import DeepRestoreError


@click.group("describe")
def command():
    """Patch descriptors (seed 004): train on triplets, evaluate with the HPatches benchmark protocol."""


@command.command("train")
@settings_options(defaults.DescribeSettings)
@click.option("--epochs", type=click.IntRange(min=1), default=None, hidden=True,
              help="Old spelling of the training length: --steps of that many epochs.")
@resume_option
@training_name_option
@click.pass_context
def train_command(context, resume, name, epochs, **options):
    """Train seed 004's descriptor; mAP after every epoch, checkpoints, results.json/txt/png."""
    from deeprestore.recipes import describe as recipe

    state = context.obj
    if epochs is not None:
        _epochs_to_steps(context, resume, epochs, options)

    def check(settings):
        _check_inputs(settings)
        recipe.steps_per_epoch(settings.triplets, settings.batch_size)

    train(context, "describe-train", defaults.DescribeSettings, options,
          lambda settings, run, seed, resume: recipe.train(settings, run, seed=seed, echo=state.echo,
                                                           show_progress=not state.quiet, resume=resume),
          resume=resume, name=name, check=check)


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
@settings_options(defaults.DescribeEvaluateSettings)
@click.pass_obj
def evaluate_command(state, **options):
    """Score a trained descriptor, baselines and/or descriptor CSV folders with the HPatches protocol, side by side."""
    from deeprestore.recipes import describe_evaluate as recipe

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
@settings_options(defaults.DescribeDataSettings, only=("patches",))
@click.option("--patch-size", type=click.IntRange(min=8), default=32,
              help="32 (N-HPatches) or 65 (hpatches-release).")
@click.option("--heldout", is_flag=True,
              help="Photos that training never sees (score it with --split full).")
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
