"""Plain text from HTML and reST, against hand-worked pages; documentation directories build."""

import pytest

from solulab.data import CorpusError, build_corpus
from solulab.data.markup import html_to_text, rst_to_text
from solulab.data.sources import SourceStats, iter_documents, resolve_sources

PAGE = """<!doctype html><html><head><title>T</title><style>p {color: red}</style>
<script>var x = 1;</script></head><body>
<div role="navigation"><a href="/">index</a> | <div>modules</div></div>
<h1>json &mdash; JSON<a class="headerlink" href="#j">¶</a></h1>
<p>Encode <code>obj</code> as <em>JSON</em>.<br>Second line &amp; more.</p>
<ul><li>one</li><li>two</li></ul>
<div class="footer">Created using a generator.</div></body></html>"""

RST = """:mod:`json` --- JSON encoder
=============================

.. module:: json
   :synopsis: Encode JSON.

.. _label:

**Source code:** :source:`Lib/json/__init__.py`

See :ref:`the guide <guide>` and `JSON <https://json.org>`_ [#note]_ for ``dumps``,
*emphasis* and :func:`~json.loads`.

.. function:: dumps(obj, *, indent=None)

   Serialize *obj* to a str.

.. note::
   Keep this text.
"""


def test_html_keeps_the_text_and_drops_scripts_navigation_and_furniture():
    assert html_to_text(PAGE) == (
        "json — JSON\n\nEncode obj as JSON.\nSecond line & more.\n\none\n\ntwo\n")


def test_rest_keeps_prose_signatures_and_directive_content():
    assert rst_to_text(RST) == (
        "json --- JSON encoder\n\nSource code: Lib/json/__init__.py\n\n"
        "See the guide and JSON for dumps,\nemphasis and json.loads.\n\n"
        "dumps(obj, *, indent=None)\n\n   Serialize obj to a str.\n\n   Keep this text.\n")


def test_documentation_directories_build_and_say_what_they_skipped(tmp_path):
    docs = tmp_path / "docs"
    (docs / "_sources").mkdir(parents=True)
    (docs / "page.html").write_text(PAGE)
    (docs / "_sources" / "page.rst.txt").write_text(RST)
    for name in ("logo.png", "search.js", "style.css"):
        (docs / name).write_text("x")
    stats = SourceStats()
    texts = [d.text for d in iter_documents(resolve_sources([docs]), stats)]
    assert texts == [rst_to_text(RST), html_to_text(PAGE)]  # sorted by path
    assert stats.skipped_unsupported == 3
    for name in ("page.html", "_sources/page.rst.txt"):
        (docs / name).unlink()
    with pytest.raises(CorpusError, match=r"passed over for their suffix: \.(css|js|png) 1"):
        build_corpus(tmp_path / "corpus", sources=[docs], progress=False)


def test_keep_markup_reads_the_files_as_they_are(tmp_path):
    (tmp_path / "a.rst").write_text(RST)
    (tmp_path / "b.html").write_text(PAGE)
    stats = SourceStats()
    texts = [d.text for d in iter_documents(resolve_sources([tmp_path], keep_markup=True),
                                            stats)]
    assert texts == [RST, PAGE]
