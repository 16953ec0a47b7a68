"""Rules that say, for each token of a text, whether they hold there.

A rule reads a ``TokenText`` (token strings as the tokenizer split them, cut into sequences that
no rule looks across) and answers for every token at once: ``rule.evaluate(text) -> [n] bool``.
Its ``description`` is the line a person would write as the neuron's explanation; ``noun`` names
what it picks out, for rules built from other rules ("the token after a digit").

Families, each a rule a person would call one thing, for code and prose alike:
- a token and its forms (case, leading space, a word's inflections: ``run, Runs, running``);
- the word a token is a piece of (``scri`` + ``pt``);
- the token before or after another token or a token class; a token after another earlier on the
  same line; two-token n-grams (a token with its neighbour);
- where it stands: first or last token of a line, the token opening a string, inside a string,
  a comment or brackets, a separator between items in brackets;
- word shapes and suffixes (``snake_case``, ``CamelCase``, ``-ing``), pieces of split words (the
  first piece, a later part of a compound name), numbers with their signs and separators, and
  character and word classes (digits, a lowercase letter, auxiliary verbs).
A set of unrelated tokens is deliberately not a rule: ``one_of`` exists only to say why it was
rejected (see ``solulab.autointerp.explain``).
"""

from __future__ import annotations

import builtins
import keyword
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from solulab.errors import SolulabError

OPEN, CLOSE = "([{", ")]}"
QUOTES = "'\""
SUFFIXES = ("ations", "ation", "ments", "ment", "ness", "ings", "ing", "able", "ions", "ion",
            "ers", "ies", "ied", "ly", "er", "ed", "es", "s", "d")
CODE_KEYWORDS = frozenset(keyword.kwlist)
WORD = re.compile(r"\w+")


def show(token: str) -> str:
    """A token as a reader should see it: whitespace made visible."""
    if token.strip():
        return repr(token.strip())
    return "'⏎'" if "\n" in token else "'␣'" if token else "''"


@lru_cache(maxsize=1 << 16)
def family(token: str) -> str:
    """The key shared by the forms of one thing: lowercase, no surrounding whitespace, an
    inflection's suffix and a final doubled consonant removed (``Running``, ``runs`` -> ``run``);
    whitespace tokens by kind (newline or space)."""
    text = token.strip().lower()
    if not text:
        return "⏎" if "\n" in token else "␣"
    for suffix in SUFFIXES:
        if text.endswith(suffix) and len(text) - len(suffix) >= 3:
            text = text[: -len(suffix)]
            break
    if len(text) >= 4 and text[-1] == text[-2] and text[-1] not in "aeiou":
        text = text[:-1]  # running -> runn -> run; call and calling -> cal
    return text


