"""``solulab autointerp compare``: the automated criterion across models, with the study's
statistics, and its agreement with human labels.

Per run: the fraction of neurons auto-interpretable with a Wilson 95% interval; each pair of runs
compared by Fisher's exact test. Given a study database, every human rating of a neuron in one
of the runs is paired with that neuron's automated label, and Cohen's kappa measures how far the
program agrees with the people beyond chance, over all ratings and per annotator.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

from solulab.autointerp.run import load_explanations
from solulab.errors import SolulabError
from solulab.neurons.collect import open_store
from solulab.stats import cohens_kappa, fisher_exact_2x2, proportion
from solulab.study.db import connect, neuron_labels

HUMAN_YES = "interpretable"


def auto_labels(run: Path) -> dict[tuple[int, int], bool]:
    """``{(layer, neuron): auto-interpretable}`` of a run; an error if autointerp has not run."""
    store = open_store(run)
    explanations = load_explanations(store.path)
    if not explanations:
        raise SolulabError(f"{run} has no automated explanations: run `solulab autointerp {run}`")
    return {key: bool(e["interpretable"]) for key, e in explanations.items()}


Labels = dict[Path, dict[tuple[int, int], bool]]  # resolved run -> (layer, neuron) -> verdict


class RatingPair(NamedTuple):
    annotator: str
    run: Path
    layer: int
    human: bool  # rated interpretable
    auto: bool  # auto-interpretable


def rating_pairs(study: Path, labels: Labels) -> list[RatingPair]:
    """A ``RatingPair`` for every rating of a neuron that has an automated label."""
    conn = connect(study)
    try:
        rows = neuron_labels(conn)
    finally:
        conn.close()
    pairs = []
    for row in rows:
        run = Path(row["run"]).resolve()
        auto = labels.get(run, {}).get((row["layer"], row["neuron"]))
        if auto is not None:
            pairs.append(RatingPair(row["annotator"], run, row["layer"],
                                    row["label"] == HUMAN_YES, auto))
    return pairs


def agreement_score(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    """Counts, agreement and Cohen's kappa of ``(human, automated)`` label pairs."""
    humans, autos = zip(*pairs)
    return {"ratings": len(pairs), "agreement": sum(h == a for h, a in pairs) / len(pairs),
            "kappa": cohens_kappa(humans, autos),
            "human_interpretable": sum(humans) / len(pairs),
            "auto_interpretable": sum(autos) / len(pairs),
            "human_yes": sum(humans), "auto_yes": sum(autos)}


def human_agreement(study: Path, labels: Labels) -> dict[str, Any]:
    """Cohen's kappa between human ratings and automated labels of the same neurons."""
    pairs: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for pair in rating_pairs(study, labels):
        pairs[pair.annotator].append((pair.human, pair.auto))
    everyone = [p for annotator_pairs in pairs.values() for p in annotator_pairs]
    if not everyone:
        raise SolulabError(f"no rating in {study} is of a neuron with an automated label in "
                           f"these runs")
    return {"all": agreement_score(everyone),
            "per_annotator": {name: agreement_score(ps) for name, ps in sorted(pairs.items())}}


def compare_runs(runs: list[str | Path], study: str | Path | None = None) -> dict[str, Any]:
    """Fractions auto-interpretable per run, Fisher per pair, and optional human agreement."""
    paths = [Path(run) for run in runs]
    if not paths:
        raise SolulabError("give at least one run to compare")
    if len({p.resolve() for p in paths}) != len(paths):
        raise SolulabError("a run is given twice")
    labels = {p.resolve(): auto_labels(p) for p in paths}
    models = {}
    for path in paths:
        values = list(labels[path.resolve()].values())
        p = proportion(sum(values), len(values))
        models[str(path)] = {"act_fn": open_store(path).meta["act_fn"],
                             "interpretable": p.successes, "neurons": p.n,
                             "fraction": p.fraction, "wilson_low": p.low, "wilson_high": p.high}
    fisher = []
    for a, b in itertools.combinations(models, 2):
        x, y = models[a], models[b]
        test = fisher_exact_2x2(x["interpretable"], x["neurons"], y["interpretable"],
                                y["neurons"])
        fisher.append({"a": a, "b": b, "odds_ratio": test.odds_ratio, "p_value": test.p_value})
    return {"models": models, "fisher": fisher,
            "human": human_agreement(Path(study), labels) if study else None}


def format_comparison(result: dict[str, Any]) -> str:
    width = max(len(name) for name in result["models"]) + 2
    lines = [f"{'run':<{width}}{'activation':<11}{'auto-interpretable':>20}{'fraction':>10}"
             f"{'95% Wilson':>15}"]
    for name, m in result["models"].items():
        lines.append(f"{name:<{width}}{m['act_fn']:<11}{m['interpretable']:>9} of "
                     f"{m['neurons']:<7}{m['fraction']:>10.3f}"
                     f"{m['wilson_low']:>9.3f}-{m['wilson_high']:.3f}")
    for p in result["fisher"]:
        lines.append(f"Fisher {p['a']} vs {p['b']}: odds ratio {p['odds_ratio']:.3g}, "
                     f"p = {p['p_value']:.3g}")
    human = result["human"]
    if human:
        lines.append("agreement with the study's human labels (Cohen's kappa):")
        for name, s in [("all annotators", human["all"]), *human["per_annotator"].items()]:
            lines.append(f"  {name}: kappa {s['kappa']:.3f}, agreement {s['agreement']:.1%} "
                         f"over {s['ratings']} ratings (humans {s['human_interpretable']:.1%} "
                         f"interpretable, program {s['auto_interpretable']:.1%})")
    return "\n".join(lines)
