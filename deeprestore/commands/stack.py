"""`deeprestore stack`: train a stack of inversion modules, or resume a run of it."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import devices_option, run_recipe
from deeprestore.commands.resume import resume_run, training_options

STACK = defaults.STACK


@click.command("stack")
@click.option("--network", default=STACK.network, help="Network name or Keras model file (see `deeprestore nets`).")
@click.option("--weights", default=STACK.weights, help="auto, imagenet, offline, random, or a weights file.")
@click.option("--modules", default=STACK.modules, type=click.Path(exists=True, dir_okay=False),
              help="JSON/YAML module spec file (default: one module per operation from --from to --to).")
@click.option("--from", "source", default=STACK.source, help="Layer the default chain inverts from.")
@click.option("--to", "target", default=STACK.target, help="Layer the default chain inverts to, or image.")
@click.option("--type", "module_type", type=click.Choice(defaults.MODULE_TYPES), default=STACK.module_type,
              help="Type of every default module: conv-deconv, deconv-conv, deconv-deconv or upsample-conv.")
@click.option("--mode", type=click.Choice(defaults.STACK_MODES), default=STACK.mode,
              help="separate: each module on true activations; joint: weighted sum of module losses along the "
                   "chain; end-to-end: final loss only; fine-tune: joint from --init at a smaller learning rate.")
@click.option("--images", default=STACK.images,
              help="Training images: bundled (scikit-image photos, crops and flips), a folder or a list file.")
@click.option("--size", default=STACK.size, type=click.IntRange(min=8), help="Side of the square training crops.")
@click.option("--validation", default=STACK.validation, type=click.IntRange(min=1), help="Images held out.")
@click.option("--steps", default=STACK.steps, type=click.IntRange(min=1), help="Optimisation steps.")
@click.option("--batch-size", default=STACK.batch_size, type=click.IntRange(min=1), help="Images per step.")
@click.option("--learning-rate", default=STACK.learning_rate, type=click.FloatRange(min=0.0, min_open=True),
              help="Adam's learning rate.")
@click.option("--fine-tune-learning-rate", default=STACK.fine_tune_learning_rate,
              type=click.FloatRange(min=0.0, min_open=True), help="Learning rate of --mode fine-tune.")
@click.option("--init", default=STACK.init, type=click.Path(exists=True, file_okay=False),
              help="Stack run (or modules/ folder) whose module weights to start from.")
@click.option("--validate-every", default=STACK.validate_every, type=click.IntRange(min=0),
              help="Steps between validation losses and reconstruction figures (0: at the end).")
@click.option("--checkpoint-every", default=STACK.checkpoint_every, type=click.IntRange(min=1),
              help="Steps between checkpoints (what a killed run can lose).")
@click.option("--channel-losses", is_flag=True, default=STACK.channel_losses, help="Also log each channel's error.")
@click.option("--data-cache", default=STACK.data_cache, type=click.Path(file_okay=False),
              help="Folder for the resized dataset and cached activations, shared across runs "
                   "(default: the run's data/).")
@click.option("--figure-images", default=STACK.figure_images, type=click.IntRange(min=1),
              help="Validation images in each reconstruction figure.")
@devices_option(STACK.devices)
@training_options(STACK)
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
