"""`deeprestore style`: neural style transfer from the command line."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import item_names, name_option, print_estimates, run_recipe
from deeprestore.commands.options import dry_run_option, settings_options


@click.command("style")
@settings_options(defaults.StyleSettings)
@name_option
@dry_run_option()
@click.pass_obj
def command(state, dry_run, name, **options):
    """Neural style transfer (Gatys et al.): content of one image, Gram matrices of others."""
    from deeprestore.images import list_images, load_image
    from deeprestore.recipes.style import style
    from deeprestore.sharding import shard

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
