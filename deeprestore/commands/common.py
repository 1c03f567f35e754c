"""What every command shares: the global state, run directories, option parsing."""

import contextlib
import dataclasses
import signal
import threading

import click

DEVICES_HELP = ("Devices to train on, data-parallel: a number (the first GPUs, or CPU devices where there are no "
                "GPUs) or all. --batch-size is the global batch, split evenly (a multiple of the devices); the "
                "learning rate is not rescaled.")


class DeviceCount(click.ParamType):
    """`--devices`: a positive number of devices, or `all`."""

    name = "N|all"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and value >= 1:
            return value
        text = str(value).strip().lower()
        if text == "all":
            return text
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"got '{value}'; expected a number of devices (1, 2, ...) or all.", param, ctx)


def precision_option(default):
    """The `--precision` option of the image-optimisation commands."""
    from deeprestore.settings import PRECISIONS

    return click.option("--precision", type=click.Choice(PRECISIONS), default=default, show_default=True,
                        help="The network's arithmetic: bfloat16 is mixed precision for GPUs (the image and "
                             "the step stay float32).")


def devices_option(default):
    """The `--devices` option of the training commands."""
    return click.option("--devices", type=DeviceCount(), default=default, help=DEVICES_HELP)


@dataclasses.dataclass
class State:
    """Global options, shared with every subcommand."""

    runs: str
    seed: int
    quiet: bool

    def echo(self, message):
        if not self.quiet:
            click.echo(message, err=True)


def start_run(state, command, settings, name=None, items=None):
    """Creates the run directory of a command, with every resolved option in its config.

    With `name`, the run is `<runs>/<command>/<name>/`, shared by every task that gives the same name:
    the first creates it, the others join it (see `RunDir.join`); its config leaves out the shard.
    `items` are the output names of the whole list of inputs, recorded so gaps can be found later.
    """
    from deeprestore import backend
    from deeprestore.rundir import RunDir

    backend.check_supported()
    settings = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    config = {
        "settings": settings,
        "seed": state.seed,
        "backend": backend.name(),
        "device": backend.device(),
        "versions": backend.versions(),
        **({} if items is None else {"items": list(items)}),
    }
    if name is None:
        return RunDir.create(state.runs, command, config)
    shard = settings.pop("shard", None)
    return RunDir.join(state.runs, command, name, config, shard=shard)


def parse_size(text):
    """`224` or `224x300` to `(height, width)`."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise click.BadParameter(f"got '{text}'; expected a size like 224 or 224x300.")
    return tuple(parts)


def run_recipe(state, command, settings, recipe, name=None, items=None):
    """Creates (or, with `name`, joins) the run directory, runs `recipe(run)` inside it and prints the
    directory last.

    The run (a named run's task) is marked complete only when the recipe returns; a user error marks it
    failed, an interruption interrupted (see `RunDir`).
    """
    run = start_run(state, command, settings, name=name, items=items)
    with run, sigterm_interrupts():
        recipe(run)
    click.echo(str(run.path))
    return run


@contextlib.contextmanager
def sigterm_interrupts():
    """Makes SIGTERM (a cluster pre-empting the job) interrupt like Ctrl-C: the run is marked
    `interrupted` and the command exits with 130, and a resubmission with `--name` redoes only the
    images not yet complete. Training installs its own handler inside, which checkpoints first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def name_option(function):
    """`--name NAME`: the run directory `<runs>/<command>/NAME/`, shared by the tasks of an array job."""
    return click.option(
        "--name", default=None, metavar="NAME",
        help="Run directory <runs>/<command>/NAME, shared by every task given the same name (e.g. "
        "$SLURM_ARRAY_JOB_ID): the first creates it, later ones and resubmissions join it if their settings "
        "match and skip images already complete.")(function)


def item_names(sources):
    """The output name of each input, by its position in the whole list (see `output_name`)."""
    from deeprestore.recipes.common import output_name

    return [output_name(source, position) for position, source in enumerate(sources)]


def print_estimates(command, network, rows, steps):
    """Prints `--dry-run` estimates: `rows` of `(label, Estimate)`, for `steps` steps each."""
    from deeprestore.estimate import format_estimates

    click.echo(f"Dry run: {command} on {network}, no run directory created.")
    click.echo(format_estimates(rows, steps=steps))
