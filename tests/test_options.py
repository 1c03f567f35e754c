"""Options written once: each option of an experiment comes from a field of its settings dataclass (type,
range, default, help), except the few that steer the invocation itself; parsing an empty command line gives
the settings' own defaults; every bound and choice written in a field is enforced by the option; and the
settings' docstrings, which the API reference shows, list every field's help."""

import dataclasses
import inspect
import math

import click
import pytest

from deeprestore import settings
from deeprestore.cli import cli
from deeprestore.options import SettingOption
from deeprestore.resuming import _spelling

# Options that steer an invocation rather than describe the experiment (not stored as settings).
INVOCATION = {"name", "dry_run", "resume", "method", "epochs", "help"}
EXPERIMENTS = {
    ("dream",): settings.DreamSettings,
    ("style",): settings.StyleSettings,
    ("texture",): settings.TextureSettings,
    ("invert",): settings.InvertSettings,
    ("stack",): settings.StackSettings,
    ("denoise", "train"): settings.DenoiseSettings,
    ("denoise", "apply"): settings.DenoiseApplySettings,
    ("describe", "train"): settings.DescribeSettings,
    ("describe", "evaluate"): settings.DescribeEvaluateSettings,
}
SETTINGS_CLASSES = [value for value in vars(settings).values()
                    if inspect.isclass(value) and dataclasses.is_dataclass(value)]


def command_at(path):
    command = cli
    for name in path:
        command = command.commands[name]
    return command


@pytest.fixture
def required(tmp_path):
    """Arguments each command needs besides its defaults: `denoise apply` takes a model and images."""
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    return {("denoise", "apply"): ["--model", str(model), "--images", "camera"]}


def parse(path, arguments):
    """The parsed parameters of `deeprestore <path> <arguments>`, without running the command."""
    command = command_at(path)
    with command.make_context(" ".join(path), list(arguments), resilient_parsing=False) as context:
        return context.params


@pytest.mark.parametrize("path", list(EXPERIMENTS), ids=" ".join)
def test_every_option_comes_from_a_settings_field_or_steers_the_invocation(path):
    for param in command_at(path).params:
        assert isinstance(param, SettingOption) or param.name in INVOCATION, param.name
        if isinstance(param, SettingOption):
            assert param.name == param.field.name
            assert param.help.endswith(param.field.metadata["help"])


@pytest.mark.parametrize("path", list(EXPERIMENTS), ids=" ".join)
def test_parsing_an_empty_command_line_gives_the_settings_defaults(path, required):
    settings_class = EXPERIMENTS[path]
    parsed = parse(path, required.get(path, []))
    fields = {field.name for field in dataclasses.fields(settings_class)}
    given = required.get(path, [])
    parsed_settings = settings_class(**{name: value for name, value in parsed.items() if name in fields})
    expected = dataclasses.replace(settings_class(), **{flag.removeprefix("--"): value
                                                        for flag, value in zip(given[::2], given[1::2])})
    assert parsed_settings == expected
    for param in command_at(path).params:  # the other methods' options of `invert`
        if isinstance(param, SettingOption) and param.name not in fields:
            assert parsed[param.name] == param.field.default, param.name


def bounded_options():
    """`(command path, option)` for each option whose field has a numeric bound or choices."""
    for path in EXPERIMENTS:
        for param in command_at(path).params:
            if isinstance(param, SettingOption) and set(param.field.metadata) & {"at_least", "above", "at_most",
                                                                                  "below", "choices"}:
                yield pytest.param(path, param, id=f"{' '.join(path)} {param.opts[0]}")


@pytest.mark.parametrize(("path", "param"), list(bounded_options()))
def test_every_bound_and_choice_of_a_field_is_enforced(path, param, required):
    metadata = param.field.metadata
    step = 1 if _base(param.field) is int else 1e-9
    refused, accepted = [], []
    if "choices" in metadata:
        refused.append("no-such-choice")
        accepted.extend(str(choice) for choice in metadata["choices"])
    for key, outside, inside in (("at_least", -step, 0), ("above", 0, step), ("at_most", step, 0), ("below", 0, -step)):
        if key in metadata:
            refused.append(repr(metadata[key] + outside))
            accepted.append(repr(metadata[key] + inside))
    flag = param.opts[0]
    for value in refused:
        with pytest.raises(click.BadParameter):
            parse(path, [*required.get(path, []), flag, value])
    for value in accepted:
        parsed = parse(path, [*required.get(path, []), flag, value])[param.name]
        assert str(parsed[0] if param.multiple else parsed) == value or math.isclose(float(parsed), float(value))


def _base(field):
    return int if field.type in (int, int | None) else float


@pytest.mark.parametrize("settings_class", SETTINGS_CLASSES, ids=lambda value: value.__name__)
def test_every_field_has_help_listed_in_its_class_docstring(settings_class):
    for field in dataclasses.fields(settings_class):
        help_text = field.metadata.get("help", "")
        assert help_text.endswith((".", ")")), (field.name, help_text)
        assert f"    {field.name}: {help_text}" in settings_class.__doc__


def test_an_unknown_option_detail_is_refused_rather_than_ignored():
    with pytest.raises(TypeError, match="at_lest"):
        settings.option(1, "A count.", at_lest=0)


def test_a_resume_error_names_the_option_as_it_is_typed():
    command = command_at(("stack",))
    with command.make_context("stack", ["--from", "pool2"]) as context:
        assert _spelling(context, "source") == "--from"
        assert _spelling(context, "module_type") == "--type"
        assert _spelling(context, "steps") == "--steps"


@pytest.mark.parametrize(("path", "old", "new", "value"), [
    (("dream",), "--image", "--images", "brick"),
    (("denoise", "apply"), "--image", "--images", "brick"),
    (("denoise", "train"), "--optimizer", "--optimiser", "adam"),
    (("describe", "train"), "--optimizer", "--optimiser", "sgd"),
], ids=["dream", "denoise-apply", "denoise-train", "describe-train"])
def test_an_old_spelling_parses_like_the_new_one_and_stays_out_of_help(path, old, new, value, required):
    arguments = required.get(path, [])[:2]  # denoise apply's --model; its --images is the option under test
    assert parse(path, [*arguments, old, value]) == parse(path, [*arguments, new, value])
    help_text = command_at(path).get_help(click.Context(command_at(path)))
    assert new in help_text and old not in help_text.replace(new, "")
