"""What every command shares: the global state, run directories, option parsing."""

import contextlib
import dataclasses
import math
import os
import signal

import click


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


class ImageSize(click.ParamType):
    """An image size, `224` (square) or `224x300` (height x width), as `(height, width)`."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            size = parse_size(value)
        except click.BadParameter as error:
            self.fail(error.message, param, ctx)
        refusal = image_too_large(*size, f"{param.opts[0] if param else '--size'} {value}")
        if refusal:
            self.fail(refusal, param, ctx)
        return size


class FiniteFloatRange(click.FloatRange):
    """A float option (with the bounds of its `FloatRange`, if any) that refuses NaN and infinity.

    `nan` passes every range check (all its comparisons are false) and would run a whole command to a
    meaningless result, so it is refused while the options are parsed, before any work.
    """

    def __init__(self, min=None, max=None, min_open=False, max_open=False):
        super().__init__(min=min, max=max, min_open=min_open, max_open=max_open)
        if min is None and max is None:
            self.name = "float"  # shown as FLOAT, like a plain float option

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"got {value}; expected a finite number.", param, ctx)
        return value

    def _describe_range(self):
        return "" if self.min is None and self.max is None else super()._describe_range()


def refuse_non_finite(command):
    """Gives every float option of `command` (and of its subcommands) the `FiniteFloatRange` of its bounds."""
    for param in command.params:
        if isinstance(param.type, click.FloatRange) and not isinstance(param.type, FiniteFloatRange):
            bounds = param.type
            param.type = FiniteFloatRange(bounds.min, bounds.max, bounds.min_open, bounds.max_open)
        elif param.type is click.FLOAT:
            param.type = FiniteFloatRange()
    for subcommand in getattr(command, "commands", {}).values():
        refuse_non_finite(subcommand)


@dataclasses.dataclass
class State:
    """Global options, shared with every subcommand."""

    runs: str
    seed: int
    quiet: bool
    backend: str | None = None

    def load_backend(self):
        """Imports Keras with the chosen backend, for commands that load it only when needed (see
        `deeprestore.cli.cli`)."""
        from deeprestore.cli import use_backend

        use_backend(self.backend)

    def echo(self, message):
        if not self.quiet:
            click.echo(message, err=True)


def start_run(state, command, settings, name=None, items=None, uses_backend=True, join=True):
    """Creates the run directory of a command, with every resolved option in its config.

    A command that computes nothing with Keras passes `uses_backend=False`: its config then records
    no backend and numpy's version, and Keras is not imported.

    With `name`, the run is `<runs>/<command>/<name>/`, shared by every task that gives the same name:
    the first creates it, the others join it (see `RunDir.join`); its config leaves out the shard.
    `items` are the output names of the whole list of inputs, recorded so gaps can be found later.
    With `join=False` a named run is one process's own (a training command's `--name`): created, never
    joined.
    """
    from deeprestore.rundir import RunDir

    settings = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    if uses_backend:
        from deeprestore import backend

        backend.check_supported()
        machine = {"backend": backend.name(), "device": backend.device(), "versions": backend.versions()}
    else:
        import numpy

        machine = {"backend": None, "device": "cpu", "versions": {"numpy": numpy.__version__}}
    config = {
        "settings": settings,
        "seed": state.seed,
        **machine,
        **({} if items is None else {"items": list(items)}),
    }
    if name is None or not join:
        return RunDir.create(state.runs, command, config, name=name)
    shard = settings.pop("shard", None)
    return RunDir.join(state.runs, command, name, config, shard=shard)


# Bytes of one pixel of a float32 RGB image, the least any command holds of an image it works on.
_PIXEL_BYTES = 3 * 4


def available_memory():
    """Bytes of memory this process may still take: the kernel's MemAvailable, capped by a cgroup limit,
    or free pages where /proc is missing; None when unknown."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            available = next(int(line.split()[1]) * 1024 for line in file if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as file:
            limit = file.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as file:
            used = int(file.read().strip())
        if limit.isdigit():
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def image_too_large(height, width, given):
    """A one-line refusal when one float32 RGB image of `height` x `width` exceeds the memory available
    (no command can then run), else None; `given` names the option as typed, e.g. `--size 100000`."""
    needed = height * width * _PIXEL_BYTES
    available = available_memory()
    if available is None or needed <= available:
        return None
    return (f"got {given}: one {height}x{width} image takes {_gibibytes(needed)} as float32 RGB, more than the "
            f"{_gibibytes(available)} of memory available; expected a smaller size.")


def _gibibytes(count):
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def check_pixel_side(ctx, param, value):
    """Click callback of an option giving an image's side in pixels: refuses a side whose square image
    cannot be held (see `image_too_large`) before any work."""
    if isinstance(value, int) and value > 0:
        refusal = image_too_large(value, value, f"{param.opts[0]} {value}")
        if refusal:
            raise click.BadParameter(refusal, ctx=ctx, param=param)
    return value


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


def run_recipe(state, command, settings, recipe, name=None, items=None, uses_backend=True, join=True,
               continue_hint=None):
    """Creates (or, with `name`, joins) the run directory, runs `recipe(run)` inside it and prints the
    directory last.

    The run (a named run's task) is marked complete only when the recipe returns; a user error marks it
    failed, an interruption interrupted (see `RunDir`), and the log then says which run stopped and how
    to continue it (`continue_hint(run)`, a sentence; by default a resubmission of a named run).
    """
    run = start_run(state, command, settings, name=name, items=items, uses_backend=uses_backend, join=join)
    with interrupted_says(run, continue_hint), run, sigterm_interrupts():
        recipe(run)
    click.echo(str(run.path))
    return run


@contextlib.contextmanager
def interrupted_says(run, continue_hint=None):
    """Says on stderr, whatever `--quiet`, which run an interruption stopped and how to continue it: a
    cluster job's log must tell what to resubmit, not only "Interrupted."."""
    try:
        yield
    except KeyboardInterrupt as error:
        detail = str(error).strip()
        if detail and not detail.endswith("."):  # a deferred signal's name: "SIGTERM"
            detail = f"Stopped by {detail}."
        if continue_hint is not None:
            hint = continue_hint(run)
        elif run.name is not None:
            hint = (f"Resubmit the same command (--name {run.name}) to continue; it skips the images already "
                    "complete.")
        else:
            hint = "An unnamed run is not continued: run the command again (with --name, a rerun continues a run)."
        click.echo(f"Interrupted: {detail + ' ' if detail else ''}Run {run.path} is marked interrupted. {hint}",
                   err=True)
        raise


def sigterm_interrupts():
    """Makes SIGTERM (a cluster pre-empting the job) interrupt like Ctrl-C, between two steps (see
    `interrupts`): the run is marked `interrupted` and the command exits with 130, and a resubmission
    with `--name` redoes only the images not yet complete. Training defers SIGINT too, and checkpoints
    before it stops."""
    from deeprestore import interrupts

    return interrupts.deferred((signal.SIGTERM,))


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
    """Prints `--dry-run` estimates: `rows` of `(label, Estimate)`, for `steps` steps each (or per row)."""
    from deeprestore.estimate import format_estimates

    click.echo(f"Dry run: {command} on {network}, no run directory created.")
    click.echo(format_estimates(rows, steps=steps))
