"""How well the automated verdict agrees with blinded raters, per model: the program's fraction
interpretable and the raters', their difference with a 95% interval, Cohen's kappa
program-rater beside rater-rater, and the confusion table.

    python benchmarks/autointerp_agreement.py STUDY.sqlite [STUDY ...] [--runs DIR]
        [--by activation] [--per-layer] [--min-layer N]
    python benchmarks/autointerp_agreement.py --labels LABELS.csv --set test --runs DIR

Ratings come from study databases (with the neurons they are of) or from a labels CSV such as
``benchmarks/data/autointerp-labels/labels.csv`` (``--set`` picks its rows). Each model's run is
explained afresh with ``solulab autointerp``, so the figures are of the code as it is. ``--runs
DIR`` finds a run as ``DIR/<model name>`` for a CSV, or ``DIR/<run directory name>`` for a study
(``DIR/<seed directory>/<run directory name>`` where a study's runs differ only by seed, as
``replicate --seeds`` makes them). ``--by activation`` pools the models of one activation (the
seeds of a replication); ``--per-layer`` adds a row for each layer of each group; ``--min-layer
N`` keeps only the neurons of layer N and deeper.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sqlite3
from collections import defaultdict
from pathlib import Path

from solulab.autointerp import HELD_OUT_TOKENS
from solulab.autointerp.run import autointerp
from solulab.stats import cohens_kappa, paired_mean, proportion

YES = "interpretable"


def ratings(study: Path, runs: Path | None) -> list[dict]:
    """Every rating: annotator, model, run directory, layer, neuron, label (True/False)."""
    conn = sqlite3.connect(study)
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT r.annotator, s.model, m.act_fn, s.run, s.layer, s.neuron, "
                        "r.label FROM ratings r JOIN secrets s ON s.item_id = r.item_id "
                        "JOIN models m ON m.name = s.model").fetchall()
    conn.close()
    names = {Path(r["run"]).name for r in rows}
    keep = 1 if len(names) == len({r["run"] for r in rows}) else 3  # run, or seed/size/run
    return [{"annotator": r["annotator"], "model": r["model"], "activation": r["act_fn"],
             "layer": r["layer"], "neuron": r["neuron"], "label": r["label"] == YES,
             "run": (runs.joinpath(*Path(r["run"]).parts[-keep:]) if runs else Path(r["run"]))}
            for r in rows]


def labels_csv(path: Path, wanted: str | None, runs: Path) -> list[dict]:
    """Rows of a labels CSV (columns set, annotator, model, layer, neuron, label)."""
    with open(path, newline="") as f:
        return [{"annotator": r["annotator"], "model": r["model"], "activation": r["model"],
                 "layer": int(r["layer"]),
                 "neuron": int(r["neuron"]), "label": r["label"] == YES,
                 "run": runs / r["model"]} for r in csv.DictReader(f)
                if wanted is None or r["set"] == wanted]


def difference(group: list[dict]) -> tuple[float, float]:
    """The program's fraction minus the raters' in points, and the half-width of its 95%
    interval: paired by neuron (program 0 or 1 against the mean of its ratings), normal
    approximation."""
    ratings_of, program_of = defaultdict(list), {}
    for r in group:
        neuron = r["run"], r["layer"], r["neuron"]
        ratings_of[neuron].append(r["label"])
        program_of[neuron] = r["program"]
    mean, half = paired_mean([program_of[n] - sum(labels) / len(labels)
                              for n, labels in ratings_of.items()])
    return 100 * mean, 100 * half


def table(pairs: list[tuple[bool, bool]]) -> str:
    """Confusion counts: rows the rater (yes/no), columns the program (yes/no)."""
    count = defaultdict(int)
    for human, program in pairs:
        count[human, program] += 1
    return (f"rater yes: program yes {count[True, True]:>3}, no {count[True, False]:>3}; "
            f"rater no: program yes {count[False, True]:>3}, no {count[False, False]:>3}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", type=Path, nargs="*")
    parser.add_argument("--labels", type=Path, default=None, help="A labels CSV instead.")
    parser.add_argument("--set", default=None, help="Only the CSV rows of this set.")
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=HELD_OUT_TOKENS, help="Held-out tokens.")
    parser.add_argument("--by", choices=("model", "activation"), default="model")
    parser.add_argument("--per-layer", action="store_true")
    parser.add_argument("--min-layer", type=int, default=0, help="Only layers >= this.")
    args = parser.parse_args()
    if args.labels and not args.runs:
        parser.error("--labels needs --runs DIR (see the labels' README)")
    rows = [r for study in args.studies for r in ratings(study, args.runs)]
    if args.labels:
        rows += labels_csv(args.labels, args.set, args.runs)
    rows = [r for r in rows if r["layer"] >= args.min_layer]
    if not rows:
        parser.error("no ratings: give study databases or --labels")
    verdicts = {}
    for run in sorted({r["run"] for r in rows}):
        explained = autointerp(run, n_tokens=args.tokens, progress=False)
        verdicts[run] = {key: e.interpretable for key, e in explained.items()}
    for r in rows:
        r["program"] = verdicts[r["run"]][f"{r['layer']}:{r['neuron']}"]

    print(f"{'model':<16} {'neurons':>7} {'program':>8} {'raters':>8} {'points (95%)':>14} "
          f"{'kappa p-r':>10} {'kappa r-r':>10}  raters")
    groups = defaultdict(list)
    for r in rows:
        groups[r[args.by]].append(r)
        if args.per_layer:
            groups[f"{r[args.by]} L{r['layer']}"].append(r)
    for model, group in sorted(groups.items()):
        neurons = {(r["run"], r["layer"], r["neuron"]): r["program"] for r in group}
        program = proportion(sum(neurons.values()), len(neurons))
        human = proportion(sum(r["label"] for r in group), len(group))
        pairs = [(r["label"], r["program"]) for r in group]
        by_rater = defaultdict(dict)
        for r in group:
            by_rater[r["annotator"]][r["run"], r["layer"], r["neuron"]] = r["label"]
        raters = sorted(by_rater)
        between = "-"
        pairs_of_raters = [(len(set(by_rater[a]) & set(by_rater[b])), a, b)
                           for a, b in itertools.combinations(raters, 2)]
        if pairs_of_raters and max(pairs_of_raters)[0]:
            _, a, b = max(pairs_of_raters)
            shared = sorted(set(by_rater[a]) & set(by_rater[b]))
            kappa = cohens_kappa([by_rater[a][k] for k in shared],
                                 [by_rater[b][k] for k in shared])
            between = f"{kappa:.2f}"
        points, half = difference(group)
        kappa = cohens_kappa([h for h, _ in pairs], [p for _, p in pairs])
        print(f"{model:<16} {len(neurons):>7} {program.fraction:>8.2f} {human.fraction:>8.2f} "
              f"{f'{points:+.1f} ±{half:.1f}':>14} {kappa:>10.2f} "
              f"{between:>10}  {', '.join(raters)}")
        for rater in raters:
            mine = [(r["label"], r["program"]) for r in group if r["annotator"] == rater]
            print(f"    {rater:<10} kappa {cohens_kappa(*map(list, zip(*mine))):.2f}  "
                  f"{table(mine)}")


if __name__ == "__main__":
    main()
