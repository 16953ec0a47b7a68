"""How a token's text is drawn on a page or a terminal: whitespace that would break a line and
characters that would act on the text around them are shown as visible marks instead.

Bidirectional controls (right-to-left overrides, isolates, marks) in corpus text would reverse
what follows them on the page; each is drawn as ``⟦U+202E⟧`` and never acts.
"""

from __future__ import annotations

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")
MARKS = {"\n": "⏎", "\t": "→", "\r": "␍"} | {c: f"⟦U+{ord(c):04X}⟧" for c in BIDI_CONTROLS}
_TABLE = str.maketrans(MARKS)


def visible(token: str) -> str:
    """``token`` with newlines, tabs, carriage returns and bidi controls drawn as marks."""
    return token.translate(_TABLE)
