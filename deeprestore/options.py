"""Click options generated from the settings dataclasses, so that each option is written once, with
the click types they use.

A field of `deeprestore.settings` gives its option everything: the spelling (`--field-name`, or the
field's `flag`), the type (from the annotation, a range, choices, a path or a special `kind`), the
default, the help and whether it repeats. The driver (`deeprestore.driver`) generates each
experiment's command from its settings class with `settings_options`, so `--help`, `config.json` and
the manual's CLI reference all come from the same field. Old spellings of options (`--optimizer`,
`--image`) keep working but stay out of `--help`; every float option refuses NaN and infinity, and
every image side or size one whose image the machine cannot hold, before any work.
"""

import dataclasses
import math
import os
import types

import click
from click.core import ParameterSource


class AliasedOption(click.Option):
    """A click option whose `aliases` parse like its other names but are left out of `--help`.

    Args:
        aliases: Old spellings, e.g. `("--optimizer",)`.
    """

    def __init__(self, param_decls, aliases=(), **attributes):
        self.aliases = tuple(aliases)
        super().__init__([*param_decls, *self.aliases], **attributes)

    def get_help_record(self, context):
        shown = [name for name in self.opts if name not in self.aliases]
        kept, self.opts = self.opts, shown
        try:
            return super().get_help_record(context)
        finally:
            self.opts = kept


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

_KINDS = {"devices": DeviceCount, "size": ImageSize}
# Fields giving an image's side in pixels, whose images must fit in memory (see `check_pixel_side`).
_PIXEL_SIDES = ("size", "source_size", "test_size", "patch_size")


class SettingOption(AliasedOption):
    """A click option made from a settings field, which it keeps as `field`.

    Args:
        field: The `dataclasses.Field` it was made from.
    """

    def __init__(self, param_decls, field, **attributes):
        self.field = field
        super().__init__(param_decls, aliases=field.metadata.get("aliases", ()), **attributes)


def settings_options(settings_class, only=None, prefix=""):
    """A decorator adding an option for each field of `settings_class`, in the fields' order.

    Args:
        settings_class: A settings dataclass (see `deeprestore.settings.option`).
        only: Names of the fields to add (default: every field).
        prefix: Put before each help text (e.g. `deconvnet:` and a space) where one command runs several methods.

    Returns:
        A decorator for a click command's callback, which receives each option under its field's name.
    """
    fields = [field for field in dataclasses.fields(settings_class) if only is None or field.name in only]
    if only is not None and len(fields) != len(only):
        missing = sorted(set(only) - {field.name for field in fields})
        raise TypeError(f"{settings_class.__name__} has no fields {missing}")

    def decorate(function):
        for field in reversed(fields):
            function = click.option(*declarations(field), cls=SettingOption, field=field,
                                    **attributes(field, prefix))(function)
        return function

    return decorate


def declarations(field):
    """The option's names and its parameter name: `--clamp/--no-clamp` for a flag that defaults to on."""
    flag = field.metadata.get("flag", "--" + field.name.replace("_", "-"))
    if field.type is bool and field.default:
        return f"{flag}/--no-{flag.removeprefix('--')}", field.name
    return flag, field.name


def attributes(field, prefix=""):
    """The keyword arguments of `click.Option` for `field`."""
    metadata = field.metadata
    attributes = {"help": prefix + metadata["help"], "default": field.default,
                  "required": metadata.get("required", False)}
    for key, name in (("metavar", "metavar"), ("shown_default", "show_default")):
        if key in metadata:
            attributes[name] = metadata[key]
    if field.type is bool:
        attributes["is_flag"] = True
        return attributes
    if metadata.get("kind") == "size":
        attributes["default"] = "x".join(str(side) for side in field.default)
    elif isinstance(field.default, tuple):
        attributes["multiple"] = True
    elif field.name in _PIXEL_SIDES:
        attributes["callback"] = check_pixel_side
    attributes["type"] = parameter_type(field)
    return attributes


def parameter_type(field):
    """The click type of `field`'s values: its kind, choices, path or numeric range, else its annotation's."""
    metadata = field.metadata
    if "kind" in metadata:
        return _KINDS[metadata["kind"]]()
    if "choices" in metadata:
        return click.Choice(metadata["choices"])
    if "path" in metadata:
        where = metadata["path"]
        return click.Path(exists=metadata.get("exists", False), file_okay=where != "folder", dir_okay=where != "file")
    value_type = metadata.get("item", str) if isinstance(field.default, tuple) else _value_type(field.type)
    bounds = dict(min=metadata.get("at_least", metadata.get("above")), min_open="above" in metadata,
                  max=metadata.get("at_most", metadata.get("below")), max_open="below" in metadata)
    unbounded = bounds["min"] is None and bounds["max"] is None
    if value_type is float:  # the group makes every float option refuse NaN and infinity (`refuse_non_finite`)
        return click.FLOAT if unbounded else click.FloatRange(**bounds)
    if value_type is int:
        return click.INT if unbounded else click.IntRange(**bounds)
    return click.STRING


def _value_type(annotation):
    """`int` for `int` and `int | None`; the annotation itself otherwise."""
    if isinstance(annotation, types.UnionType):
        kinds = [member for member in annotation.__args__ if member is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return annotation


def dry_run_option(prefix=""):
    """`--dry-run`: estimate the memory and time of a command, then exit without creating a run."""
    return click.option("--dry-run", is_flag=True, help=f"{prefix}Print the estimated peak memory and total time, "
                        "then exit without running or creating a run.")


def given_options(context, options):
    """The options typed on the command line (or set by environment), `{name: value}`."""
    return {name: value for name, value in options.items()
            if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