class TokenText:
    """Token strings with, per token, what the rules read. ``starts`` are the indices where a
    new sequence begins (0 always): context, lines and brackets never run across them."""

    def __init__(self, tokens: Sequence[str], starts: Sequence[int] = (0,)):
        self.tokens = list(tokens)
        n = len(self.tokens)
        self.n = n
        self.stripped = np.array([t.strip() for t in self.tokens], dtype=object)
        self.family = np.array([family(t) for t in self.tokens], dtype=object)
        self.seq_start = np.zeros(n, bool)
        self.seq_start[[s for s in starts if s < n]] = True
        self.line_start, self.line_end = np.zeros(n, bool), np.zeros(n, bool)
        self.in_string, self.in_comment = np.zeros(n, bool), np.zeros(n, bool)
        self.in_brackets = np.zeros(n, bool)
        self.opens_string = np.zeros(n, bool)  # a quote in the token opens a string left open
        self.earlier_on_line: list[frozenset[str]] = [frozenset()] * n
        self.word = np.empty(n, dtype=object)
        self.word_index = np.zeros(n, int)  # which word (adjacent pieces) each token is in
        self._scan()

    def _scan(self) -> None:
        """One pass for lines, strings, comments, brackets and words. A quote right after a
        letter or digit is an apostrophe (``it's``), not the start of a string."""
        last_content, depth, quote, comment, seen, word_start = -1, 0, "", False, set(), 0
        words, previous = -1, " "
        for i, token in enumerate(self.tokens):
            if self.seq_start[i]:
                last_content, depth, quote, comment, seen = -1, 0, "", False, set()
                previous = " "
            text = token.strip()
            self.in_string[i], self.in_comment[i] = bool(quote), comment
            self.in_brackets[i] = depth > 0
            if "\n" in token:
                head, tail = token.split("\n", 1)[0].strip(), token.rsplit("\n", 1)[1].strip()
                if head:
                    self.line_start[i] = last_content < 0
                    self.line_end[i] = True
                elif last_content >= 0:
                    self.line_end[last_content] = True
                last_content, quote, comment, seen = -1, "", False, set()
                if tail:
                    self.line_start[i], last_content = True, i
            elif text:
                self.line_start[i] = last_content < 0
                self.earlier_on_line[i] = frozenset(seen)
                seen.add(self.family[i])
                last_content = i
            if token[:1].isspace():
                previous = " "
            for c in text:
                if quote:
                    quote = "" if c == quote else quote
                elif not comment:
                    if c in QUOTES and not previous.isalnum():
                        quote = c
                    elif c == "#":
                        comment = True
                    elif c in OPEN:
                        depth += 1
                    elif c in CLOSE:
                        depth = max(0, depth - 1)
                previous = c
            if token[-1:].isspace():
                previous = " "
            self.opens_string[i] = bool(quote) and not self.in_string[i]
            # A word: adjacent pieces of letters, digits or _ with no space between them.
            joins = (i > 0 and not self.seq_start[i] and not token[:1].isspace()
                     and WORD.fullmatch(text) is not None
                     and WORD.fullmatch(self.stripped[i - 1]) is not None)
            if not joins:
                word_start = i
                words += 1
            self.word_index[i] = words
            self.word[word_start:i + 1] = "".join(self.stripped[word_start:i + 1]).lower()

    def word_spans(self) -> list[tuple[int, int]]:
        """``(start, end)`` of each word, in order (``word_index`` numbers them)."""
        edges = np.flatnonzero(np.diff(self.word_index)) + 1
        bounds = [0, *edges.tolist(), self.n]
        return list(zip(bounds[:-1], bounds[1:]))

    def shifted(self, values: np.ndarray, by: int, fill=False) -> np.ndarray:
        """``values`` of the token ``by`` places earlier (1) or later (-1), within a sequence."""
        out = np.full(self.n, fill, dtype=values.dtype)
        boundary = self.seq_start if by > 0 else np.roll(self.seq_start, -1)
        if by > 0:
            out[1:] = values[:-1]
        else:
            out[:-1] = values[1:]
            boundary[-1] = True
        out[boundary] = fill
        return out


@dataclass(frozen=True)
class Rule:
    """A named per-token predicate, evaluated over a whole ``TokenText`` at once."""

    kind: str
    description: str
    evaluate: Callable[[TokenText], np.ndarray] = field(compare=False, repr=False)
    noun: str = ""

    def predict(self, tokens: Sequence[str]) -> list[bool]:
        return [bool(v) for v in self.evaluate(TokenText(tokens))]


def _in(values: np.ndarray, wanted: frozenset) -> np.ndarray:
    return np.fromiter((v in wanted for v in values), bool, len(values))


def forms(key: str, seen: Sequence[str] = ()) -> Rule:
    """The token is a form of one thing: its ``family`` key is ``key``."""
    shown = sorted({show(t) for t in seen}) or [repr(key)]
    noun = shown[0] if len(shown) == 1 else f"forms of {repr(key)} ({', '.join(shown[:4])})"
    description = f"the token {noun}" if len(shown) == 1 else noun
    return Rule("token", description, lambda text: text.family == key, noun)


def word(text_of_word: str) -> Rule:
    """Any piece of the word ``text_of_word`` (case-insensitive)."""
    w = text_of_word.lower()
    return Rule("word", f"pieces of the word {w!r}", lambda text: text.word == w,
                f"the word {w!r}")


def one_of(keys: Sequence[str]) -> Rule:
    """The token is any of several unrelated things: never an explanation, only a rejection."""
    wanted = frozenset(keys)
    shown = ", ".join(repr(k) for k in sorted(wanted))
    return Rule("unrelated", f"one of the tokens {shown}",
                lambda text: _in(text.family, wanted), f"one of {shown}")


def after(rule: Rule) -> Rule:
    return Rule("after", f"the token after {rule.noun}",
                lambda text: text.shifted(rule.evaluate(text), 1), f"a token after {rule.noun}")


def before(rule: Rule) -> Rule:
    return Rule("before", f"the token before {rule.noun}",
                lambda text: text.shifted(rule.evaluate(text), -1),
                f"a token before {rule.noun}")


