"""``solulab study report``: unblind a study and give the paper's statistics and figures.

Per model: the fraction of ratings INTERPRETABLE with a Wilson 95% interval; each pair of models
compared with Fisher's exact test, on the pooled ratings (a neuron counts once per annotator who
rated it, which overstates the evidence when several did) and for each annotator alone (one
rating per neuron); per-annotator fractions; agreement on neurons that every
annotator rated (Cohen's kappa for two annotators, Fleiss' for more); a Figure-4-style plot
(fraction interpretable against model size, one line per activation); for the section 6.4
labels, the fraction of examples inconsistent with the annotator's hypothesis by activation
interval, before and after the LayerNorm (Figure 9); CSVs of every rating and label; the
blinding audit (``solulab.study.audit``: could the models be told apart from what annotators saw?)
and which display they saw.

Ratings count once their annotator pressed Finish (the others are listed, and counted only with
``unfinished=True``); ratings given without their neuron ever being opened are flagged. The
report's files are readable by their owner only, like the study.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from solulab.io import FILE_MODE, atomic_write_json, atomic_write_png, atomic_write_text
from solulab.stats import cohens_kappa, fisher_exact_2x2, fleiss_kappa, proportion
from solulab.study import db
from solulab.study.audit import audit, format_audit
from solulab.study.display import DESCRIPTIONS

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


def by_activation_and_layer(ratings: list[dict]) -> dict[str, Any]:
    """Ratings pooled per activation (over the models, e.g. seeds, that share it) and per
    (activation, layer), with Fisher's exact test between activations at each layer."""
    acts = sorted({r["act_fn"] for r in ratings})
    layers = sorted({r["layer"] for r in ratings})
    per_layer = {layer: {act: _share([r for r in ratings if (r["act_fn"], r["layer"]) ==
                                      (act, layer)]) for act in acts} for layer in layers}
    activations = {act: _share([r for r in ratings if r["act_fn"] == act]) for act in acts}
    return {"activations": activations, "fisher_activations": fisher_pairs(activations),
            "layers": [{"act_fn": act, "layer": layer, **share}
                       for layer, shares in per_layer.items() for act, share in shares.items()],
            "fisher_layers": [{"layer": layer, **pair} for layer, shares in per_layer.items()
                              for pair in fisher_pairs(shares)]}


