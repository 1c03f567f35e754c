"""The `deeprestore` command: a click group with one subcommand per experiment.

Each command parses and validates its options, creates a run directory, calls a recipe and prints
the run directory as its last line, so scripts can chain on it. User errors are one line on stderr
with exit code 1, an interrupted run exits 130; neither shows a traceback. Keras is imported only
after the global options are read, so `--backend` can choose the backend.
"""

import contextlib
import importlib
import os
import pkgutil
import sys

import click

from deeprestore import commands
from deeprestore.commands.common import State
from deeprestore.errors import DeepRestoreError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ warnings after start-up


class Group(click.Group):
    """Turns user errors and interruptions into one-line messages and exit codes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeepRestoreError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


def use_backend(name):
    """Selects the Keras backend and imports Keras, hiding the backend's native start-up log lines.

    TensorFlow's C++ libraries write several lines to file descriptor 2 when they load, whatever the
    log-level settings; they say nothing a user can act on, so they go to /dev/null unless
    DEEPRESTORE_DEBUG is set. Python errors raised by the import are not affected.
    """
    if "keras" in sys.modules:
        import keras

        if name is not None and keras.backend.backend() != name:
            raise DeepRestoreError(
                f"Keras is already loaded with backend '{keras.backend.backend()}'; cannot switch to '{name}'."
            )
        return
    if name is not None:
        os.environ["KERAS_BACKEND"] = name
    try:
        with contextlib.nullcontext() if os.environ.get("DEEPRESTORE_DEBUG") else native_stderr_silenced():
            from deeprestore import backend

            backend.device()
    except ImportError as error:
        raise DeepRestoreError(
            f"Keras backend '{os.environ.get('KERAS_BACKEND', 'tensorflow')}' could not be loaded ({error}); "
            "expected it installed (`pip install -e .[jax]` for JAX)."
        ) from None


@contextlib.contextmanager
def native_stderr_silenced():
    """Points file descriptor 2 at /dev/null for the duration (Python's sys.stderr is kept)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--runs", envvar="DEEPRESTORE_RUNS", default="runs", type=click.Path(file_okay=False),
              help="Folder that run directories go in (env DEEPRESTORE_RUNS).")
@click.option("--seed", default=0, type=int, help="Seed for weights, noise and jitter.")
@click.option("--quiet", is_flag=True, help="No progress bars or notices; only the run directory is printed.")
@click.option("--backend", type=click.Choice(["tensorflow", "jax"]), default=None,
              help="Keras backend (default: KERAS_BACKEND, else tensorflow).")
@click.version_option(package_name="deeprestore")
@click.pass_context
def cli(ctx, runs, seed, quiet, backend):
    """Look inside convolutional networks and restore images with them."""
    use_backend(backend)
    ctx.obj = State(runs=runs, seed=seed, quiet=quiet)


# Each module of `deeprestore.commands` but the shared ones defines one subcommand as `command`.
SHARED_MODULES = ("aliases", "common", "resume")
for module in pkgutil.iter_modules(commands.__path__):
    if module.name not in SHARED_MODULES:
        cli.add_command(importlib.import_module(f"deeprestore.commands.{module.name}").command)


def main():
    """Entry point of the `deeprestore` console script."""
    cli(prog_name="deeprestore")
