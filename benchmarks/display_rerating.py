"""Does the display change what raters decide? Two studies of the same neurons, rated under two
displays by different raters, compared neuron by neuron.

    python benchmarks/display_rerating.py FIRST.sqlite SECOND.sqlite

Neurons are matched by (model, layer, neuron). Prints each study's display and, per model, the
fraction rated interpretable under each display (Wilson 95%) with Fisher's exact test between
the displays (pooled ratings: a neuron counts once per rater), and Cohen's kappa for every pair
of raters, within and across the two displays.
"""

from __future__ import annotations

import argparse
import itertools

from solulab.stats import cohens_kappa, fisher_exact_2x2, proportion
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    args = parser.parse_args()
    (d1, first), (d2, second) = ratings(args.first), ratings(args.second)
    shared = sorted(set(first) & set(second))
    print(f"{len(shared)} neurons in both studies; displays: {d1} and {d2}")
    for model in sorted({m for m, _, _ in shared}):
        cells = []
        counts = []
        for study in (first, second):
            labels = [label for key in shared if key[0] == model
                      for label in study[key].values()]
            p = proportion(sum(label == YES for label in labels), len(labels))
            counts.append((p.successes, p.n))
            cells.append(f"{p.successes}/{p.n} = {p.fraction:.1%} ({p.low:.0%}-{p.high:.0%})")
        test = fisher_exact_2x2(*counts[0], *counts[1])
        print(f"{model}: {d1} {cells[0]}; {d2} {cells[1]}; Fisher p = {test.p_value:.2g}")
    raters = [(d1, name, first) for name in sorted({a for k in shared for a in first[k]})] + \
             [(d2, name, second) for name in sorted({a for k in shared for a in second[k]})]
    for (da, a, sa), (db_, b, sb) in itertools.combinations(raters, 2):
        both = [k for k in shared if a in sa[k] and b in sb[k]]
        kappa = cohens_kappa([sa[k][a] for k in both], [sb[k][b] for k in both])
        where = "within" if da == db_ else "across"
        print(f"kappa {a} ({da}) vs {b} ({db_}): {kappa:.3f} over {len(both)} neurons "
              f"({where} displays)")


if __name__ == "__main__":
    main()