def summarise(path: str | Path, unfinished: bool = False) -> dict[str, Any]:
    """Every statistic of the study as a dict (also written to ``summary.json``)."""
    conn = db.connect(path)
    try:
        ratings, checks = db.unblinded_ratings(conn, unfinished), db.unblinded_check_labels(conn)
        models, not_finished = db.models(conn), db.unfinished_annotators(conn)
    finally:
        conn.close()
    for r in ratings:
        r["opened"] = r["seconds"] > 0
    per_model = {m["name"]: {**m, **_share([r for r in ratings if r["model"] == m["name"]])}
                 for m in models}
    per_annotator = {f"{name}/{model}": _share(rows) for (name, model), rows in itertools.groupby(
        sorted(ratings, key=lambda r: (r["annotator"], r["model"])),
        key=lambda r: (r["annotator"], r["model"])) for rows in [list(rows)]}
    annotators = sorted({r["annotator"] for r in ratings})
    alone = {name: fisher_pairs({m: per_annotator[f"{name}/{m}"] for m in per_model
                                 if f"{name}/{m}" in per_annotator}) for name in annotators}
    alone_by_activation = {name: by_activation_and_layer(
        [r for r in ratings if r["annotator"] == name])["fisher_activations"]
        for name in annotators}
    consistency = defaultdict(lambda: [0, 0])  # (model, act, point, interval) -> [bad, n]
    for c in checks:
        key = (c["model"], c["act_fn"], c["point"], c["interval_index"], c["interval_count"])
        consistency[key][0] += 1 - c["consistent"]
        consistency[key][1] += 1
    blinding = audit(path)
    return {"display": blinding["display"], "display_description": DESCRIPTIONS.get(
                blinding["display"], ""), "audit": blinding,
            "unfinished_annotators": not_finished, "unfinished_counted": unfinished,
            "unopened": [{k: r[k] for k in ("annotator", "model", "layer", "neuron")}
                         for r in ratings if not r["opened"]],
            "models": per_model, "fisher": fisher_pairs(per_model), "fisher_per_annotator": alone,
            "fisher_per_annotator_activation": alone_by_activation,
            "models_share_activations": len({m["act_fn"] for m in models}) < len(models),
            "per_annotator": per_annotator, **by_activation_and_layer(ratings),
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


def plot_figures(summary: dict[str, Any], out: Path, mode: int = FILE_MODE) -> list[Path]:
    """``fig4.png`` (fraction interpretable against size per activation) and, with 6.4 labels,
    ``fig9.png`` (fraction inconsistent by activation interval, pre- vs post-LN), written with
    ``mode``."""
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
    atomic_write_png(fig, paths[-1], mode)
    plt.close(fig)

    if len({row["layer"] for row in summary["layers"]}) > 1:
        paths.append(out / "fig4_layers.png")
        fig = plot_layers(summary["layers"], plt)
        atomic_write_png(fig, paths[-1], mode)
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
        atomic_write_png(fig, paths[-1], mode)
        plt.close(fig)
    return paths


def plot_layers(rows: list[dict[str, Any]], plt):
    """Figure 4 per layer: the fraction rated interpretable at each layer, one line per
    activation, with Wilson 95% intervals."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, act in enumerate(sorted({r["act_fn"] for r in rows})):
        points = sorted((r for r in rows if r["act_fn"] == act and r["rated"]),
                        key=lambda r: r["layer"])
        ax.errorbar([r["layer"] + 0.06 * i for r in points], [r["fraction"] for r in points],
                    yerr=[[r["fraction"] - r["wilson_low"] for r in points],
                          [r["wilson_high"] - r["fraction"] for r in points]],
                    marker="o", capsize=3, label=act)
    ax.set_xticks(sorted({r["layer"] for r in rows}))
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction rated interpretable")
    ax.set_title("Blinded study by layer (Wilson 95% intervals)")
    ax.legend()
    fig.tight_layout()
    return fig


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"display: {summary['display']} ({summary['display_description']})"]
    if summary["unfinished_annotators"]:
        how = "counted" if summary["unfinished_counted"] else "left out (--include-unfinished)"
        lines.append(f"not finished, their ratings {how}: "
                     f"{', '.join(summary['unfinished_annotators'])}")
    if summary["unopened"]:
        lines.append(f"{len(summary['unopened'])} ratings were given without their neuron being "
                     "opened (column `opened` of ratings.csv)")
    lines.append(f"{'model':<16} {'activation':<10} {'interpretable':>14} {'fraction':>9} "
                 f"{'95% Wilson':>15}")
    for name, m in summary["models"].items():
        if not m["rated"]:
            lines.append(f"{name:<16} {m['act_fn']:<10} {'no ratings yet':>14}")
            continue
        lines.append(f"{name:<16} {m['act_fn']:<10} {m['interpretable']:>6} of {m['rated']:<5} "
                     f"{m['fraction']:>9.3f} {m['wilson_low']:>7.3f}-{m['wilson_high']:.3f}")
    by_activation = summary["models_share_activations"]  # seeds: compare activations
    if by_activation:
        lines.append("by activation (its models pooled):")
        for act, m in summary["activations"].items():
            lines.append(f"  {act:<14} {m['interpretable']:>6} of {m['rated']:<5} "
                         f"{m['fraction']:>9.3f} {m['wilson_low']:>7.3f}-{m['wilson_high']:.3f}")
    tests = summary["fisher_activations" if by_activation else "fisher"]
    alone = summary["fisher_per_annotator_activation" if by_activation
                    else "fisher_per_annotator"]
    several = len(alone) > 1
    for p in tests:
        lines.append(f"Fisher {p['a']} vs {p['b']}: odds ratio {p['odds_ratio']:.3g}, "
                     f"p = {p['p_value']:.3g}" + (" (pooled ratings)" if several else ""))
    if several:
        lines.append("pooled ratings count a neuron once per annotator; each annotator alone:")
        for name, pairs in alone.items():
            lines += [f"  {name}: Fisher {p['a']} vs {p['b']}: p = {p['p_value']:.3g}"
                      for p in pairs]
    a = summary["agreement"]
    if a and a["kappa"] is not None:
        lines.append(f"{a['kind']} kappa {a['kappa']:.3f} over {a['shared_neurons']} neurons "
                     f"rated by {', '.join(a['annotators'])}")
    if len({row["layer"] for row in summary["layers"]}) > 1:
        lines.append("by layer (all models of an activation pooled):")
        for row in summary["layers"]:
            if row["rated"]:
                lines.append(f"  layer {row['layer']} {row['act_fn']:<10} {row['interpretable']:>4}"
                             f" of {row['rated']:<4} {row['fraction']:.3f} "
                             f"({row['wilson_low']:.3f}-{row['wilson_high']:.3f})")
        lines += [f"  layer {p['layer']}: Fisher {p['a']} vs {p['b']}: p = {p['p_value']:.3g}"
                  for p in summary["fisher_layers"]]
    return "\n".join(lines + format_audit(summary["audit"]))


def write_report(path: str | Path, out: str | Path | None = None,
                 unfinished: bool = False) -> tuple[Path, dict[str, Any]]:
    """Write summary.json, ratings.csv, checks.csv and the figures into ``out`` (owner-only,
    like the study); returns ``out`` and the summary. Nothing is created for a path that is
    not a study."""
    path = Path(path)
    summary = summarise(path, unfinished)
    out = Path(out) if out else path.parent / f"{path.stem}-report"
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    atomic_write_text(out / "ratings.csv", _csv(summary["ratings"]), db.OWNER_ONLY)
    atomic_write_text(out / "checks.csv", _csv(summary["checks"]), db.OWNER_ONLY)
    atomic_write_json(out / "summary.json", {k: v for k, v in summary.items()
                                             if k not in ("ratings", "checks")}, db.OWNER_ONLY)
    plot_figures(summary, out, db.OWNER_ONLY)
    return out, summary
