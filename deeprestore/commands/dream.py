"""`deeprestore dream`: DeepDream from the command line."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.aliases import aliased_option
from deeprestore.commands.common import item_names, name_option, precision_option, run_recipe

TILE_MODES = ("random", "contiguous", "overlap")
POSITIVE = click.FloatRange(min=0.0, min_open=True)


@click.command("dream")
@aliased_option("--images", "images", aliases=("--image",), default=defaults.DREAM.images,
              help="Start image: a file, a bundled sample (astronaut, brick, chelsea, coffee, grass, ...), "
                   "or a folder or list file of images (dreamed one by one with the network loaded once).")
@click.option("--network", default=defaults.DREAM.network,
              help="Network name or Keras model file (see `deeprestore nets`).")
@click.option("--weights", default=defaults.DREAM.weights, help="auto, imagenet, offline, random, or a weights file.")
@precision_option(defaults.DREAM.precision)
@click.option("--pooling", type=click.Choice(["max", "average"]), default=defaults.DREAM.pooling)
@click.option("--layer", "layers", multiple=True, metavar="LAYER[:WEIGHT]",
              help="Raise the L2 norm of a layer's response, with a weight (default 1); repeat for a weighted sum. "
              "Without any objective option: the network's dream layers.")
@click.option("--channel", "channels", multiple=True, metavar="LAYER:INDEX[:WEIGHT]",
              help="Raise the mean activation of one channel; repeatable.")
@click.option("--neuron", "neurons", multiple=True, metavar="LAYER:INDEX[:WEIGHT]",
              help="Raise one unit: a channel at the centre of the layer's grid; repeatable.")
@click.option("--class", "classes", multiple=True, metavar="INDEX[:WEIGHT]",
              help="Raise a class logit (pre-softmax), averaged over the convolutional head's positions; "
              "builds the classifier head (needs --weights imagenet, a file or random).")
@click.option("--guide", default=defaults.DREAM.guide, metavar="IMAGE",
              help="Guided dreaming: at the L2 layers, raise the dot product with this image's features.")
@click.option("--cycle", multiple=True, metavar="LAYER:STEP_SIZE:STEPS",
              help="A stage of a multi-layer cycle, run in the order given (seed 003, 2.5); replaces --layer, "
              "--steps and --step-size.")
@click.option("--cycles", default=defaults.DREAM.cycles, type=click.IntRange(min=1),
              help="Passes over the --cycle stages at each octave.")
@click.option("--size", default=defaults.DREAM.size, type=click.IntRange(min=0),
              help="Longer side of the working image in pixels (0: keep the input size).")
@click.option("--octaves", default=defaults.DREAM.octaves, type=click.IntRange(min=1))
@click.option("--octave-scale", default=defaults.DREAM.octave_scale, type=click.FloatRange(min=1.0))
@click.option("--steps", default=defaults.DREAM.steps, type=click.IntRange(min=1), help="Steps per octave.")
@click.option("--step-size", default=defaults.DREAM.step_size, type=POSITIVE,
              help="Step in units of the mean absolute gradient.")
@click.option("--jitter", default=defaults.DREAM.jitter, type=click.IntRange(min=0),
              help="Largest random shift, pixels.")
@click.option("--start", type=click.Choice(defaults.START_CHOICES), default=defaults.DREAM.start,
              help="Start from the image, seeded uniform noise, or grey.")
@click.option("--tile", default=defaults.DREAM.tile, type=click.IntRange(min=0),
              help="Compute gradients tile by tile, tiles of this many pixels (0: whole image).")
@click.option("--tile-mode", type=click.Choice(TILE_MODES), default=defaults.DREAM.tile_mode,
              help="random: grid shifted each step, no seams; contiguous: fixed grid, seams show; overlap: "
              "fixed grid with --tile-overlap, shared regions updated several times.")
@click.option("--tile-overlap", default=defaults.DREAM.tile_overlap, type=click.IntRange(min=0),
              help="Overlap of neighbouring tiles in overlap mode, pixels (seed 003: 124 on 224 px tiles).")
@click.option("--blur-every", default=defaults.DREAM.blur_every, type=click.IntRange(min=0),
              help="Gaussian blur every this many steps (0: never).")
@click.option("--blur-sigma", default=defaults.DREAM.blur_sigma, type=click.FloatRange(min=0.0),
              help="Standard deviation of the blur, pixels.")
@click.option("--clamp/--no-clamp", default=defaults.DREAM.clamp, help="Keep pixels within [0, 1] after each step.")
@click.option("--scaling", default=defaults.DREAM.scaling, type=click.FloatRange(min=0.0, max=1.0, min_open=True),
              help="Scale the image towards grey by this factor after each step (1: off).")
@click.option("--l2-decay", default=defaults.DREAM.l2_decay, type=click.FloatRange(min=0.0),
              help="Weight of an L2 penalty mean((x - 0.5)^2) on the image.")
@click.option("--parametrisation", type=click.Choice(defaults.PARAMETRISATIONS), default=defaults.DREAM.parametrisation,
              show_default=True,
              help="What each octave steps on: the pixels, or a decorrelated-colour Fourier spectrum (lucid's; "
                   "smoother patterns). Jitter, tiles, blur, scaling and L2 decay apply to its images; its "
                   "sigmoid keeps pixels in [0, 1], so it refuses --no-clamp.")
@click.option("--decay-power", default=defaults.DREAM.decay_power, type=click.FloatRange(min=0.0), show_default=True,
              help="fourier: scale the spectrum by 1 / frequency ** this (lucid: 1, mostly colour drift in a dream).")
@click.option("--frames", default=defaults.DREAM.frames, type=click.IntRange(min=1),
              help="Zoom loop: frames, each dreamed from the previous one zoomed; saved as PNGs and a GIF.")
@click.option("--zoom", default=defaults.DREAM.zoom, type=click.FloatRange(min=1.0), help="Zoom factor between frames.")
@click.option("--save-every", default=defaults.DREAM.save_every, type=click.IntRange(min=0),
              help="Save the image every this many steps into images/ (0: never).")
@click.option("--cache", default=defaults.DREAM.cache, type=click.Path(dir_okay=False),
              help="HDF5 activation cache shared across runs (default: the run's activations.h5).")
@click.option("--shard", default=None, help="I/N: dream only the I-th of N shares of a folder or list (array jobs).")
@name_option
@click.option("--dry-run", is_flag=True,
              help="Print the estimated peak memory and total time, then exit without running or creating a run.")
@click.pass_obj
def command(state, dry_run, name, **options):
    """DeepDream: normalised gradient ascent on layers, channels, neurons, classes or a guide, over octaves."""
    from deeprestore.errors import DeepRestoreError
    from deeprestore.images import list_images, load_image
    from deeprestore.recipes import dream as recipe
    from deeprestore.sharding import shard

    for option in ("layers", "channels", "neurons", "classes", "cycle"):
        options[option] = tuple(options[option])
    settings = defaults.DreamSettings(**options)
    try:
        recipe.parse_terms(settings)  # malformed objective options fail before any work
    except DeepRestoreError as error:
        raise click.UsageError(str(error)) from None
    sources = list_images(settings.images)
    for source in shard(sources, settings.shard):
        load_image(source)  # fail on a bad image before building anything
    if settings.guide:
        load_image(settings.guide)
    if dry_run:
        from deeprestore.estimate import format_estimates

        rows = recipe.dream_estimates(settings, seed=state.seed)
        click.echo(f"Dry run: dream on {settings.network}, no run directory created.")
        click.echo(format_estimates([(label, item) for label, item, _ in rows], steps=[steps for _, _, steps in rows]))
        return
    run_recipe(state, "dream", settings, lambda run: recipe.dream(
        settings, run, seed=state.seed, show_progress=not state.quiet, echo=state.echo),
        name=name, items=item_names(sources))
