"""`deeprestore stack`: train a stack of inversion modules, or resume a run of it."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import run_recipe
from deeprestore.commands.options import settings_options
from deeprestore.commands.resume import resume_option, resume_run


@click.command("stack")
@settings_options(defaults.StackSettings)
@resume_option
@click.pass_context
def command(ctx, resume, **options):
    """Train inversion modules that reconstruct a layer's input from its output, stacked to go deep."""
    from deeprestore.recipes.stack import train_stack

    state = ctx.obj
    if resume:
        resume_run(ctx, resume, "stack", defaults.StackSettings, options, lambda settings, run, seed: train_stack(
            settings, run, seed=seed, resume=True, show_progress=not state.quiet, echo=state.echo))
        return
    settings = defaults.StackSettings(**options)
    run_recipe(state, "stack", settings, lambda run: train_stack(
        settings, run, seed=state.seed, show_progress=not state.quiet, echo=state.echo))
