"""`deeprestore style`: neural style transfer from the command line."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import item_names, name_option, precision_option, print_estimates, run_recipe


@click.command("style")
@click.option("--content", default=defaults.STYLE.content,
              help="Content image: a file, a folder, a list file or a bundled sample.")
@click.option("--style", "styles", multiple=True, default=defaults.STYLE.styles,
              help="Style image; repeat to blend several.")
@click.option("--style-blend", multiple=True, type=float, help="Blend weight of each style image (default: equal).")
@click.option("--network", default=defaults.STYLE.network,
              help="Network name or Keras model file (see `deeprestore nets`).")
@click.option("--weights", default=defaults.STYLE.weights, help="auto, imagenet, offline, random, or a weights file.")
@precision_option(defaults.STYLE.precision)
@click.option("--pooling", type=click.Choice(["max", "average"]), default=defaults.STYLE.pooling)
@click.option("--content-layer", default=defaults.STYLE.content_layer,
              help="Content layer (default: the network's, conv4_2).")
@click.option("--style-layer", "style_layers", multiple=True, help="Style layer; repeat (default: conv1_1 .. conv5_1).")
@click.option("--style-layer-weight", "style_layer_weights", multiple=True, type=float,
              help="Weight of each style layer (default: equal).")
@click.option("--content-weight", default=defaults.STYLE.content_weight, type=click.FloatRange(min=0.0))
@click.option("--style-weight", default=defaults.STYLE.style_weight, type=click.FloatRange(min=0.0))
@click.option("--tv-weight", default=defaults.STYLE.tv_weight, type=click.FloatRange(min=0.0))
@click.option("--init", type=click.Choice(defaults.INIT_CHOICES), default=defaults.STYLE.init)
@click.option("--optimiser", type=click.Choice(defaults.OPTIMISER_CHOICES), default=defaults.STYLE.optimiser)
@click.option("--learning-rate", default=defaults.STYLE.learning_rate, type=click.FloatRange(min=0.0, min_open=True),
              help="Adam's learning rate on [0, 1] pixels.")
@click.option("--steps", default=defaults.STYLE.steps, type=click.IntRange(min=1), help="Iterations per scale.")
@click.option("--size", default=defaults.STYLE.size, type=click.IntRange(min=16), help="Longer side of the output.")
@click.option("--style-scale", default=defaults.STYLE.style_scale, type=click.FloatRange(min=0.0, min_open=True),
              help="Size of the style images relative to the output.")
@click.option("--scales", default=defaults.STYLE.scales, type=click.IntRange(min=1), help="Coarse-to-fine resolutions.")
@click.option("--preserve-colour", is_flag=True, help="Transfer on luminance only, keeping the content's colours.")
@click.option("--cache", default=defaults.STYLE.cache, type=click.Path(dir_okay=False),
              help="Shared HDF5 activation cache.")
@click.option("--shard", default=None, help="I/N: process only the I-th of N shares of the inputs (array jobs).")
@name_option
@click.option("--dry-run", is_flag=True,
              help="Print the estimated peak memory and total time, then exit without running or creating a run.")
@click.pass_obj
def command(state, dry_run, name, **options):
    """Neural style transfer (Gatys et al.): content of one image, Gram matrices of others."""
    from deeprestore.images import list_images, load_image
    from deeprestore.recipes.style import style
    from deeprestore.sharding import shard

    for option in ("styles", "style_blend", "style_layers", "style_layer_weights"):
        options[option] = tuple(options[option])
    settings = defaults.StyleSettings(**options)
    sources = list_images(settings.content)
    for source in (*shard(sources, settings.shard), *settings.styles):
        load_image(source)  # fail on a bad image before building anything
    if dry_run:
        from deeprestore.recipes.style import style_estimates

        print_estimates("style", settings.network, style_estimates(settings, seed=state.seed), settings.steps)
        return
    run_recipe(state, "style", settings, lambda run: style(
        settings, run, seed=state.seed, show_progress=not state.quiet, echo=state.echo),
        name=name, items=item_names(sources))
