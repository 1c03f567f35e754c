"""Checks the built manual's internal links: every local `href` and `src` points at a file that exists,
and every `#anchor` at an id in its target page.

Sphinx's linkcheck builder leaves in-page anchors unchecked and external addresses are not ours to
check offline (conf.py ignores them), so this walks the HTML that `make docs` wrote instead.

Usage: python3 docs/check_links.py [docs/_build/html]
"""

import html.parser
import pathlib
import sys
import urllib.parse

EXTERNAL_SCHEMES = ("http", "https", "mailto", "javascript", "data")


class LinkParser(html.parser.HTMLParser):
    """Collects a page's ids and the targets of its `href` and `src` attributes."""

    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attributes):
        for name, value in attributes:
            if name in ("id", "name") and value:
                self.ids.add(value)
            elif name in ("href", "src") and value:
                self.links.append(value)


def parse(path):
    parser = LinkParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def broken_links(root):
    """Yields `(page, link, why)` for every internal link of the site under `root` that leads nowhere."""
    pages = {path.resolve(): parse(path) for path in root.rglob("*.html")}
    for page, parsed in pages.items():
        for link in parsed.links:
            address = urllib.parse.urlsplit(link)
            if address.scheme in EXTERNAL_SCHEMES or address.netloc:
                continue
            target = (page.parent / urllib.parse.unquote(address.path)).resolve() if address.path else page
            if not target.exists():
                yield page.relative_to(root.resolve()), link, "no such file"
            elif address.fragment and target.suffix == ".html" and address.fragment not in pages[target].ids:
                yield page.relative_to(root.resolve()), link, "no such anchor"


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    if not (root / "index.html").exists():
        raise SystemExit(f"Error: no built manual at {root} (expected {root / 'index.html'}); run `make docs` first.")
    broken = list(broken_links(root))
    for page, link, why in broken:
        print(f"{page}: {link} ({why})")
    pages = [parse(path) for path in root.rglob("*.html")]
    links = sum(len(page.links) for page in pages)
    print(f"{len(pages)} pages, {links} links, {len(broken)} broken internal links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