def both(first: Rule, second: Rule) -> Rule:
    """``first`` where ``second`` holds too (e.g. a token after another: an n-gram)."""
    return Rule("both", f"{first.noun} where it is {second.noun}",
                lambda text: first.evaluate(text) & second.evaluate(text),
                f"{first.noun} as {second.noun}")


def after_on_line(key: str) -> Rule:
    """A token later on a line where (a form of) ``key`` came earlier."""
    return Rule("line", f"tokens after {key!r} on the same line",
                lambda text: np.fromiter((key in s for s in text.earlier_on_line), bool,
                                         text.n), f"a token after {key!r} on its line")


def after_on_line_any(keys: frozenset[str], noun: str) -> Rule:
    """A token later on a line where any of ``keys`` came earlier (e.g. an ``if`` header)."""
    return Rule("line", f"tokens after {noun} on the same line",
                lambda text: np.fromiter((bool(keys & s) for s in text.earlier_on_line), bool,
                                         text.n), f"a token after {noun} on its line")


def word_shape(description: str, noun: str, test: Callable[[str], bool]) -> Rule:
    """Any piece of a word (the token's adjacent pieces joined) whose text passes ``test``."""
    def evaluate(text: TokenText) -> np.ndarray:
        joined = np.array(["".join(text.stripped[i:j]) for i, j in text.word_spans()],
                          dtype=object)
        ok = np.fromiter((bool(test(w)) for w in joined), bool, len(joined))
        return ok[text.word_index]
    return Rule("shape", description, evaluate, noun)


def suffix(end: str) -> Rule:
    return Rule("suffix", f"words ending in '-{end}'", lambda text: np.fromiter(
        (len(w) > len(end) + 2 and w.endswith(end) for w in text.word), bool, text.n),
        f"a word ending in '-{end}'")


def regex(pattern: str, description: str | None = None) -> Rule:
    """The token's text matches ``pattern`` (``re.search``); a bad pattern is a SolulabError."""
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise SolulabError(f"bad regular expression {pattern!r}: {e}") from None
    description = description or f"tokens matching /{pattern}/"
    return Rule("regex", description, lambda text: np.fromiter(
        (compiled.search(t) is not None for t in text.tokens), bool, text.n), description)


def _each(test: Callable[[str], bool]) -> Callable[[TokenText], np.ndarray]:
    """A rule of the stripped token alone, computed once per distinct token."""
    def evaluate(text: TokenText) -> np.ndarray:
        cache: dict[str, bool] = {}
        out = np.empty(text.n, bool)
        for i, token in enumerate(text.stripped):
            if token not in cache:
                cache[token] = bool(test(token))
            out[i] = cache[token]
        return out
    return evaluate


def _run(text: TokenText, pattern: re.Pattern, min_chars: int) -> np.ndarray:
    """Tokens inside a run of adjacent tokens (no space inside; the first may start with one)
    that each match ``pattern`` and together have at least ``min_chars`` characters."""
    fits = np.fromiter((pattern.fullmatch(t.lstrip()) is not None for t in text.tokens), bool,
                       text.n)
    out = np.zeros(text.n, bool)
    i = 0
    while i < text.n:
        if not fits[i]:
            i += 1
            continue
        end = i + 1
        while (end < text.n and fits[end] and not text.seq_start[end]
               and not text.tokens[end][:1].isspace()):
            end += 1
        if sum(len(t.strip()) for t in text.tokens[i:end]) >= min_chars:
            out[i:end] = True
        i = end
    return out


def _non_latin(token: str) -> bool:
    letters = [c for c in token if c.isalpha()]
    return bool(letters) and all("LATIN" not in unicodedata.name(c, "LATIN") for c in letters)


def _punctuation(token: str) -> bool:
    return token != "" and all(unicodedata.category(c).startswith("P") for c in token)


DETERMINERS = frozenset("a an the this that these those its their his her our your my each every "
                        "some any no another".split())
MODALS = frozenset("can could may might must shall should will would cannot".split())
BE = frozenset("be is are was were been being am".split())
AUXILIARIES = BE | MODALS | frozenset("have has had do does did".split())
PREPOSITIONS = frozenset("of in on at by for with from into onto to over under about after "
                         "before between through during without within".split())
