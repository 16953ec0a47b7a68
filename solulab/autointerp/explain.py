"""Explain a neuron by the rule that covers most of its strongest firings, then check that rule
over the whole activation range on held-out text.

The explainer applies the study's criterion by program: a neuron is auto-INTERPRETABLE when one
rule holds at the firing token of at least 80% of its top examples (the 20 an annotator sees).
Candidates are the firing tokens themselves (alone, or the two or three most common together),
the commonest firing token in the context of its commonest predecessor, the fixed library of
character-class rules, and any user regexes. Among rules of equal coverage the rarest on
held-out text wins: the most specific explanation.

The whole-range check asks how well the rule predicts where the neuron fires above a fraction of
its maximum on held-out text: precision, recall and AUROC, beside what a random rule of the same
frequency would score (precision = the firing rate, recall = the rule's frequency, AUROC 0.5).
The simulation score is the correlation between the neuron's activations and those a simulator
predicts from the explanation alone (``solulab.autointerp.simulate``): by default the rule's own
predictions, or a local language model's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from solulab.autointerp.rules import LIBRARY, Rule, token_in_context, token_set
from solulab.stats import auroc, pearson, precision_recall

THRESHOLD = 0.8  # the paper's criterion
TOP = 20  # the examples an annotator sees


@dataclass
class Explanation:
    description: str
    kind: str
    coverage: float  # share of the top examples the rule explains at their firing token
    interpretable: bool
    frequency: float  # share of held-out tokens where the rule holds
    firing_rate: float  # share of held-out tokens where the neuron fires
    precision: float
    recall: float
    auroc: float
    simulation: float  # correlation of activations with the rule's predictions

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


class HeldOut:
    """Held-out token strings, with each candidate rule's predictions computed once."""

    def __init__(self, tokens: Sequence[str], sequence_length: int):
        if not tokens:
            raise ValueError("held-out text has no tokens")
        self.tokens = list(tokens)
        self.stripped = np.array([t.strip() for t in self.tokens])
        self.sequence_length = sequence_length
        self._cache: dict[str, np.ndarray] = {}

    def predict(self, rule: Rule) -> np.ndarray:
        """``[tokens]`` bool; rules never look across the sequences the text was cut into."""
        key = f"{rule.kind}:{rule.description}"
        if key not in self._cache:
            if rule.vector is not None:
                self._cache[key] = rule.vector(self.stripped)
            else:
                n = self.sequence_length
                self._cache[key] = np.concatenate([
                    np.array(rule.predict(self.tokens[s:s + n]), dtype=bool)
                    for s in range(0, len(self.tokens), n)])
        return self._cache[key]


def candidates(examples: Sequence[tuple[Sequence[str], int]],
               extra: Sequence[Rule] = ()) -> list[Rule]:
    """Rules suggested by the top examples ``(tokens, fire_index)``, then the library and
    ``extra``."""
    firing = Counter(tokens[i].strip() for tokens, i in examples)
    common = [t for t, _ in firing.most_common(3)]
    rules = [token_set([t]) for t in common]
    rules += [token_set(common[:n]) for n in (2, 3) if len(common) >= n]
    if common:
        before = Counter(tokens[j].strip() for tokens, i in examples
                         if tokens[i].strip() == common[0]
                         for j in range(max(0, i - 3), i) if tokens[j].strip() != common[0])
        if before:
            rules.append(token_in_context(common[0], before.most_common(1)[0][0]))
    return rules + list(LIBRARY) + list(extra)


def coverage(rule: Rule, examples: Sequence[tuple[Sequence[str], int]]) -> float:
    return sum(bool(rule.test(tokens, i)) for tokens, i in examples) / max(len(examples), 1)


def explain(examples: Sequence[tuple[Sequence[str], int]], held_out: HeldOut,
            activations: np.ndarray, fire_at: float, extra: Sequence[Rule] = (),
            simulator=None) -> Explanation:
    """The best rule for the top ``examples`` and its whole-range scores on ``held_out``, whose
    tokens have the neuron's ``activations``; the neuron fires where they exceed ``fire_at``.
    ``simulator`` (a ``Simulator``; default: the rule itself) gives the simulation score."""
    examples = list(examples)[:TOP]
    scored = [(coverage(rule, examples), rule) for rule in candidates(examples, extra)]
    best_coverage = max(c for c, _ in scored)
    tied = [rule for c, rule in scored if c == best_coverage]
    rule = min(tied, key=lambda r: held_out.predict(r).mean())
    predicted = held_out.predict(rule)
    fires = activations > fire_at
    precision, recall = precision_recall(predicted, fires)
    simulated = (predicted.astype(float) if simulator is None
                 else simulator.simulate(rule, held_out))
    return Explanation(
        rule.description, rule.kind, best_coverage, best_coverage >= THRESHOLD,
        float(predicted.mean()), float(fires.mean()), precision, recall,
        auroc(predicted.astype(float), fires),
        pearson(activations[:len(simulated)], simulated))
