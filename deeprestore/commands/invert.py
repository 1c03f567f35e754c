"""`deeprestore invert`: reconstruct images from a layer's activations, three ways."""

import dataclasses

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import item_names, name_option, print_estimates, run_recipe
from deeprestore.commands.options import dry_run_option, settings_options
from deeprestore.errors import DeepRestoreError

METHODS = ("optimise", "learned", "deconvnet")


def given(ctx, name):
    """Whether an option was given on the command line (not left at its default)."""
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


@click.command("invert")
@click.option("--method", type=click.Choice(METHODS), default="optimise",
              help="optimise: Mahendran & Vedaldi from noise; learned: through a trained `stack`; "
                   "deconvnet: Zeiler & Fergus projections of the strongest activations.")
@settings_options(defaults.InvertSettings,
                  only=("images", "network", "weights", "precision", "pooling", "layer", "size"))
@settings_options(defaults.InvertSettings, only=("preset", "steps", "learning_rate", "to", "cache", "shard"),
                  prefix="optimise: ")
@settings_options(defaults.LearnedInversionSettings, only=("stack",), prefix="learned: ")
@settings_options(defaults.LearnedInversionSettings, only=("batch_size",), prefix="learned, deconvnet: ")
@settings_options(defaults.DeconvnetSettings, only=("channels", "top", "data_cache"), prefix="deconvnet: ")
@name_option
@dry_run_option(prefix="optimise, deconvnet: ")
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
    from deeprestore.recipes.invert import check_learning_rate, invert, invert_estimates
    from deeprestore.sharding import shard

    settings = defaults.InvertSettings(**options)
    check_learning_rate(settings)
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
