"""Old spellings of options kept working but out of `--help`: one spelling per idea is shown.

`--optimiser` (not `--optimizer`), `--images` (not `--image`) and `--steps` are the spellings every
command shows; scripts written with the old ones keep running.
"""

import click


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

