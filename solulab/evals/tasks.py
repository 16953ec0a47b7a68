"""Offline evaluation tasks: nothing to download, every item generated or drawn from the corpus.

* ``arithmetic``: ``"a + b ="`` style problems over several digit counts and operations, scored as
  4-way multiple choice by log-likelihood (the right answer against three nearby wrong ones).
* ``cloze``: LAMBADA-style last-word prediction on held-out text: the model must produce the final
  word of a passage (all of its tokens greedy) given everything before it.

Accuracy comes with its standard error ``sqrt(p (1 - p) / n)``.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from tokenizers import Tokenizer

from solulab.core.model import Transformer
from solulab.data import Corpus
from solulab.errors import SolulabError
from solulab.evals.scoring import score_token_continuations

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class TaskResult:
    task: str
    accuracy: float
    stderr: float
    n: int
    chance: float
    details: dict[str, float]


def _accuracy(task: str, correct: list[bool], chance: float, **details) -> TaskResult:
    n = len(correct)
    p = sum(correct) / n
    return TaskResult(task, p, math.sqrt(p * (1 - p) / n), n, chance, details)


def arithmetic_items(n: int, seed: int = 0) -> list[tuple[str, str, list[str]]]:
    """``(prompt, answer, distractors)``: 1-3 digit operands, ``+ - *``, in equal shares."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        digits = 1 + i % 3
        op = "+-*"[(i // 3) % 3]
        a, b = (rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)
                for _ in range(2))
        answer = OPERATIONS[op](a, b)
        wrong: set[int] = set()
        while len(wrong) < 3:
            candidate = answer + rng.choice([-1, 1]) * rng.randint(1, max(2, abs(answer) // 5 + 2))
            if candidate != answer:
                wrong.add(candidate)
        items.append((f"{a} {op} {b} =", f" {answer}", [f" {w}" for w in sorted(wrong)]))
    return items


def run_arithmetic(model: Transformer, tokenizer: Tokenizer, n: int = 300,
                   seed: int = 0) -> TaskResult:
    items = arithmetic_items(n, seed)
    pairs, groups = [], []
    for prompt, answer, distractors in items:
        context = tokenizer.encode(prompt).ids
        options = [answer, *distractors]
        groups.append((len(pairs), len(options)))
        pairs.extend((context, tokenizer.encode(o).ids) for o in options)
    scores = score_token_continuations(model, pairs)
    correct = []
    for start, count in groups:
        logprobs = [scores[start + j].logprob for j in range(count)]
        correct.append(max(range(count), key=logprobs.__getitem__) == 0)  # ties count as wrong
    return _accuracy("arithmetic", correct, 0.25)


_WORD_AT_END = re.compile(r"(.*\S)(\s+)([A-Za-z_][A-Za-z0-9_]{2,})\s*$", re.S)


def cloze_items(corpus: Corpus, n: int, n_tokens: int = 96,
                seed: int = 0) -> list[tuple[str, str]]:
    """``(context, " word")`` passages from the validation split: windows of ``n_tokens`` that
    end in a word of at least three characters, cut before that word."""
    tokens = corpus.tokens("val")
    if len(tokens) < 2 * n_tokens:
        raise SolulabError(f"the validation split ({len(tokens)} tokens) is too small for cloze")
    rng = random.Random(seed)
    items: list[tuple[str, str]] = []
    for _ in range(20 * n):
        if len(items) == n:
            break
        start = rng.randrange(0, len(tokens) - n_tokens)
        text = corpus.decode([t for t in tokens[start:start + n_tokens].tolist()
                              if t != corpus.eot_id])
        match = _WORD_AT_END.match(text)
        if match:
            space = match.group(2)
            items.append((match.group(1) + space[:-1], space[-1] + match.group(3)))
    return items


def run_cloze(model: Transformer, tokenizer: Tokenizer, corpus: Corpus, n: int = 200,
              seed: int = 0) -> TaskResult:
    items = cloze_items(corpus, n, seed=seed)
    if not items:
        raise SolulabError("found no passages ending in a word for the cloze task")
    pairs = [(tokenizer.encode(c).ids, tokenizer.encode(w).ids) for c, w in items]
    scores = score_token_continuations(model, pairs)
    mean_logprob = sum(s.logprob for s in scores) / len(scores)
    return _accuracy("cloze", [s.is_greedy for s in scores], 0.0,
                     mean_word_logprob=mean_logprob)


TASKS: dict[str, Callable[..., TaskResult]] = {"arithmetic": run_arithmetic, "cloze": run_cloze}
