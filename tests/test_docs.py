"""The manual against the commands: the command reference (docs/cli.rst and a page per command in
docs/cli/), built by Sphinx as the manual builds it, names every command and every option of the click
tree, each in its own command's section, with its default as `--help` shows it; every `deeprestore`
command line of the manual's and README's code blocks and worked examples parses (so a renamed option fails here
until the pages follow); the worked examples are the ones docs/make_figures.py runs.

Only the reference is built (with its directive, docs/commandref.py, alone, as plain text), which takes
seconds; `make docs` builds the whole manual.
"""

import importlib.util
import pathlib
import re
import shlex

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
    """Option names the reference lists: its option entries start at column 0, quoted as literals in plain
    text (`"--clamp / --no-clamp"`, `"-h, --help"`)."""
    names = set()
    for line in lines:
        if line.startswith(('"-', "-")):
            names.update(part.strip('"').split(" ")[0] for part in line.replace(" / ", ", ").split(", "))
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The plain-text build of docs/cli.rst and its pages, `{page: text}`."""
    source = tmp_path_factory.mktemp("cli-source")
    (source / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(DOCS)!r})\nextensions = ['commandref']\n"
                                    "default_role = 'literal'\n")
    (source / "index.rst").write_text((DOCS / "cli.rst").read_text())
    (source / "cli").mkdir()
    for page in (DOCS / "cli").glob("*.rst"):
        (source / "cli" / page.name).write_text(page.read_text())
    output = source / "_build"
    assert build_main(["-q", "-W", "-b", "text", str(source), str(output)]) == 0
    return {path.relative_to(output).with_suffix("").as_posix(): path.read_text() for path in output.rglob("*.txt")}


@pytest.fixture(scope="module")
def reference(built):
    return {path: lines for text in built.values() for path, lines in sections(text).items()}


def test_reference_has_a_section_for_every_command(reference):
    assert sorted(reference) == sorted(path for path, _ in walk(cli))


def test_each_command_has_a_page_of_its_own(built):
    assert {page for page in built if page.startswith("cli/")} == {f"cli/{name}" for name in cli.commands}


def test_each_option_shows_its_type_and_default_as_help_does(reference):
    dream = "\n".join(reference["deeprestore dream"])
    assert "--size INTEGER RANGE" in dream and "[default: 384; x>=0]" in dream
    assert '[default: ""]' in "\n".join(reference["deeprestore style"])


@pytest.mark.parametrize("path,command", list(walk(cli)), ids=lambda value: value if isinstance(value, str) else "")
def test_every_option_is_listed_under_its_command(reference, path, command):
    options = {name for parameter in command.params if isinstance(parameter, click.Option) and not parameter.hidden
               for name in (*parameter.opts, *parameter.secondary_opts)
               if name not in getattr(parameter, "aliases", ())}  # old spellings stay out of --help and the pages
    missing = options - documented_options(reference[path])
    assert not missing, f"{path}: options missing from docs/cli.rst's reference: {sorted(missing)}"


@pytest.mark.parametrize("path,command", list(walk(cli)), ids=lambda value: value if isinstance(value, str) else "")
def test_every_argument_is_in_its_usage_line(reference, path, command):
    usage = reference[path][0]
    for argument in (parameter for parameter in command.params if isinstance(parameter, click.Argument)):
        assert argument.make_metavar(click.Context(command)) in usage


def example_command_lines():
    """Every `deeprestore ...` line of the manual's and README's code blocks and example files, joined."""
    examples = []
    for path in sorted([*DOCS.rglob("*.rst"), *(DOCS / "examples").glob("*.txt"), DOCS.parent / "README.rst"]):
        if "_build" in path.parts:
            continue
        lines = iter(path.read_text().splitlines())
        for line in lines:
            if not re.match(r"^\s*deeprestore ", line) or (path.suffix == ".rst" and not line[0].isspace()):
                continue
            while line.endswith("\\"):
                line = line[:-1] + next(lines)
            label = f"{path.relative_to(DOCS.parent)}: {line.strip()[:60]}"
            examples.append(pytest.param(line.split(" #")[0].strip(), id=label))
    return examples


@pytest.mark.parametrize("example", example_command_lines())
def test_every_example_command_uses_real_commands_and_options(example):
    """Parsing stops at `--help` (eager) after every name was checked: unknown commands or options fail."""
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, [*shlex.split(example)[1:], "--help"])
    assert result.exit_code == 0, f"`{example}` does not parse: {result.output.strip().splitlines()[-1:]}"


def test_make_figures_examples_are_the_ones_the_pages_show():
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    for name, arguments in make_figures.EXAMPLES.items():
        assert (DOCS / "examples" / f"{name}.txt").read_text() == f"deeprestore {arguments}\n"
        assert f"../examples/{name}.txt" in (DOCS / "experiments" / f"{name}.rst").read_text()
        assert (DOCS / "figures" / f"{name}.png").exists()
