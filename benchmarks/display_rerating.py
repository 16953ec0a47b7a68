"""Does the display, or the pair of raters, change what raters decide? Two studies of the same
neurons, rated by different raters (under two displays, or twice under one), compared neuron by
neuron.

    python benchmarks/display_rerating.py FIRST.sqlite SECOND.sqlite

Neurons are matched by (model, layer, neuron). Prints each study's display and, per model and
over all models, the fraction rated interpretable in each study (Wilson 95%) with Fisher's exact
test between them (pooled ratings: a neuron counts once per rater), the second study's fraction
minus the first's paired by neuron (each neuron's mean rating; 95% interval), and Cohen's kappa
for every pair of raters, within and across the two studies.
"""

from __future__ import annotations

import argparse
import itertools

from solulab.stats import cohens_kappa, fisher_exact_2x2, paired_mean, proportion
from solulab.study import db

YES = "interpretable"


def ratings(path: str) -> tuple[str, dict[tuple[str, int, int], dict[str, str]]]:
    conn = db.connect(path)
    try:
        rows, display = db.unblinded_ratings(conn), db.display_name(conn)
    finally:
        conn.close()
    by_neuron: dict[tuple[str, int, int], dict[str, str]] = {}
    for r in rows:
        by_neuron.setdefault((r["model"], r["layer"], r["neuron"]), {})[r["annotator"]] = \
            r["label"]
    return display, by_neuron


def paired_difference(first: dict, second: dict, keys: list) -> tuple[float, float]:
    """The second study's fraction minus the first's in points, each neuron's mean rating
    paired, and the half-width of its 95% interval (normal approximation)."""
    def mean_yes(labels: dict[str, str]) -> float:
        return sum(label == YES for label in labels.values()) / len(labels)

    mean, half = paired_mean([mean_yes(second[k]) - mean_yes(first[k]) for k in keys])
    return 100 * mean, 100 * half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    args = parser.parse_args()
    (d1, first), (d2, second) = ratings(args.first), ratings(args.second)
    shared = sorted(set(first) & set(second))
    print(f"{len(shared)} neurons in both studies; displays: {d1} and {d2}")
    for model in [*sorted({m for m, _, _ in shared}), None]:
        keys = [key for key in shared if model is None or key[0] == model]
        cells = []
        counts = []
        for study in (first, second):
            labels = [label for key in keys for label in study[key].values()]
            p = proportion(sum(label == YES for label in labels), len(labels))
            counts.append((p.successes, p.n))
            cells.append(f"{p.successes}/{p.n} = {p.fraction:.1%} ({p.low:.0%}-{p.high:.0%})")
        test = fisher_exact_2x2(*counts[0], *counts[1])
        points, half = paired_difference(first, second, keys)
        print(f"{model or 'all models'}: {d1} {cells[0]}; {d2} {cells[1]}; Fisher p = "
              f"{test.p_value:.2g}; second - first, paired by neuron: {points:+.1f} ±{half:.1f} "
              "points")
    raters = [(d1, name, first) for name in sorted({a for k in shared for a in first[k]})] + \
             [(d2, name, second) for name in sorted({a for k in shared for a in second[k]})]
    for (da, a, sa), (db_, b, sb) in itertools.combinations(raters, 2):
        both = [k for k in shared if a in sa[k] and b in sb[k]]
        kappa = cohens_kappa([sa[k][a] for k in both], [sb[k][b] for k in both])
        where = "within" if sa is sb else "across"
        print(f"kappa {a} ({da}) vs {b} ({db_}): {kappa:.3f} over {len(both)} neurons "
              f"({where} studies)")


if __name__ == "__main__":
    main()
