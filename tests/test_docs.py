"""The manual's command reference: docs/cli.rst, built by Sphinx as the manual builds it, names every
command and every option of the click tree, each in its own command's section.

Only cli.rst is built (with sphinx-click alone, as plain text), which takes seconds; `make docs`
builds the whole manual.
"""

import pathlib
import re

import click
import pytest
from sphinx.cmd.build import build_main

from deeprestore.cli import cli

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
USAGE = re.compile(r"^\s+(deeprestore(?: [a-z-]+)*) \[OPTIONS\]")


def walk(command, path=("deeprestore",)):
    """Yields `(command path, command)` for the group and every command below it."""
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name, subcommand in sorted(command.commands.items()):
            yield from walk(subcommand, (*path, name))


def sections(text):
    """`{command path: text of its section}`, a section running from its usage line to the next one."""
    lines = text.splitlines()
    starts = [(index, match.group(1)) for index, line in enumerate(lines) if (match := USAGE.match(line))]
    ends = [index for index, _ in starts[1:]] + [len(lines)]
    return {path: lines[start:end] for (start, path), end in zip(starts, ends)}


def documented_options(lines):
    """Option names the reference lists: its option entries start at column 0 (`--clamp, --no-clamp`)."""
    names = set()
    for line in lines:
        if line.startswith("-"):
            names.update(part.split(" ")[0] for part in line.split(", "))
    return names


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The plain-text build of docs/cli.rst."""
    source = tmp_path_factory.mktemp("cli-source")
    (source / "conf.py").write_text('extensions = ["sphinx_click"]\n')
    (source / "index.rst").write_text((DOCS / "cli.rst").read_text())
    output = source / "_build"
    assert build_main(["-q", "-W", "-b", "text", str(source), str(output)]) == 0
    return sections((output / "index.txt").read_text())


def test_reference_has_a_section_for_every_command(reference):
    assert sorted(reference) == sorted(path for path, _ in walk(cli))


@pytest.mark.parametrize("path,command", list(walk(cli)), ids=lambda value: value if isinstance(value, str) else "")
def test_every_option_is_listed_under_its_command(reference, path, command):
    options = {name for parameter in command.params if isinstance(parameter, click.Option) and not parameter.hidden
               for name in (*parameter.opts, *parameter.secondary_opts)}
    missing = options - documented_options(reference[path])
    assert not missing, f"{path}: options missing from docs/cli.rst's reference: {sorted(missing)}"


@pytest.mark.parametrize("path,command", list(walk(cli)), ids=lambda value: value if isinstance(value, str) else "")
def test_every_argument_is_in_its_usage_line(reference, path, command):
    usage = reference[path][0]
    for argument in (parameter for parameter in command.params if isinstance(parameter, click.Argument)):
        assert argument.make_metavar(click.Context(command)) in usage
