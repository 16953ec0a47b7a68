"""The blinding audit: how well could someone tell the study's models apart from exactly what
its annotators were shown?

For every item, features an annotator could read off the page without any label: how much is
shaded (``shading``), how long the snippets are (``length``), what kind of token fires
(``token classes``) and what the section 6.4 examples look like (``checks``). For every pair of
models, simple classifiers are cross-validated (5 stratified folds) at telling the pair's items
apart: a logistic regression on each group of features and on all of them, and a one-threshold
rule on each feature alone. The audit reports each one's accuracy with its Wilson 95% interval
and the best of them, with a one-sided binomial test against guessing the larger model that is
Bonferroni-corrected for the number of classifiers tried. A study is called blind when that
corrected p is above 0.05.

Token classes are part of what the neuron responds to, which is what annotators judge; a
difference there can be a real difference between the models rather than a display's leak, so
the report lists every group on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from solulab.stats import proportion
from solulab.study import db

FOLDS = 5
ALPHA = 0.05


def _share(values: list[bool]) -> float:
    return float(np.mean(values)) if values else 0.0


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _token_classes(tokens: list[str]) -> dict[str, float]:
    return {
        "firing tokens led by a space": _share([t[:1].isspace() for t in tokens]),
        "firing tokens of punctuation only": _share([bool(t.strip()) and not any(
            c.isalnum() for c in t) for t in tokens]),
        "firing tokens with a digit": _share([any(c.isdigit() for c in t) for t in tokens]),
        "firing tokens capitalised": _share([t.strip()[:1].isupper() for t in tokens]),
        "firing tokens with a newline": _share(["\n" in t for t in tokens]),
        "firing token length": _mean([len(t) for t in tokens]),
    }


def item_features(item: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, float]:
    """What the page shows of one item, as numbers."""
    snippets = [s for s in item["snippets"] if s["tokens"]]
    acts = [a for s in snippets for a in s["acts"]]
    firing = [s["acts"][s["fire"]] for s in snippets]
    others = [a for s in snippets for i, a in enumerate(s["acts"]) if i != s["fire"]]
    return {
        "tokens shaded": _share([a > 0 for a in acts]),
        "non-firing tokens shaded above 0.3": _share([a > 0.3 for a in others]),
        "mean shade of non-firing tokens": _mean(others),
        "mean shade of firing tokens": _mean(firing),
        "snippets": float(len(snippets)),
        "tokens per snippet": _mean([len(s["tokens"]) for s in snippets]),
        "snippets at a context start": _share([bool(s["start"]) for s in snippets]),
        **_token_classes([s["tokens"][s["fire"]] for s in snippets]),
        "checks": float(len(checks)),
        "checks shaded": _share([any(c["acts"]) for c in checks]),
        "tokens per check": _mean([len(c["tokens"]) for c in checks]),
    }


GROUPS = {
    "shading": ["tokens shaded", "non-firing tokens shaded above 0.3",
                "mean shade of non-firing tokens", "mean shade of firing tokens"],
    "length": ["snippets", "tokens per snippet", "snippets at a context start"],
    "token classes": list(_token_classes([])),
    "checks": ["checks", "checks shaded", "tokens per check"],
}


def _classifiers() -> dict[str, tuple[list[str], Callable[[], Any]]]:
    """Name -> (features it reads, a fresh scikit-learn classifier)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    def logistic():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    found: dict[str, tuple[list[str], Callable[[], Any]]] = {
        f"logistic regression on {group}": (names, logistic) for group, names in GROUPS.items()}
    found["logistic regression on everything"] = ([n for g in GROUPS.values() for n in g],
                                                  logistic)
    for names in GROUPS.values():
        for name in names:
            found[f"threshold on {name}"] = ([name], lambda: DecisionTreeClassifier(max_depth=1))
    return found


def _cross_validated_hits(x: np.ndarray, y: np.ndarray, make: Callable[[], Any],
                          seed: int) -> int:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = min(FOLDS, int(np.bincount(y).min()))
    if folds < 2:
        return int(np.sum(y == np.bincount(y).argmax()))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return int(np.sum(cross_val_predict(make(), x, y, cv=split) == y))


def audit_pair(features: list[dict[str, float]], labels: list[int], seed: int = 0
               ) -> dict[str, Any]:
    """Every classifier's cross-validated accuracy at telling label 0 from label 1, and the
    best with its corrected p-value."""
    y = np.asarray(labels)
    n = len(y)
    chance = float(np.bincount(y, minlength=2).max() / n)
    classifiers = _classifiers()
    results = []
    for name, (names, make) in classifiers.items():
        x = np.array([[f[k] for k in names] for f in features], dtype=np.float64)
        hits = _cross_validated_hits(x, y, make, seed)
        p = proportion(hits, n)
        test = scipy.stats.binomtest(hits, n, chance, alternative="greater")
        results.append({"classifier": name, "correct": hits, "n": n, "accuracy": p.fraction,
                        "low": p.low, "high": p.high, "p_value": float(test.pvalue)})
    results.sort(key=lambda r: (-r["accuracy"], r["classifier"]))
    best = results[0]
    corrected = min(1.0, best["p_value"] * len(results))
    return {"chance": chance, "best": {**best, "p_corrected": corrected},
            "blind": bool(corrected > ALPHA), "classifiers": results}


def audit(path: str | Path, seed: int = 0) -> dict[str, Any]:
    """The audit of a study: its display and, per pair of models, ``audit_pair``'s answer.
    Where several models share an activation (seeds of one size), they are pooled and the
    activations are told apart instead: that is what an annotator's bias would act on."""
    conn = db.connect(path)
    try:
        shown, display = db.shown_payloads(conn), db.display_name(conn)
    finally:
        conn.close()
    models_per_act: dict[str, set[str]] = {}
    for row in shown:
        models_per_act.setdefault(row["act_fn"], set()).add(row["model"])
    pooled = len(models_per_act) > 1 and any(len(m) > 1 for m in models_per_act.values())
    by_model: dict[str, list[dict[str, float]]] = {}
    for row in shown:
        by_model.setdefault(row["act_fn"] if pooled else row["model"], []).append(
            item_features(row["item"], row["checks"]))
    pairs = []
    for a, b in itertools.combinations(sorted(by_model), 2):
        labels = [0] * len(by_model[a]) + [1] * len(by_model[b])
        pairs.append({"a": a, "b": b, **audit_pair(by_model[a] + by_model[b], labels, seed)})
    return {"display": display, "pairs": pairs}


def format_audit(result: dict[str, Any]) -> list[str]:
    """One line per pair: the best classifier, its accuracy and whether the study was blind."""
    lines = [f"blinding audit ({result['display']} display): the best of "
             f"{len(_classifiers())} cross-validated classifiers at telling two models apart "
             "from what annotators saw"]
    for pair in result["pairs"]:
        best = pair["best"]
        verdict = "blind" if pair["blind"] else "NOT BLIND"
        lines.append(f"  {pair['a']} vs {pair['b']}: {best['accuracy']:.0%} "
                     f"({best['low']:.0%}-{best['high']:.0%}, chance {pair['chance']:.0%}, "
                     f"p = {best['p_corrected']:.2g} corrected) by {best['classifier']}: "
                     f"{verdict}")
    return lines
