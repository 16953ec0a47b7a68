"""Rules that say, for each token of a text, whether they hold there.

A rule reads the token strings of a text (as the tokenizer splits it) and answers per position:
``rule.predict(tokens) -> list[bool]``. Its ``description`` is the one line a person would write
as the neuron's explanation. Kinds: a set of tokens; a token preceded within a few positions by
another; character-class and regex rules over the token's text and its neighbours; user regexes.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from solulab.errors import SolulabError

Predicate = Callable[[Sequence[str], int], bool]


@dataclass(frozen=True)
class Rule:
    """A named per-token predicate."""

    kind: str
    description: str
    test: Predicate = field(compare=False, repr=False)
    vector: Callable[[np.ndarray], np.ndarray] | None = field(default=None, compare=False,
                                                               repr=False)
    """For rules of the token alone: predictions from an array of stripped token strings."""

    def predict(self, tokens: Sequence[str]) -> list[bool]:
        return [bool(self.test(tokens, i)) for i in range(len(tokens))]


def _norm(token: str) -> str:
    return token.strip()


def token_set(tokens: Sequence[str]) -> Rule:
    """The token is one of ``tokens`` (compared without surrounding whitespace)."""
    wanted = frozenset(_norm(t) for t in tokens)
    shown = ", ".join(repr(t) for t in sorted(wanted))
    description = f"the token {shown}" if len(wanted) == 1 else f"one of the tokens {shown}"
    return Rule("token", description, lambda toks, i: _norm(toks[i]) in wanted,
                lambda stripped: np.isin(stripped, sorted(wanted)))


def token_in_context(token: str, preceded_by: str, within: int = 3) -> Rule:
    """The token, with ``preceded_by`` among the ``within`` tokens before it."""
    t, p = _norm(token), _norm(preceded_by)
    return Rule("context", f"{t!r} within {within} tokens after {p!r}",
                lambda toks, i: _norm(toks[i]) == t and any(
                    _norm(x) == p for x in toks[max(0, i - within):i]))


def regex(pattern: str, description: str | None = None) -> Rule:
    """The token's text matches ``pattern`` (``re.search``); a bad pattern is a SolulabError."""
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise SolulabError(f"bad regular expression {pattern!r}: {e}") from None
    return Rule("regex", description or f"tokens matching /{pattern}/",
                lambda toks, i: compiled.search(toks[i]) is not None)


def _run(toks: Sequence[str], i: int, pattern: re.Pattern, min_chars: int) -> bool:
    """The token lies in a run of adjacent tokens (no space inside the run; the first may
    start with one) that each match ``pattern`` and together have ``min_chars`` characters."""
    def fits(j: int) -> bool:
        return pattern.fullmatch(toks[j].lstrip()) is not None

    if not fits(i):
        return False
    start = i
    while start > 0 and not toks[start][:1].isspace() and fits(start - 1):
        start -= 1
    end = i + 1
    while end < len(toks) and not toks[end][:1].isspace() and fits(end):
        end += 1
    return sum(len(t.strip()) for t in toks[start:end]) >= min_chars


BASE64 = re.compile(r"[A-Za-z0-9+/=]+")
HEX = re.compile(r"(0x)?[0-9a-fA-F]+")
CODE_KEYWORDS = frozenset(keyword.kwlist)


def _non_latin(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and all("LATIN" not in unicodedata.name(c, "LATIN") for c in letters)


LIBRARY: tuple[Rule, ...] = (
    Rule("class", "all-caps words", lambda t, i: len(_norm(t[i])) > 1 and _norm(t[i]).isupper()
         and _norm(t[i]).isalpha()),
    Rule("class", "digits", lambda t, i: _norm(t[i]).isdigit()),
    Rule("class", "a number followed by a comma", lambda t, i: _norm(t[i]).isdigit()
         and i + 1 < len(t) and t[i + 1].startswith(",")),
    Rule("class", "base64-like runs", lambda t, i: _run(t, i, BASE64, 16)
         and any(c.isdigit() for c in "".join(t[max(0, i - 4):i + 5]))),
    Rule("class", "hex-like runs", lambda t, i: _run(t, i, HEX, 6)
         and any(c.isdigit() for c in t[i])),
    Rule("class", "whitespace and indentation", lambda t, i: t[i] != "" and t[i].isspace()),
    Rule("class", "newlines", lambda t, i: "\n" in t[i]),
    Rule("class", "punctuation", lambda t, i: _norm(t[i]) != "" and all(
        unicodedata.category(c).startswith("P") for c in _norm(t[i]))),
    Rule("class", "Python keywords", lambda t, i: _norm(t[i]) in CODE_KEYWORDS),
    Rule("class", "capitalised words", lambda t, i: _norm(t[i])[:1].isupper()
         and _norm(t[i])[1:].islower()),
    Rule("class", "non-Latin script", lambda t, i: _non_latin(t[i])),
)
