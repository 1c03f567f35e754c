"""`deeprestore dream`: DeepDream from the command line."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import run_recipe


@click.command("dream")
@click.option("--image", default=defaults.DREAM.image,
              help="Start image: a file or a bundled sample (astronaut, brick, chelsea, coffee, grass, ...).")
@click.option("--network", default=defaults.DREAM.network, help="Network name (see `deeprestore nets`).")
@click.option("--weights", default=defaults.DREAM.weights, help="auto, imagenet, offline, random, or a weights file.")
@click.option("--pooling", type=click.Choice(["max", "average"]), default=defaults.DREAM.pooling)
@click.option("--layer", "layers", multiple=True,
              help="Layer whose L2 norm to raise; repeat for several (default: the network's dream layers).")
@click.option("--size", default=defaults.DREAM.size, type=click.IntRange(min=0),
              help="Longer side of the working image in pixels (0: keep the input size).")
@click.option("--octaves", default=defaults.DREAM.octaves, type=click.IntRange(min=1))
@click.option("--octave-scale", default=defaults.DREAM.octave_scale, type=click.FloatRange(min=1.0))
@click.option("--steps", default=defaults.DREAM.steps, type=click.IntRange(min=1), help="Steps per octave.")
@click.option("--step-size", default=defaults.DREAM.step_size, type=click.FloatRange(min=0.0, min_open=True),
              help="Step in units of the mean absolute gradient.")
@click.option("--jitter", default=defaults.DREAM.jitter, type=click.IntRange(min=0), help="Largest random shift, pixels.")
@click.option("--start", type=click.Choice(defaults.START_CHOICES), default=defaults.DREAM.start,
              help="Start from the image, seeded uniform noise, or grey.")
@click.option("--cache", default=defaults.DREAM.cache, type=click.Path(dir_okay=False),
              help="HDF5 activation cache shared across runs (default: the run's activations.h5).")
@click.pass_obj
def command(state, **options):
    """DeepDream: raise the L2 norm of layers by normalised gradient ascent over octaves."""
    from deeprestore.images import load_image
    from deeprestore.recipes.dream import dream as run_dream

    options["layers"] = tuple(options["layers"])
    settings = defaults.DreamSettings(**options)
    load_image(settings.image)  # fail on a bad image before building anything
    run_recipe(state, "dream", settings, lambda run: run_dream(
        settings, run, seed=state.seed, show_progress=not state.quiet, echo=state.echo))
