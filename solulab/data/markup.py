"""Plain text from HTML and reStructuredText, so that documentation trains a model on its prose
rather than its markup.

HTML: the text of the page, with block elements (paragraphs, headings, list items, table cells,
``<br>``) as line breaks; ``script``, ``style``, ``head``, ``nav`` and ``footer`` contents, elements
with a landmark role (navigation, search, banner, contentinfo, complementary) or a class naming
page furniture (footer, sidebar, heading anchors) dropped; entities decoded.

reST: directive and comment lines (``.. note::``, ``.. _label:``) and their indented options
dropped (a content directive's argument, such as a function's signature, kept), heading under-
and overlines dropped, roles and inline markup reduced to their text (``:meth:`str.join```
-> ``str.join``, ``:ref:`the guide <guide>``` -> ``the guide``, ````code```` -> ``code``,
``*em*`` -> ``em``, `` `link <url>`_`` -> ``link``); the content of directives (an indented
block under ``.. note::``) is kept.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

BLOCKS = frozenset("p div li ul ol h1 h2 h3 h4 h5 h6 tr table pre blockquote dt dd section "
                   "article header footer title".split())
DROPPED = frozenset("script style head nav footer noscript template".split())
LANDMARKS = frozenset("navigation search banner contentinfo complementary".split())
CHROME = frozenset("headerlink footer sidebar sphinxsidebar related".split())  # page furniture
VOID = frozenset("br img hr meta link input area base col embed source track wbr".split())


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.dropped: tuple[str, int] | None = None  # the dropped element's tag and nesting

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            if tag == "br" and self.dropped is None:
                self.parts.append("\n")
            return
        if self.dropped is not None:
            if tag == self.dropped[0]:
                self.dropped = (tag, self.dropped[1] + 1)
            return
        attributes = dict(attrs)
        if (tag in DROPPED or attributes.get("role") in LANDMARKS
                or CHROME & set((attributes.get("class") or "").split())):
            self.dropped = (tag, 1)
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.dropped is not None:
            if tag == self.dropped[0]:
                depth = self.dropped[1] - 1
                self.dropped = None if depth == 0 else (tag, depth)
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.dropped is None:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return _tidy("".join(parser.parts))


DIRECTIVE = re.compile(r"^(\s*)\.\.(\s|$)")
UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+:.<>_])\1{2,}\s*$")
OPTION = re.compile(r"^\s+:[\w-]+:")
ROLE_WITH_TARGET = re.compile(r":[\w:+-]+:`([^`<]*?)\s*<[^`>]*>`")
ROLE = re.compile(r":[\w:+-]+:`~?!?([^`]*)`")
LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
LITERAL = re.compile(r"``(.+?)``")
STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])")
INTERPRETED = re.compile(r"`([^`]+)`_?")
FOOTNOTE = re.compile(r"\s?\[#?[\w-]*\]_")
METADATA = frozenset("module moduleauthor sectionauthor index highlight toctree currentmodule "
                     "versionadded versionchanged deprecated include literalinclude image figure "
                     "only tabularcolumns testsetup testcleanup code-block sourcecode "
                     "audit-event impl-detail program".split())


def rst_to_text(rst: str) -> str:
    lines, skipping_options = [], False
    for line in rst.splitlines():
        directive = DIRECTIVE.match(line)
        if directive:
            name, _, after = line[directive.end():].partition("::")
            # Keep what a content directive says after "::" (a function's signature, a title);
            # drop the directive, labels and metadata.
            if after.strip() and name.strip() not in METADATA:
                lines.append(after.strip())
            skipping_options = True
            continue
        if skipping_options and OPTION.match(line):
            continue
        skipping_options = False
        if UNDERLINE.match(line):
            continue
        line = FOOTNOTE.sub("", line)
        for pattern in (ROLE_WITH_TARGET, ROLE, LINK, LITERAL, STRONG, EMPHASIS, INTERPRETED):
            line = pattern.sub(r"\1", line)
        lines.append(line.replace("::", ":"))
    return _tidy("\n".join(lines))


def _tidy(text: str) -> str:
    """No trailing spaces, at most one blank line in a row."""
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
