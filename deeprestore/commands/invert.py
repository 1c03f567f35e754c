"""`deeprestore invert`: reconstruct images from a layer's activations, three ways."""

import dataclasses

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import item_names, name_option, precision_option, print_estimates, run_recipe
from deeprestore.errors import DeepRestoreError

METHODS = ("optimise", "learned", "deconvnet")


def given(ctx, name):
    """Whether an option was given on the command line (not left at its default)."""
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


@click.command("invert")
@click.option("--method", type=click.Choice(METHODS), default="optimise",
              help="optimise: Mahendran & Vedaldi from noise; learned: through a trained `stack`; "
                   "deconvnet: Zeiler & Fergus projections of the strongest activations.")
@click.option("--images", default=defaults.INVERT.images,
              help="Image(s): a file, a folder, a list file or a bundled sample (deconvnet default: the bundled set).")
@click.option("--network", default=defaults.INVERT.network,
              help="Network name or Keras model file (learned: the stack's).")
@click.option("--weights", default=defaults.INVERT.weights, help="auto, imagenet, offline, random, or a weights file.")
@precision_option(defaults.INVERT.precision)
@click.option("--pooling", type=click.Choice(["max", "average"]), default=defaults.INVERT.pooling)
@click.option("--layer", default=defaults.INVERT.layer,
              help="Layer to invert, pre- or post-activation (learned: the stack's deepest input; "
                   "deconvnet: every pooling layer).")
@click.option("--to", default=defaults.INVERT.to, metavar="LAYER",
              help="optimise: reconstruct the activations of this lower layer instead of the image "
                   "(default: the image).")
@click.option("--preset", type=click.Choice(defaults.INVERT_PRESETS), default=defaults.INVERT.preset,
              help="optimise: mv2015 (alpha 6, TV by depth, momentum SGD) or mv2016 (normalised priors, jitter, "
                   "range constraint, Adam).")
@click.option("--size", default=defaults.INVERT.size, type=click.IntRange(min=0),
              help="Side of the (square) images; 0: the network's input size (learned: the stack's training size).")
@click.option("--steps", default=defaults.INVERT.steps, type=click.IntRange(min=0),
              help="optimise: iterations (0: the preset's).")
@click.option("--learning-rate", default=defaults.INVERT.learning_rate, type=click.FloatRange(min=0.0),
              help="optimise: on [0, 1] pixels (0: the preset's).")
@click.option("--stack", default=defaults.INVERT_LEARNED.stack, type=click.Path(exists=True, file_okay=False),
              help="learned: a stack run (or its modules/ folder) from `deeprestore stack`.")
@click.option("--batch-size", default=defaults.INVERT_LEARNED.batch_size, type=click.IntRange(min=1),
              help="learned, deconvnet: images per forward pass.")
@click.option("--channels", default=defaults.INVERT_DECONVNET.channels, type=click.IntRange(min=1),
              help="deconvnet: channels per layer (the first ones).")
@click.option("--top", default=defaults.INVERT_DECONVNET.top, type=click.IntRange(min=1),
              help="deconvnet: strongest activations shown per channel.")
@click.option("--data-cache", default=defaults.INVERT_DECONVNET.data_cache, type=click.Path(file_okay=False),
              help="deconvnet: folder for the resized dataset and cached activation maxima.")
@click.option("--cache", default=defaults.INVERT.cache, type=click.Path(dir_okay=False),
              help="optimise: shared HDF5 activation cache.")
@click.option("--shard", default=None,
              help="optimise: I/N: invert only the I-th of N shares of the images (array jobs).")
@name_option
@click.option("--dry-run", is_flag=True,
              help="optimise, deconvnet: print the estimated peak memory and total time, then exit without creating "
                   "a run.")
@click.pass_context
def command(ctx, method, dry_run, stack, batch_size, channels, top, data_cache, name, **options):
    """Reconstruct images from a layer's activations, and measure how well."""
    state = ctx.obj
    if name is not None and method != "optimise":
        raise DeepRestoreError(f"--name shares a run among the tasks of an array job; got it with --method {method}, "
                               "expected --method optimise.")
    if method != "optimise" and given(ctx, "to"):
        raise DeepRestoreError(f"--to applies to --method optimise only; got --method {method}.")
    if dry_run and method == "learned":
        raise DeepRestoreError("--dry-run estimates --method optimise and deconvnet; got --method learned, which "
                               "runs one forward pass of the stack per batch.")
    progress = dict(seed=state.seed, show_progress=not state.quiet, echo=state.echo)
    if method == "learned":
        from deeprestore.inversion.learned import invert_learned

        if stack is None:
            raise DeepRestoreError("--method learned needs --stack RUN, a run directory of `deeprestore stack`.")
        chosen = dataclasses.replace(defaults.INVERT_LEARNED, stack=stack, size=options["size"], batch_size=batch_size,
                                     layer=options["layer"] if given(ctx, "layer") else "")
        network = options["network"] if given(ctx, "network") else None
        weights = options["weights"] if given(ctx, "weights") else None
        config = {"method": method, **dataclasses.asdict(chosen), "images": options["images"], "network": network,
                  "weights": weights}
        run_recipe(state, "invert", config, lambda run: invert_learned(
            stack, options["images"], run, network, weights, chosen.layer, chosen.size, batch_size, **progress))
        return
    if method == "deconvnet":
        from deeprestore.inversion.deconvnet import deconvnet_estimates, invert_deconvnet

        chosen = dataclasses.replace(
            defaults.INVERT_DECONVNET,
            images=options["images"] if given(ctx, "images") else defaults.INVERT_DECONVNET.images,
            layers=(options["layer"],) if given(ctx, "layer") else (), channels=channels, top=top, size=options["size"],
            batch_size=batch_size, data_cache=data_cache,
        )
        if dry_run:
            rows, batches = deconvnet_estimates(options["network"], chosen.images, chosen.layers, channels, top,
                                                chosen.size, batch_size, seed=state.seed)
            print_estimates("invert --method deconvnet", options["network"], rows, batches)
            return
        config = {"method": method, **dataclasses.asdict(chosen),
                  "network": options["network"], "weights": options["weights"]}
        run_recipe(state, "invert", config, lambda run: invert_deconvnet(
            options["network"], options["weights"], run, chosen.images, chosen.layers, channels, top, chosen.size,
            batch_size, data_cache, **progress))
        return

    from deeprestore.images import list_images, load_image
    from deeprestore.recipes.invert import invert, invert_estimates
    from deeprestore.sharding import shard

    settings = defaults.InvertSettings(**options)
    sources = list_images(settings.images)
    for source in shard(sources, settings.shard):
        load_image(source)
    if dry_run:
        rows, steps = invert_estimates(settings, seed=state.seed)
        print_estimates("invert", settings.network, rows, steps)
        return
    from deeprestore.recipes.invert_layer import invert_to_layer

    recipe = invert_to_layer if settings.to else invert
    run_recipe(state, "invert", settings, lambda run: recipe(settings, run, **progress), name=name,
               items=item_names(sources))
