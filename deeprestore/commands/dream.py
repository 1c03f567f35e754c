"""`deeprestore dream`: DeepDream from the command line."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import item_names, name_option, run_recipe
from deeprestore.commands.options import dry_run_option, settings_options


@click.command("dream")
@settings_options(defaults.DreamSettings)
@name_option
@dry_run_option()
@click.pass_obj
def command(state, dry_run, name, **options):
    """DeepDream: normalised gradient ascent on layers, channels, neurons, classes or a guide, over octaves."""
    from deeprestore.errors import DeepRestoreError
    from deeprestore.images import list_images, load_image
    from deeprestore.recipes import dream as recipe
    from deeprestore.sharding import shard

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
