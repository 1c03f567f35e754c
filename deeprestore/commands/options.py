"""Click options generated from the settings dataclasses, so that each option is written once.

A field of `deeprestore.settings` gives its option everything: the spelling (`--field-name`, or the
field's `flag`), the type (from the annotation, a range, choices, a path or a special `kind`), the
default, the help and whether it repeats. The commands decorate themselves with `settings_options`
and build their settings from the parsed values, so `--help`, `config.json` and the manual's CLI
reference all come from the same field.
"""

import dataclasses
import types

import click

from deeprestore.commands.aliases import AliasedOption
from deeprestore.commands.common import DeviceCount, ImageSize, check_pixel_side

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

    def get_help_extra(self, ctx):
        """Click's `[default: ...]`, which shows an empty text default as `""` rather than leaving it out."""
        extra = super().get_help_extra(ctx)
        if self.field.default == "" and self.show_default is not False and ctx.show_default is not False:
            extra["default"] = '""'
        return extra


def settings_options(settings_class, only=None, prefix=""):
    """A decorator adding an option for each field of `settings_class`, in the fields' order.

    Args:
        settings_class: A settings dataclass (see `deeprestore.settings.option`).
        only: Names of the fields to add (default: every field).
        prefix: Put before each help text, e.g. `deconvnet: ` where one command runs several methods.

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
