"""A Sphinx directive rendering one command of `deeprestore` as its `--help` does: the usage line, the
help text, and each option with its metavar, type, range and default exactly as click prints them
(`--size SIZE ... [default: 224]`), then each subcommand of a group in a section of its own.

Usage in a page: `.. command-reference:: dream` (the words after `deeprestore`; none for the group's own
options, its commands having pages of their own).
"""

import click
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from deeprestore.cli import cli


def find(words):
    """The click command at `words` below the group, with its context (parents included)."""
    context = click.Context(cli, info_name="deeprestore", show_default=True)
    command = cli
    for word in words:
        command = command.commands[word]
        context = click.Context(command, info_name=word, parent=context, show_default=True)
    return command, context


class CommandReference(SphinxDirective):
    """`.. command-reference:: WORDS`: a command's usage, help, options and subcommands."""

    optional_arguments = 10

    def run(self):
        command, context = find(self.arguments)
        return self.render(command, context, top=True)

    def render(self, command, context, top=False):
        result = []
        usage = " ".join(context.command_path.split()) + " " + " ".join(command.collect_usage_pieces(context))
        result.append(nodes.literal_block(usage, usage))
        result += self.parsed(command.help or "")
        rows = [parameter.get_help_record(context) for parameter in command.get_params(context)
                if isinstance(parameter, click.Option)]
        items = nodes.definition_list()
        for names, text in (row for row in rows if row):
            definition = nodes.definition()
            definition += self.parsed(text)
            items += nodes.definition_list_item("", nodes.term("", "", nodes.literal(names, names)), definition)
        if len(items):
            result.append(items)
        if isinstance(command, click.Group) and command is not cli:  # the group's commands have pages of their own
            for name in command.list_commands(context):
                subcommand = command.commands[name]
                section = nodes.section(ids=[nodes.make_id(f"{context.command_path} {name}")])
                section += nodes.title(text=f"{context.command_path} {name}")
                section += self.render(subcommand, click.Context(subcommand, info_name=name, parent=context,
                                                                 show_default=True))
                result.append(section)
        return result

    def parsed(self, text):
        """The help text as reStructuredText (single backticks are literals, as the manual's default role)."""
        holder = nodes.container()
        self.state.nested_parse(StringList(click.unstyle(text).replace("\b\n", "").splitlines()), self.content_offset,
                                holder)
        return holder.children


def setup(app):
    app.add_directive("command-reference", CommandReference)
    return {"parallel_read_safe": True}
