"""``solulab study report``: unblind a study and give the paper's statistics and figures.

Per model: the fraction of ratings INTERPRETABLE with a Wilson 95% interval; each pair of models
compared with Fisher's exact test, on the pooled ratings (a neuron counts once per annotator who
rated it, which overstates the evidence when several did) and for each annotator alone (one
rating per neuron); per-annotator fractions; agreement on neurons that every
annotator rated (Cohen's kappa for two annotators, Fleiss' for more); a Figure-4-style plot
(fraction interpretable against model size, one line per activation); for the section 6.4
labels, the fraction of examples inconsistent with the annotator's hypothesis by activation
interval, before and after the LayerNorm (Figure 9); CSVs of every rating and label.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

from solulab.io import atomic_write_json, atomic_write_text
from solulab.stats import cohens_kappa, fisher_exact_2x2, fleiss_kappa, proportion
from solulab.study import db

INTERPRETABLE = "interpretable"
LN_LABEL = {"mid": "pre-LayerNorm", "post": "post-LayerNorm"}


def _share(rows: list[dict]) -> dict[str, Any]:
    p = proportion(sum(r["label"] == INTERPRETABLE for r in rows), len(rows))
    return {"interpretable": p.successes, "rated": p.n, "fraction": p.fraction,
            "wilson_low": p.low, "wilson_high": p.high}


def agreement(ratings: list[dict]) -> dict[str, Any] | None:
    """Kappa over the neurons every annotator rated; None with fewer than two annotators."""
    annotators = sorted({r["annotator"] for r in ratings})
    if len(annotators) < 2:
        return None
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for r in ratings:
        by_item[r["item_id"]][r["annotator"]] = r["label"]
    shared = [labels for labels in by_item.values() if len(labels) == len(annotators)]
    if not shared:
        return {"annotators": annotators, "shared_neurons": 0, "kappa": None}
    if len(annotators) == 2:
        a, b = annotators
        kappa, kind = cohens_kappa([s[a] for s in shared], [s[b] for s in shared]), "cohen"
    else:
        kappa, kind = fleiss_kappa([list(s.values()) for s in shared]), "fleiss"
    return {"annotators": annotators, "shared_neurons": len(shared), "kappa": kappa,
            "kind": kind}


def fisher_pairs(shares: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Fisher's exact test for every pair of models with ratings."""
    pairs = []
    for a, b in itertools.combinations(shares, 2):
        x, y = shares[a], shares[b]
        if x["rated"] and y["rated"]:
            test = fisher_exact_2x2(x["interpretable"], x["rated"], y["interpretable"],
                                    y["rated"])
            pairs.append({"a": a, "b": b, "odds_ratio": test.odds_ratio,
                          "p_value": test.p_value})
    return pairs


