"""What every command shares: the global state, run directories, option parsing."""

import dataclasses

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


def start_run(state, command, settings):
    """Creates the run directory of a command, with every resolved option in its config."""
    from deeprestore import backend
    from deeprestore.rundir import RunDir

    backend.check_supported()
    config = {
        "settings": dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings),
        "seed": state.seed,
        "backend": backend.name(),
        "device": backend.device(),
        "versions": backend.versions(),
    }
    return RunDir.create(state.runs, command, config)


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


def run_recipe(state, command, settings, recipe):
    """Creates the run directory, runs `recipe(run)` inside it and prints the directory last.

    The run is marked complete only when the recipe returns; a user error marks it failed, an
    interruption interrupted (see `RunDir`).
    """
    run = start_run(state, command, settings)
    with run:
        recipe(run)
    click.echo(str(run.path))
    return run


def print_estimates(command, network, rows, steps):
    """Prints `--dry-run` estimates: `rows` of `(label, Estimate)`, for `steps` steps each."""
    from deeprestore.estimate import format_estimates

    click.echo(f"Dry run: {command} on {network}, no run directory created.")
    click.echo(format_estimates(rows, steps=steps))
