"""`deeprestore texture`: texture synthesis from Gram matrices."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import parse_size, precision_option, print_estimates, run_recipe


@click.command("texture")
@click.option("--source", "sources", multiple=True, default=defaults.TEXTURE.sources,
              help="Texture image (a file or a bundled sample: brick, grass, gravel, ...); repeat to blend.")
@click.option("--blend", multiple=True, type=float, help="Blend weight of each source (default: equal).")
@click.option("--network", default=defaults.TEXTURE.network,
              help="Network name or Keras model file (see `deeprestore nets`).")
@click.option("--weights", default=defaults.TEXTURE.weights, help="auto, imagenet, offline, random, or a weights file.")
@precision_option(defaults.TEXTURE.precision)
@click.option("--pooling", type=click.Choice(["max", "average"]), default=defaults.TEXTURE.pooling)
@click.option("--layer", "layers", multiple=True, help="Gram layer; repeat (default: conv1_1 and pool1 .. pool4).")
@click.option("--layer-weight", "layer_weights", multiple=True, type=float,
              help="Weight of each layer (default: equal).")
@click.option("--size", default="x".join(map(str, defaults.TEXTURE.size)), help="Output size, e.g. 256 or 192x320.")
@click.option("--source-size", default=defaults.TEXTURE.source_size, type=click.IntRange(min=16),
              help="Longer side the sources are resized to.")
@click.option("--count", default=defaults.TEXTURE.count, type=click.IntRange(min=1),
              help="Textures synthesised as one batch, from different noise.")
@click.option("--optimiser", type=click.Choice(defaults.OPTIMISER_CHOICES), default=defaults.TEXTURE.optimiser)
@click.option("--learning-rate", default=defaults.TEXTURE.learning_rate, type=click.FloatRange(min=0.0, min_open=True))
@click.option("--steps", default=defaults.TEXTURE.steps, type=click.IntRange(min=1))
@click.option("--parametrisation", type=click.Choice(defaults.PARAMETRISATIONS),
              default=defaults.TEXTURE.parametrisation,
              show_default=True,
              help="What is optimised: a decorrelated-colour Fourier spectrum (lucid's; L-BFGS then runs without "
                   "bounds), or the pixels (the Gram loss then favours per-pixel colour noise).")
@click.option("--cache", default=defaults.TEXTURE.cache, type=click.Path(dir_okay=False),
              help="Shared HDF5 activation cache.")
@click.option("--dry-run", is_flag=True,
              help="Print the estimated peak memory and total time, then exit without running or creating a run.")
@click.pass_obj
def command(state, dry_run, **options):
    """Texture synthesis (Gatys et al.): match Gram matrices of a source, at any output size."""
    from deeprestore.images import load_image
    from deeprestore.recipes.texture import texture

    for name in ("sources", "blend", "layers", "layer_weights"):
        options[name] = tuple(options[name])
    options["size"] = parse_size(options["size"])
    settings = defaults.TextureSettings(**options)
    for source in settings.sources:
        load_image(source)
    if dry_run:
        from deeprestore.recipes.texture import texture_estimates

        print_estimates("texture", settings.network, texture_estimates(settings, seed=state.seed), settings.steps)
        return
    run_recipe(state, "texture", settings, lambda run: texture(
        settings, run, seed=state.seed, show_progress=not state.quiet, echo=state.echo))
