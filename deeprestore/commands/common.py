"""What every command shares: the global state, run directories, option parsing."""

import dataclasses

import click



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