def summarise(path: str | Path) -> dict[str, Any]:
    """Every statistic of the study as a dict (also written to ``summary.json``)."""
    conn = db.connect(path)
    try:
        ratings, checks = db.unblinded_ratings(conn), db.unblinded_check_labels(conn)
        models = db.models(conn)
    finally:
        conn.close()
    per_model = {m["name"]: {**m, **_share([r for r in ratings if r["model"] == m["name"]])}
                 for m in models}
    per_annotator = {f"{name}/{model}": _share(rows) for (name, model), rows in itertools.groupby(
        sorted(ratings, key=lambda r: (r["annotator"], r["model"])),
        key=lambda r: (r["annotator"], r["model"])) for rows in [list(rows)]}
    annotators = sorted({r["annotator"] for r in ratings})
    alone = {name: fisher_pairs({m: per_annotator[f"{name}/{m}"] for m in per_model
                                 if f"{name}/{m}" in per_annotator}) for name in annotators}
    consistency = defaultdict(lambda: [0, 0])  # (model, act, point, interval) -> [bad, n]
    for c in checks:
        key = (c["model"], c["act_fn"], c["point"], c["interval_index"], c["interval_count"])
        consistency[key][0] += 1 - c["consistent"]
        consistency[key][1] += 1
    return {"models": per_model, "fisher": fisher_pairs(per_model), "fisher_per_annotator": alone,
            "per_annotator": per_annotator,
            "agreement": agreement(ratings),
            "consistency": [{"model": k[0], "act_fn": k[1], "point": k[2], "interval": k[3],
                             "intervals": k[4], "inconsistent": v[0], "labelled": v[1]}
                            for k, v in sorted(consistency.items())],
            "ratings": ratings, "checks": checks}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, quoted so it stays text."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _csv(rows: list[dict]) -> str:
    """CSV of ``rows``; hypotheses and other text can never become live formulas."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: inert(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def plot_figures(summary: dict[str, Any], out: Path) -> list[Path]:
    """``fig4.png`` (fraction interpretable against size per activation) and, with 6.4 labels,
    ``fig9.png`` (fraction inconsistent by activation interval, pre- vs post-LN)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    by_act: dict[str, list[dict]] = defaultdict(list)
    for m in summary["models"].values():
        if m["rated"]:
            by_act[m["act_fn"]].append(m)
    for act, points in sorted(by_act.items()):
        points.sort(key=lambda m: m["n_params"])
        ax.errorbar([m["n_params"] for m in points], [m["fraction"] for m in points],
                    yerr=[[m["fraction"] - m["wilson_low"] for m in points],
                          [m["wilson_high"] - m["fraction"] for m in points]],
                    marker="o", capsize=3, label=act)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("non-embedding parameters")
    ax.set_ylabel("fraction of neurons interpretable")
    ax.set_title("Blinded study (Wilson 95% intervals)" if by_act else "No ratings yet")
    if by_act:
        ax.legend()
    fig.tight_layout()
    paths.append(out / "fig4.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if summary["consistency"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        curves = sorted({(c["act_fn"], c["point"]) for c in summary["consistency"]})
        with_ln = {act for act, point in curves if point == "mid"}
        for act, point in curves:
            rows = [c for c in summary["consistency"] if (c["act_fn"], c["point"]) == (act, point)]
            label = act if act not in with_ln else f"{act} {LN_LABEL[point]}"
            buckets: dict[float, list[int]] = defaultdict(lambda: [0, 0])
            for c in rows:
                centre = (c["interval"] + 0.5) / c["intervals"]
                buckets[round(centre, 2)][0] += c["inconsistent"]
                buckets[round(centre, 2)][1] += c["labelled"]
            xs = sorted(buckets)
            ax.plot(xs, [buckets[x][0] / buckets[x][1] for x in xs], marker="o", label=label)
        ax.set_xlabel("activation interval (0 = lowest, 1 = highest)")
        ax.set_ylabel("fraction inconsistent with the hypothesis")
        ax.set_ylim(0, 1)
        ax.set_title("Examples across the activation range (section 6.4)")
        ax.legend()
        fig.tight_layout()
        paths.append(out / "fig9.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'model':<16} {'activation':<10} {'interpretable':>14} {'fraction':>9} "
             f"{'95% Wilson':>15}"]
    for name, m in summary["models"].items():
        lines.append(f"{name:<16} {m['act_fn']:<10} {m['interpretable']:>6} of {m['rated']:<5} "
                     f"{m['fraction']:>9.3f} {m['wilson_low']:>7.3f}-{m['wilson_high']:.3f}")
    several = len(summary["fisher_per_annotator"]) > 1
    for p in summary["fisher"]:
        lines.append(f"Fisher {p['a']} vs {p['b']}: odds ratio {p['odds_ratio']:.3g}, "
                     f"p = {p['p_value']:.3g}" + (" (pooled ratings)" if several else ""))
    if several:
        lines.append("pooled ratings count a neuron once per annotator; each annotator alone:")
        for name, pairs in summary["fisher_per_annotator"].items():
            lines += [f"  {name}: Fisher {p['a']} vs {p['b']}: p = {p['p_value']:.3g}"
                      for p in pairs]
    a = summary["agreement"]
    if a and a["kappa"] is not None:
        lines.append(f"{a['kind']} kappa {a['kappa']:.3f} over {a['shared_neurons']} neurons "
                     f"rated by {', '.join(a['annotators'])}")
    return "\n".join(lines)


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write summary.json, ratings.csv, checks.csv and the figures into ``out``."""
    path = Path(path)
    out = Path(out) if out else path.parent / f"{path.stem}-report"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(path)
    atomic_write_text(out / "ratings.csv", _csv(summary["ratings"]))
    atomic_write_text(out / "checks.csv", _csv(summary["checks"]))
    atomic_write_json(out / "summary.json", {k: v for k, v in summary.items()
                                             if k not in ("ratings", "checks")})
    plot_figures(summary, out)
    return out
