"""The `deeprestore` command: a click group with one subcommand per experiment of the registry
(`deeprestore.recipes.registry`, run by `deeprestore.driver`) and the commands of `deeprestore.commands`
(listing networks and runs, summaries, applying and evaluating trained models).

Every run prints its run directory as its last line, so scripts can chain on it. User errors are one
line on stderr with exit code 1, an interrupted run exits 130; neither shows a traceback. Keras is
imported only when a subcommand runs, after every option is parsed (an experiment's, after its inputs
are checked too): `--backend` can choose the backend, and `--help` (of the group or any subcommand)
prints at once without loading a framework.
"""

import errno
import functools
import importlib
import os
import pkgutil
import sys

import click

from deeprestore import commands, driver
from deeprestore.driver import ARGUMENTS_KEY, State
from deeprestore.errors import DeepRestoreError
from deeprestore.options import refuse_non_finite
from deeprestore.recipes import registry

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ warnings after start-up


class Group(click.Group):
    """Turns user errors, exhausted memory or disk, and interruptions into one-line messages and exit codes,
    and makes every float option refuse NaN and infinity before any work."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeepRestoreError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except Exception as error:  # backends raise their own types for exhausted memory
            message = environment_error(error)
            if message is None:
                raise
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)

    def parse_args(self, ctx, args):
        if ctx.parent is None:  # the whole command line, for the command that continues an interrupted run
            ctx.meta[ARGUMENTS_KEY] = list(args)
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx, args):
        name, command, arguments = super().resolve_command(ctx, args)
        if command is not None:
            refuse_non_finite(command)
        return name, command, arguments


# What a full disk, a quota, a file-size limit, a read-only or foreign folder say (errno values).
_STORAGE_ERRORS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM")
                            if hasattr(errno, name))
_STORAGE_WORDS = ("No space left", "Disk quota", "File too large", "Read-only file system", "Permission denied")


def environment_error(error):
    """A one-line message for running out of memory or storage, or None for any other error."""
    if isinstance(error, MemoryError) or ("keras" in sys.modules and _backend_out_of_memory(error)):
        detail = " ".join(str(error).split())[:200]
        return (f"Out of memory ({detail or type(error).__name__}); expected a smaller --size, --batch-size or "
                "network, or a machine with more memory.")
    if (isinstance(error, OSError) and error.errno in _STORAGE_ERRORS) or (
            isinstance(error, (OSError, RuntimeError)) and any(words in str(error) for words in _STORAGE_WORDS)):
        filename = getattr(error, "filename", None)
        where = f" writing '{filename}'" if filename else ""
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())[:200]
        return f"Storage failed{where}: {reason}; expected a writable folder with free space (see --runs, --cache)."
    return None


def _backend_out_of_memory(error):
    from deeprestore import backend

    return backend.is_out_of_memory(error)


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
    ctx.obj = State(runs=runs, seed=seed, quiet=quiet, backend=backend)


def loading_backend(callback):
    """Wraps a subcommand's callback to load the backend chosen by the group's `--backend` first.

    Click runs the group's callback before it parses the subcommand's options, so loading Keras there
    would make `deeprestore dream --help` wait seconds for a framework it never uses.
    """

    @functools.wraps(callback)
    def invoke(*args, **kwargs):
        click.get_current_context().find_object(State).load_backend()
        return callback(*args, **kwargs)

    return invoke


def load_backend_before(command):
    """Makes `command`, or each command of a group (`denoise train`), load the backend before it runs.

    A command marked `lazy_backend` loads it itself (`State.load_backend`) only when it needs it: scoring
    descriptor files should not wait for TensorFlow to start.
    """
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            load_backend_before(subcommand)
    elif not getattr(command, "lazy_backend", False):
        command.callback = loading_backend(command.callback)
    return command


# Each module of `deeprestore.commands` defines one subcommand (or group) as `command`.
for module in pkgutil.iter_modules(commands.__path__):
    cli.add_command(load_backend_before(importlib.import_module(f"deeprestore.commands.{module.name}").command))
# Each experiment's command loads the backend itself, once its inputs are checked (see `deeprestore.driver`);
# one named `denoise train` joins the `denoise` group.
for words, experiment_command in driver.commands(registry.EXPERIMENTS, registry.METHODS).items():
    experiment_command.lazy_backend = True
    (cli.commands[words.split()[0]] if " " in words else cli).add_command(experiment_command)


def main():
    """Entry point of the `deeprestore` console script."""
    cli(prog_name="deeprestore")