CONJUNCTIONS = frozenset("and or but nor so yet if because while although unless".split())
PRONOUNS = frozenset("i you he she it we they me him us them this that which who what".split())
NUMBER = re.compile(r"(0[xX])?[0-9a-fA-F]*[0-9][0-9a-fA-F]*|[xX][0-9a-fA-F]{2,}")
BASE64 = re.compile(r"[A-Za-z0-9+/=]+")
HEX = re.compile(r"(0x)?[0-9a-fA-F]+")
SNAKE = re.compile(r"[a-z0-9]+(_[a-z0-9]+)+")
CAMEL = re.compile(r"[A-Z][a-z0-9]+([A-Z][a-z0-9]+)+")


def _class(description: str, noun: str, test: Callable[[str], bool]) -> Rule:
    return Rule("class", description, _each(test), noun)


def _words(description: str, noun: str, words: frozenset[str]) -> Rule:
    """A closed class of words (any case)."""
    return _class(description, noun, lambda t: t.lower() in words)


def punctuation_mark(mark: str) -> Rule:
    """One punctuation mark, alone or fused with other punctuation (``,`` in ``"``,``)."""
    return _class(f"the mark {mark!r}, alone or fused with markup", f"a {mark!r}",
                  lambda t: mark in t and not any(c.isalnum() or c.isspace() for c in t))


def _stem_piece(text: TokenText) -> np.ndarray:
    """A piece of a word that the word's next piece completes (``comput`` in ``comput|ed``)."""
    continues = np.append(text.word_index[1:] == text.word_index[:-1], False)
    alpha = np.fromiter((t.isalpha() for t in text.stripped), bool, text.n)
    return continues & alpha & text.shifted(alpha, -1)


def _first_piece(text: TokenText) -> np.ndarray:
    """The first token of a word split into several (``ent`` in ``ent|ities``)."""
    starts = np.append(True, text.word_index[1:] != text.word_index[:-1])
    continues = np.append(text.word_index[1:] == text.word_index[:-1], False)
    return starts & continues


def _initial_letter(text: TokenText) -> np.ndarray:
    """A single letter that starts a longer word (``S`` in ``S|ubject``)."""
    letter = np.fromiter((len(t) == 1 and t.isalpha() for t in text.stripped), bool, text.n)
    return _first_piece(text) & letter


def _later_part(text: TokenText) -> np.ndarray:
    """A token starting a later part of one compound name: at or after ``_``, or at a
    lower-to-upper case change (``extra`` and ``_info`` in ``get_extra_info``, ``Arg`` in
    ``PyArg``)."""
    out = np.zeros(text.n, bool)
    for start, end in text.word_spans():
        for i in range(start + 1, end):
            if "".join(text.stripped[start:i]).strip("_") == "":
                continue  # only leading underscores before it: ``init`` in ``__init__``
            token, previous = text.stripped[i], text.stripped[i - 1]
            out[i] = (previous.endswith("_") or (token.startswith("_") and token.strip("_") != "")
                      or (token[:1].isupper() and previous[-1:].islower()))
    return out


def _string_opener(text: TokenText) -> np.ndarray:
    """The token whose quote opens a string (``f'``, ``("``, ``='``)."""
    return text.opens_string.copy()


SEPARATORS = frozenset({",", "),", "],", "},", ";"})


def _separator_in_brackets(text: TokenText) -> np.ndarray:
    """A comma (alone or closing an inner bracket) or a bare line break between items in
    brackets: brackets open before and after it, and an item (not the bracket) before it."""
    separator = np.fromiter((t.strip() in SEPARATORS or (t.isspace() and "\n" in t)
                             for t in text.tokens), bool, text.n)
    return (separator & text.in_brackets & text.shifted(text.in_brackets, -1)
            & ~text.shifted(OPENING.evaluate(text), 1))


SHORT_STRING = 24  # characters: a key, a name, an option; longer strings are messages and text


def _in_short_string(text: TokenText) -> np.ndarray:
    """Inside a string of at most ``SHORT_STRING`` characters (``'utf'`` ``'-8'`` in
    ``'utf-8'``; not the words of a message). A string still open where its sequence ends
    counts by what was seen of it, as a reader of that text would judge it."""
    out = np.zeros(text.n, bool)
    i = 0
    while i < text.n:
        if not text.in_string[i]:
            i += 1
            continue
        end = i + 1
        while end < text.n and text.in_string[end] and not text.seq_start[end]:
            end += 1
        if sum(len(t) for t in text.tokens[i:end]) <= SHORT_STRING:
            out[i:end] = True
        i = end
    return out


BUILTIN_NAMES = frozenset(name for name in dir(builtins)
                          if name.islower() and not name.startswith("_"))
