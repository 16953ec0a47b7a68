"""``solulab report``: one static HTML file with the comparison of a sweep, plots embedded.

It reads only what earlier stages wrote: ``compare.json`` (recomputed when missing), each run's
``evals.json``, and each run's neuron store summary where one exists, so it opens anywhere.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from solulab.autointerp.run import load_explanations
from solulab.evals.summary import collect_evals, plot_evals, side_by_side
from solulab.io import atomic_write_text
from solulab.stats import proportion
from solulab.sweep.compare import COMPARE_FILE, compare_sweep, plot_comparison

REPORT_FILE = "report.html"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
img { max-width: 100%; }
.note { color: #666; font-size: 13px; }
"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def loss_section(result: dict[str, Any], plots: list[Path]) -> str:
    rows = [[r["size"], r["act"], f"{r['n_params']:,}", f"{r['val_loss']:.4f}",
             _fmt(r["loss_vs_baseline"], "+.4f"), _fmt(r["multiplier"], ".3f"),
             "" if r["multiplier_low"] is None
             else f"{r['multiplier_low']:.2f} to {r['multiplier_high']:.2f}"]
            for r in result["runs"]]
    header = ["size", "activation", "non-embedding params", "val loss",
              f"vs {result['baseline']} (nats)", "size-equivalent multiplier", "95% interval"]
    parts = ["<h2>Loss and model-size equivalent</h2>", _table(header, rows)]
    if result.get("fit"):
        fit = result["fit"]
        parts.append(f"<p class=note>Baseline fit: L(N) = {fit['E']:.3f} + {fit['A']:.4g} "
                     f"N<sup>-{fit['alpha']:.3f}</sup> on non-embedding parameters. The paper "
                     "finds SoLU-LN between 0.95x and 1.05x at every size.</p>")
    if result.get("note"):
        parts.append(f"<p class=note>{html.escape(result['note'])}</p>")
    if result.get("fit") and all(r["multiplier_low"] is None for r in result["runs"]):
        parts.append("<p class=note>The 95% interval column is empty: a law with three "
                     "parameters fitted through three sizes passes through every point, and "
                     "every bootstrap resample that can still fit it is the same three runs, so "
                     "there is no spread to report. More sizes, or several seeds of a size "
                     "(<code>solulab replicate --seeds</code>), give intervals.</p>")
    if result.get("fit"):
        parts.append("<p class=note>The baseline's own multipliers say how far each baseline "
                     "run lies from the fitted law: the fit's error, not an effect. Read a "
                     "SoLU multiplier against the baseline's at the same size.</p>")
    parts.extend(_img(p) for p in plots)
    return "\n".join(parts)


def eval_section(root: Path, result: dict[str, Any], plot_dir: Path) -> str:
    points = collect_evals(root, result["runs"])
    if not points:
        return "<h2>Downstream evaluations</h2><p class=note>No evaluations yet: run " \
               "<code>solulab eval RUN</code>.</p>"
    header, rows = side_by_side(points, result["baseline"])
    plot = plot_evals(points, result["baseline"], plot_dir / "evals.png")
    return "\n".join(["<h2>Downstream evaluations</h2>", _table(header, rows),
                      "<p class=note>Accuracy ± standard error; the last columns are the "
                      "difference from the baseline at the same size.</p>", _img(plot)])


def ranked_explained(explanations: dict[tuple[int, int], dict]) -> list:
    """The auto-interpretable neurons, the one whose rule best predicts its firing over the
    whole range (AUROC on held-out text) first."""
    return sorted(((key, e) for key, e in explanations.items()
                   if e["interpretable"] and e["auroc"] is not None),
                  key=lambda item: (-item[1]["auroc"], item[0]))


def neuron_worth_reading(run: Path) -> tuple[int, int, str] | None:
    """``(layer, neuron, explanation)`` of the run's best-explained neuron, if it has one."""
    ranked = ranked_explained(load_explanations(Path(run) / "neurons"))
    if not ranked:
        return None
    (layer, neuron), e = ranked[0]
    return layer, neuron, e["description"]


def best_explained(run: str, explanations: dict[tuple[int, int], dict], n: int = 5) -> list:
    """Rows for the ``n`` best-explained neurons (``ranked_explained``)."""
    ranked = ranked_explained(explanations)[:n]
    return [[run, f"{layer}:{neuron}", e["description"], f"{e['coverage']:.0%}",
             f"{e['auroc']:.3f}", "n/a" if e["simulation"] is None else f"{e['simulation']:.3f}"]
            for (layer, neuron), e in ranked]


