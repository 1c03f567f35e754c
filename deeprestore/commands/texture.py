"""`deeprestore texture`: texture synthesis from Gram matrices."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import print_estimates, run_recipe
from deeprestore.commands.options import dry_run_option, settings_options


@click.command("texture")
@settings_options(defaults.TextureSettings)
@dry_run_option()
@click.pass_obj
def command(state, dry_run, **options):
    """Texture synthesis (Gatys et al.): match Gram matrices of a source, at any output size."""
    from deeprestore.images import load_image
    from deeprestore.recipes.texture import texture

    settings = defaults.TextureSettings(**options)
    for source in settings.sources:
        load_image(source)
    if dry_run:
        from deeprestore.recipes.texture import texture_estimates

        print_estimates("texture", settings.network, texture_estimates(settings, seed=state.seed), settings.steps)
        return
    run_recipe(state, "texture", settings, lambda run: texture(
        settings, run, seed=state.seed, show_progress=not state.quiet, echo=state.echo))