OPERATORS = frozenset("+ - * / // % ** @ < > <= >= == != & | ^ ~ << >> += -= *= /= //= %= "
                      "|= &= ^= **=".split())
ASSIGNMENTS = frozenset({"=", "+=", "-=", "*=", "/=", "//=", "%=", "|=", "&=", "^=", "**=",
                         ":="})


def _assignment_target(text: TokenText) -> np.ndarray:
    """A token of a line's assignment target: before the line's first ``=`` (or ``+=``, ...)
    outside brackets (``self.x`` in ``self.x = 1``; not ``key`` in ``f(key=1)``)."""
    out = np.zeros(text.n, bool)
    line = 0
    for i, token in enumerate(text.tokens):
        if text.seq_start[i] or text.line_start[i]:
            line = i
        if "\n" in token:
            line = i + 1
        elif text.stripped[i] in ASSIGNMENTS and not text.in_brackets[i] and i > line:
            out[line:i] = ~text.in_string[line:i] & ~text.in_comment[line:i]
            out[line:i] &= np.fromiter((t.strip() != "" for t in text.tokens[line:i]), bool,
                                       i - line)
            line = text.n  # only the first assignment of a line
    return out


def _first_word_of_line(text: TokenText) -> np.ndarray:
    """Any piece of the word that starts a line (``color`` and ``map`` in ``colormap = ...``)."""
    starts = set(text.word_index[text.line_start & np.fromiter(
        (WORD.fullmatch(t) is not None for t in text.stripped), bool, text.n)].tolist())
    return np.fromiter((w in starts for w in text.word_index), bool, text.n) & np.fromiter(
        (WORD.fullmatch(t) is not None for t in text.stripped), bool, text.n)


SIGNS, NUMBER_SEPARATORS = frozenset("-+"), frozenset(".:/,-")


def _number_part(text: TokenText) -> np.ndarray:
    """A token with a digit, a sign right before one (``-`` in ``-1``) or a separator between
    two with no space (``:`` in ``12:30``; not the comma in ``2020, we``)."""
    digit = np.fromiter((any(c.isdigit() for c in t) for t in text.stripped), bool, text.n)
    spaced = np.fromiter((t[:1].isspace() for t in text.tokens), bool, text.n)
    digit_next = text.shifted(digit & ~spaced, -1)  # a digit follows with no space between
    sign = np.fromiter((t in SIGNS for t in text.stripped), bool, text.n)
    separator = np.fromiter((t in NUMBER_SEPARATORS for t in text.tokens), bool, text.n)
    return digit | (sign & digit_next) | (separator & text.shifted(digit, 1) & digit_next)


def _position(description: str, noun: str, attribute: str) -> Rule:
    return Rule("position", description, lambda text: getattr(text, attribute).copy(), noun)


DIGITS = _class("digits", "a number", str.isdigit)
DET = _words("articles and determiners", "an article or determiner", DETERMINERS)
MODAL = _words("modal verbs", "a modal verb", MODALS)
TO_BE = _words("forms of 'be'", "a form of 'be'", BE)
PREPOSITION = _words("prepositions", "a preposition", PREPOSITIONS)
AUXILIARY = _words("auxiliary verbs", "an auxiliary verb", AUXILIARIES)
PUNCTUATION = _class("punctuation", "punctuation", _punctuation)
OPENING = _class("opening brackets", "an opening bracket", lambda t: t != "" and t[-1] in OPEN)
CLOSING = _class("closing brackets", "a closing bracket", lambda t: t != "" and t[0] in CLOSE)
KEYWORDS = _class("Python keywords", "a Python keyword", lambda t: t in CODE_KEYWORDS)
NEWLINES = Rule("class", "newlines", lambda text: np.fromiter(
    ("\n" in t for t in text.tokens), bool, text.n), "a newline")
LINE_START = _position("the first token of a line", "the first token of a line", "line_start")