def neuron_section(root: Path, result: dict[str, Any]) -> str:
    rows, best = [], []
    for r in result["runs"]:
        store = root / r["size"] / r["act"] / "neurons"
        if (store / "summary.json").is_file():
            data = json.loads((store / "summary.json").read_text())
            explanations = load_explanations(store)
            auto = ""
            if explanations:
                labels = [e["interpretable"] for e in explanations.values()]
                p = proportion(sum(labels), len(labels))
                auto = f"{p.fraction:.1%} ({p.low:.2f} to {p.high:.2f})"
                best += best_explained(f"{r['size']}/{r['act']}", explanations)
            rows.append([r["size"], r["act"], data.get("tokens", ""), data.get("layers", ""),
                         data.get("d_mlp", ""), auto])
    if not rows:
        return ""
    parts = ["<h2>Neuron collections</h2>", _table(
        ["size", "activation", "tokens", "layers", "neurons per layer",
         "auto-interpretable (95% Wilson)"], rows),
        "<p class=note>Auto-interpretable: one rule explains at least 80% of a neuron's top 20 "
        "examples, 85% for a rule that names no token (<code>solulab autointerp RUN</code>).</p>"]
    if best:
        parts += ["<h3>Best-explained neurons per run</h3>", _table(
            ["run", "layer:neuron", "explanation", "top-20 coverage", "AUROC (held out)",
             "simulation"], best),
            "<p class=note>AUROC of the rule predicting where the neuron fires above half its "
            "max on held-out text (a random rule scores 0.5); every neuron's explanation is on "
            "its page in <code>solulab serve</code>.</p>"]
    return "\n".join(parts)


def summary_section(root: Path, result: dict[str, Any]) -> str:
    """What was measured, what it can and cannot show, and where to start reading."""
    runs = result["runs"]
    largest = max(runs, key=lambda r: r["n_params"])["size"]
    sizes = sorted({r["size"] for r in runs}, key=lambda size: next(
        r["n_params"] for r in runs if r["size"] == size))
    fractions = []
    for r in (r for r in runs if r["size"] == largest):
        labels = [e["interpretable"] for e in load_explanations(
            root / largest / r["act"] / "neurons").values()]
        if labels:
            p = proportion(sum(labels), len(labels))
            fractions.append(f"{r['act']} {p.fraction:.0%} ({p.low:.0%}-{p.high:.0%})")
    parts = ["<h2>What this report shows</h2>",
             f"<p>{len(runs)} models: sizes {', '.join(sizes)} × "
             f"{', '.join(sorted({r['act'] for r in runs}))}, trained with identical settings "
             "and one seed each; their losses, the baseline's scaling law and each model's "
             "size-equivalent multiplier, offline evals, and each model's neurons explained by "
             "the automated verdict.</p>"]
    if fractions:
        parts.append(f"<p>Neurons of the {largest} models that one rule explains "
                     f"(automated verdict, Wilson 95%): {', '.join(fractions)}.</p>")
    parts.append(
        "<p class=note>What it cannot show: models this small, trained this briefly and once "
        "each, cannot test the paper's claim. Differences of a few hundredths of a nat or a few "
        "points of interpretability are within what another seed would move, and no person has "
        "rated these neurons. <code>solulab replicate</code> trains larger models with several "
        "seeds and creates the blinded study; <code>docs/replication.md</code> in the solulab "
        "repository reports what that showed on this kind of machine.</p>")
    best = [(r["act"], neuron_worth_reading(root / largest / r["act"]))
            for r in runs if r["size"] == largest and r["act"] != result["baseline"]]
    for act, pick in best:
        if pick is not None:
            layer, neuron, description = pick
            run = root / largest / act
            parts.append(f"<p>A neuron worth reading first: layer {layer}, neuron {neuron} of "
                         f"{html.escape(f'{largest}/{act}')} ({html.escape(description)}): "
                         f"<code>solulab neurons show {html.escape(str(run))} --layer {layer} "
                         f"--neuron {neuron}</code></p>")
    return "\n".join(parts)


def write_report(root: Path, out: Path | None = None) -> Path:
    """Write ``report.html`` for a sweep directory; returns its path."""
    root = Path(root)
    result = (json.loads((root / COMPARE_FILE).read_text()) if (root / COMPARE_FILE).is_file()
              else compare_sweep(root))
    plots = plot_comparison(result, root / "plots")
    body = "\n".join([
        f"<h1>solulab report: {html.escape(root.name)}</h1>",
        summary_section(root, result),
        loss_section(result, plots),
        eval_section(root, result, root / "plots"),
        neuron_section(root, result),
    ])
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>solulab report</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
    path = Path(out) if out else root / REPORT_FILE
    atomic_write_text(path, page)
    return path
