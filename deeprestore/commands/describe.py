"""`deeprestore describe`: score patch descriptors with the HPatches protocol and write the synthetic
dataset; `describe train` is an experiment of the registry (`recipes.registry`)."""

import dataclasses

import click

from deeprestore import settings as defaults
from deeprestore.driver import start_run_recipe
from deeprestore.options import settings_options
from deeprestore.recipes import checks
from deeprestore.recipes.registry import describe_check


@click.group("describe")
def command():
    """Patch descriptors (seed 004): train on triplets, evaluate with the HPatches benchmark protocol."""


@command.command("evaluate")
@settings_options(defaults.DescribeEvaluateSettings)
@click.pass_obj
def evaluate_command(state, **options):
    """Score a trained descriptor, baselines and/or descriptor CSV folders with the HPatches protocol, side by side."""
    from deeprestore.recipes import describe_evaluate as recipe

    settings = defaults.DescribeEvaluateSettings(**options)
    describe_check(settings)
    if settings.model is not None:  # only a trained descriptor needs Keras, once it is known to be one
        checks.descriptor(settings.model)
        state.load_backend()
    start_run_recipe(state, "describe-evaluate", settings, lambda run: recipe.evaluate(
        settings, run, seed=state.seed, echo=state.echo), uses_backend=settings.model is not None)


evaluate_command.lazy_backend = True  # Keras loads only for a trained descriptor (see `deeprestore.cli`)


@command.command("synth")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write the dataset into.")
@settings_options(defaults.DescribeDataSettings, only=("patches",))
@click.option("--patch-size", type=click.IntRange(min=8), default=32,
              help="32 (N-HPatches) or 65 (hpatches-release).")
@click.option("--heldout", is_flag=True,
              help="Photos that training never sees (score it with --split full).")
@click.option("--stereo", is_flag=True,
              help="Real correspondences training never sees: the Middlebury motorcycle stereo pair and its disparity, "
                   "one sequence (score it with --split full; --patches up to about 256).")
@click.pass_obj
def synth_command(state, out, patches, patch_size, heldout, stereo):
    """Write the synthetic HPatches-format dataset (bundled photos, known warps, _noise twins) to a folder."""
    from deeprestore.descriptors import synthetic

    if heldout and stereo:
        raise click.UsageError("--heldout and --stereo were both given; expected one of them (or neither).")
    base = synthetic.HELDOUT if heldout else synthetic.STEREO if stereo else synthetic.SyntheticSpec()
    seed = base.seed + state.seed
    spec = dataclasses.replace(base, count=patches, patch_size=patch_size, region=max(32, patch_size), seed=seed)
    click.echo(str(synthetic.synthesize(out, spec)))
