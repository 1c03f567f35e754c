"""`deeprestore stack`: train a stack of inversion modules, or resume a run of it."""

import shlex
import sys

import click
from click.core import ParameterSource

from deeprestore import settings as defaults
from deeprestore.commands.common import devices_option, run_recipe
from deeprestore.errors import DeepRestoreError

STACK = defaults.STACK
# Options a resumed run may change: how long it trains and on how many devices (checkpoints fit any).
RESUMABLE = ("steps", "devices")


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
@click.option("--resume", default=None, type=click.Path(exists=True, file_okay=False),
              help="Continue this stack run from its last checkpoint, with its own settings (--steps may grow, "
                   "--devices may change).")
@click.pass_context
def command(ctx, resume, **options):
    """Train inversion modules that reconstruct a layer's input from its output, stacked to go deep."""
    from deeprestore.recipes.stack import train_stack

    state = ctx.obj
    if resume:
        run, settings, seed = reopen(ctx, resume, options)
        with run:
            train_stack(settings, run, seed=seed, resume=True, show_progress=not state.quiet, echo=state.echo)
        click.echo(str(run.path))
        return
    settings = defaults.StackSettings(**options)
    run_recipe(state, "stack", settings, lambda run: train_stack(
        settings, run, seed=state.seed, show_progress=not state.quiet, echo=state.echo))


def reopen(ctx, path, options):
    """The run to resume, its settings (with a new --steps if given) and its seed; marks it running."""
    from deeprestore import backend
    from deeprestore.rundir import RunDir, atomic_write

    backend.check_supported()
    run = RunDir.open(path)
    if run.config.get("command") != "stack":
        raise DeepRestoreError(f"'{path}' is a '{run.config.get('command')}' run; expected a stack run to resume.")
    changed = [name for name in options if name not in RESUMABLE
               and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if changed:
        raise DeepRestoreError(f"--resume continues a run with its own settings; drop --{changed[0].replace('_', '-')} "
                               "(only --steps and --devices may change).")
    stored = run.config["settings"]
    for name in RESUMABLE:
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            stored[name] = options[name]
    settings = defaults.StackSettings(**stored)
    run.update_config(settings=stored)
    argv = (run.path / "argv.txt").read_text() + shlex.join(sys.argv) + "\n"
    atomic_write(run.path / "argv.txt", argv)
    run.mark("running")
    return run, settings, run.config["seed"]
