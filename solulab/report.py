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
from solulab.evals.compare import collect_evals, plot_evals, side_by_side
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


def best_explained(run: str, explanations: dict[tuple[int, int], dict], n: int = 5) -> list:
    """Rows for the ``n`` auto-interpretable neurons whose rule best predicts their firing over
    the whole range (AUROC on held-out text)."""
    ranked = sorted(((key, e) for key, e in explanations.items()
                     if e["interpretable"] and e["auroc"] is not None),
                    key=lambda item: -item[1]["auroc"])[:n]
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
        "examples (<code>solulab autointerp RUN</code>).</p>"]
    if best:
        parts += ["<h3>Best-explained neurons per run</h3>", _table(
            ["run", "layer:neuron", "explanation", "top-20 coverage", "AUROC (held out)",
             "simulation"], best),
            "<p class=note>AUROC of the rule predicting where the neuron fires above half its "
            "max on held-out text (a random rule scores 0.5); every neuron's explanation is on "
            "its page in <code>solulab serve</code>.</p>"]
    return "\n".join(parts)


def write_report(root: Path, out: Path | None = None) -> Path:
    """Write ``report.html`` for a sweep directory; returns its path."""
    root = Path(root)
    result = (json.loads((root / COMPARE_FILE).read_text()) if (root / COMPARE_FILE).is_file()
              else compare_sweep(root))
    plots = plot_comparison(result, root / "plots")
    body = "\n".join([
        f"<h1>solulab report: {html.escape(root.name)}</h1>",
        loss_section(result, plots),
        eval_section(root, result, root / "plots"),
        neuron_section(root, result),
    ])
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>solulab report</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
    path = Path(out) if out else root / REPORT_FILE
    atomic_write_text(path, page)
    return path