LIBRARY: tuple[Rule, ...] = (
    _class("all-caps words", "an all-caps word", lambda t: len(t) > 1 and t.isupper()
           and t.isalpha()),
    DIGITS,
    Rule("class", "a number followed by a comma", lambda text: (
        _each(str.isdigit)(text) & text.shifted(np.array(
            [t.startswith(",") for t in text.tokens], bool), -1)), "a number before a comma"),
    Rule("class", "base64-like runs", lambda text: _run(text, BASE64, 16) & np.fromiter(
        (any(c.isdigit() for c in "".join(text.tokens[max(0, i - 4):i + 5]))
         for i in range(text.n)), bool, text.n), "a base64-like run"),
    Rule("class", "hex-like runs", lambda text: _run(text, HEX, 6) & np.fromiter(
        (any(c.isdigit() for c in t) for t in text.tokens), bool, text.n), "a hex-like run"),
    Rule("class", "whitespace and indentation", lambda text: np.fromiter(
        (t != "" and t.isspace() for t in text.tokens), bool, text.n), "whitespace"),
    NEWLINES,
    PUNCTUATION,
    OPENING,
    CLOSING,
    KEYWORDS,
    _class("arithmetic, comparison and bitwise operators", "an operator",
           lambda t: t in OPERATORS),
    _class("capitalised words", "a capitalised word", lambda t: t[:1].isupper()
           and t[1:].islower()),
    _class("non-Latin script", "non-Latin script", _non_latin),
    _class("snake_case names", "a snake_case name", lambda t: SNAKE.fullmatch(t) is not None),
    _class("CamelCase names", "a CamelCase name", lambda t: CAMEL.fullmatch(t) is not None),
    word_shape("pieces of all-caps words", "a piece of an all-caps word",
               lambda w: len(w) > 1 and w.isalpha() and w.isupper()),
    _class("Python built-in names", "a built-in name", lambda t: t in BUILTIN_NAMES),
    word_shape("pieces of ALL_CAPS names", "a piece of an ALL_CAPS name",
               lambda w: len(w) > 3 and "_" in w.strip("_") and w.upper() == w
               and any(c.isalpha() for c in w)),
    word_shape("pieces of snake_case names", "a piece of a snake_case name",
               lambda w: SNAKE.fullmatch(w.strip("_")) is not None),
    word_shape("pieces of CamelCase names", "a piece of a CamelCase name",
               lambda w: CAMEL.fullmatch(w.lstrip("_")) is not None),
    _class("a capital letter", "a capital letter", lambda t: len(t) == 1 and t.isupper()),
    word_shape("pieces of numbers (decimal or hex)", "a piece of a number",
               lambda w: NUMBER.fullmatch(w) is not None),
    Rule("shape", "a single letter starting a longer word", _initial_letter,
         "the first letter of a split word"),
    Rule("shape", "the stem of a word split before its ending", _stem_piece,
         "a word's stem before its ending"),
    Rule("shape", "the first piece of a word split into pieces", _first_piece,
         "the first piece of a split word"),
    Rule("shape", "a later part of a compound name (after '_' or a case change)", _later_part,
         "a later part of a compound name"),
    Rule("shape", "numbers with their signs and separators", _number_part, "part of a number"),
    _class("a single lowercase letter", "a lowercase letter",
           lambda t: len(t) == 1 and t.islower()),
    DET, MODAL, TO_BE, AUXILIARY, PREPOSITION,
    _words("conjunctions", "a conjunction", CONJUNCTIONS),
    _words("pronouns", "a pronoun", PRONOUNS),
    Rule("position", "line breaks and the first token of a line", lambda text: np.fromiter(
        ("\n" in t for t in text.tokens), bool, text.n) | text.line_start,
        "the start of a line"),
    after_on_line_any(frozenset({"if", "elif", "while", "for", "assert", "return"}),
                      "a statement keyword (if, elif, while, for, assert, return)"),
    LINE_START,
    _position("the last token of a line", "the last token of a line", "line_end"),
    Rule("position", "the token that opens a string", _string_opener, "a string's opening"),
    _position("tokens inside a string", "inside a string", "in_string"),
    Rule("position", "tokens inside a short string (a key, name or option)", _in_short_string,
         "inside a short string"),
    Rule("position", "the target of an assignment (before its '=')", _assignment_target,
         "an assignment's target"),
    Rule("position", "the word that starts a line", _first_word_of_line,
         "the first word of a line"),
    _position("tokens inside a comment", "inside a comment", "in_comment"),
    _position("tokens inside brackets", "inside brackets", "in_brackets"),
    Rule("position", "separators between items in brackets", _separator_in_brackets,
         "a separator in brackets"),
)
"""Classes and positions, offered for every neuron."""

CONTEXT_CLASSES: tuple[Rule, ...] = (DIGITS, OPENING, CLOSING, KEYWORDS, NEWLINES, LINE_START,
                                     DET, MODAL, TO_BE, AUXILIARY, PREPOSITION)
"""Classes offered as a neighbour: the token after (or before) one of these."""
