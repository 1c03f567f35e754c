"""`deeprestore stack`: train a stack of inversion modules, or resume a run of it."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.options import settings_options
from deeprestore.commands.resume import name_option, resume_option, train_command


@click.command("stack")
@settings_options(defaults.StackSettings)
@resume_option
@name_option
@click.pass_context
def command(ctx, resume, name, **options):
    """Train inversion modules that reconstruct a layer's input from its output, stacked to go deep."""
    from deeprestore.recipes.stack import train_stack

    state = ctx.obj
    train_command(ctx, "stack", defaults.StackSettings, options, lambda settings, run, seed, resume: train_stack(
        settings, run, seed=seed, resume=resume, show_progress=not state.quiet, echo=state.echo),
        resume=resume, name=name)
