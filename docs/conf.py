"""Sphinx configuration of the deeprestore manual (`make docs`)."""

import os
import pathlib
import re
import sys

# The manual documents this checkout's package, not an installed copy elsewhere.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # commandref, the command reference's directive
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import deeprestore

project = "deeprestore"
author = "the deeprestore authors"
copyright = author
release = deeprestore.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "commandref"]
exclude_patterns = ["_build", "examples"]
templates_path = []
# The commands' help texts (docs/commandref.py renders them as reStructuredText) quote code in single
# backticks and spell options with two hyphens: keep both as typed, not italics and en dashes.
default_role = "literal"
smartquotes_action = "qe"

# Google-style docstrings only (the house style); numpy sections are not parsed.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autodoc_typehints = "description"

html_theme = "alabaster"  # ships with Sphinx: no network at build time
html_static_path = []
html_theme_options = {"page_width": "1240px", "sidebar_width": "230px", "body_max_width": "none"}
html_title = f"deeprestore {release}"

# Only the manual's own links are checked: external sites may be unreachable from where it is built.
linkcheck_ignore = [r"https?://.*"]

# The docstrings are written for reading in source and in `help()`: inline code in single backticks
# and code blocks fenced with three, as in Markdown. In reStructuredText a single backtick is
# interpreted text, so each docstring is rewritten to literals and code blocks before napoleon reads it.
# A code span may wrap onto the next line, but not across a blank one.
INLINE_CODE = re.compile(r"(?<![`:\w])`((?:(?!\n\s*\n)[^`])+)`(?!`)")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
# "Attributes (beyond `Base`):" is a note napoleon would not take for a section header.
ANNOTATED_HEADER = re.compile(r"^(\s*)(Args|Attributes|Returns|Raises|Yields) \((.+)\):\s*$")


def inline_literals(text):
    """Single-backtick spans as ``literals``; an escaped space keeps a following letter (`Spec`s) legal."""
    def literal(match):
        following = match.string[match.end():match.end() + 1]
        return f"``{match.group(1)}``" + ("\\ " if following.isalnum() else "")

    return INLINE_CODE.sub(literal, text)


def annotated_headers(lines):
    """Splits "Header (note):" into the note as a sentence and the bare header napoleon recognises."""
    result = []
    for line in lines:
        header = ANNOTATED_HEADER.match(line)
        if header:
            indent, name, note = header.groups()
            result += [f"{indent}{name} {note}.", "", f"{indent}{name}:"]
        else:
            result.append(line)
    return result


def markdown_to_rst(app, what, name, obj, options, lines):
    """Rewrites a docstring's Markdown code spans and fences to reStructuredText, in place."""
    converted, prose, fence_indent = [], [], None

    def flush_prose():
        if prose:
            converted.extend(inline_literals("\n".join(prose)).split("\n"))
            prose.clear()

    for line in annotated_headers(lines):
        fence = FENCE.match(line)
        if fence and fence_indent is None:
            flush_prose()
            fence_indent = fence.group(1)
            converted += [f"{fence_indent}.. code-block:: {fence.group(2) or 'text'}", ""]
        elif fence:
            fence_indent = None
            converted.append("")
        elif fence_indent is not None:
            converted.append(f"{fence_indent}   {line[len(fence_indent):]}" if line.strip() else "")
        else:
            prose.append(line)
    flush_prose()
    lines[:] = converted


def setup(app):
    # Before napoleon (priority 500), which then sees plain reStructuredText sections.
    app.connect("autodoc-process-docstring", markdown_to_rst, priority=400)
