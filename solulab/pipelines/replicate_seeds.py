"""A replication's figures across seeds and layers: how much the loss, the size-equivalent
multiplier and the automated fraction interpretable move from one training seed to the next,
and the fraction interpretable of every layer (the paper's Figure 4, per layer).

``runs`` maps each seed to its largest models (``{seed: {act: run}}``). The multiplier of a
seed's model is read off a scaling law fitted through the baseline's smaller sizes and that
seed's own baseline at the largest size, so the baseline's seed-to-seed variation is in it too.
Spreads are the mean, the standard deviation, the range and a Student-t 95% interval of the
mean over seeds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from solulab.errors import SolulabError
from solulab.io import atomic_write_png
from solulab.runs import rundir
from solulab.sweep import scaling

Runs = dict[int, dict[str, Path]]
Verdicts = dict[int, dict[str, dict[tuple[int, int], bool]]]


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd, min, max and the t 95% interval of the mean (None below two)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(x):
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None, "low": None,
                "high": None}
    out = {"n": int(len(x)), "mean": float(x.mean()), "min": float(x.min()),
           "max": float(x.max()), "sd": None, "low": None, "high": None}
    if len(x) > 1:
        sd = float(x.std(ddof=1))
        half = float(scipy.stats.t.ppf(0.975, len(x) - 1)) * sd / math.sqrt(len(x))
        out.update(sd=sd, low=out["mean"] - half, high=out["mean"] + half)
    return out


def seed_losses(runs: Runs) -> dict[str, dict[int, float]]:
    """``{act: {seed: validation loss}}`` of the largest models."""
    losses: dict[str, dict[int, float]] = defaultdict(dict)
    for seed, by_act in sorted(runs.items()):
        for act, run in by_act.items():
            losses[act][seed] = float(rundir.read_record(run)["val_loss"])
    return dict(losses)


def seed_multipliers(comparison: dict[str, Any], runs: Runs, largest: str,
                     baseline: str = "gelu") -> dict[str, dict[int, float]] | None:
    """``{act: {seed: multiplier}}``, each seed against its own law; None without a fit."""
    smaller = [(r["n_params"], r["val_loss"]) for r in comparison["runs"]
               if r["act"] == baseline and r["size"] != largest]
    losses = seed_losses(runs)
    n = next(r["n_params"] for r in comparison["runs"] if r["size"] == largest)
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for seed in sorted(runs):
        try:
            law = scaling.fit([p for p, _ in smaller] + [n],
                              [v for _, v in smaller] + [losses[baseline][seed]], n_bootstrap=0)
        except SolulabError:
            return None
        for act in losses:
            out[act][seed] = law.multiplier(n, losses[act][seed])
    return dict(out)


def layer_fractions(verdicts: Verdicts) -> dict[str, dict[int, dict[int, float]]]:
    """``{act: {layer: {seed: fraction auto-interpretable}}}`` over every neuron."""
    out: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for seed, by_act in sorted(verdicts.items()):
        for act, by_neuron in by_act.items():
            for layer in sorted({layer for layer, _ in by_neuron}):
                values = [v for (lay, _), v in by_neuron.items() if lay == layer]
                out[act][layer][seed] = sum(values) / len(values)
    return {act: dict(layers) for act, layers in out.items()}


def plot_layer_fractions(fractions: dict[str, dict[int, dict[int, float]]], path: Path) -> None:
    """Each seed a point, the mean across seeds a line with its range shaded, per activation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (act, layers) in enumerate(sorted(fractions.items())):
        colour = f"C{i}"
        xs = sorted(layers)
        for x in xs:
            ys = list(layers[x].values())
            ax.scatter([x + 0.05 * (i - 0.5)] * len(ys), ys, color=colour, s=18, alpha=0.7)
        means = [np.mean(list(layers[x].values())) for x in xs]
        lows = [min(layers[x].values()) for x in xs]
        highs = [max(layers[x].values()) for x in xs]
        ax.plot(xs, means, color=colour, marker="o", label=f"{act} (mean over seeds)")
        ax.fill_between(xs, lows, highs, color=colour, alpha=0.15)
    ax.set_xticks(sorted({x for layers in fractions.values() for x in layers}))
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction auto-interpretable")
    ax.set_title("Automated verdict by layer: each seed a point, range shaded")
    ax.legend()
    fig.tight_layout()
    atomic_write_png(fig, path)
    plt.close(fig)


def _fmt(s: dict[str, Any], digits: int, suffix: str = "") -> str:
    if s["mean"] is None:
        return "-"
    text = f"{s['mean']:.{digits}f}{suffix}"
    if s["sd"] is not None:
        text += (f" ± {s['sd']:.{digits}f} (range {s['min']:.{digits}f}-{s['max']:.{digits}f};"
                 f" 95% {s['low']:.{digits}f}-{s['high']:.{digits}f})")
    return text


def seed_section(comparison: dict[str, Any], runs: Runs, verdicts: Verdicts, largest: str,
                 figures: Path, table) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines and ``results.json`` figures for the seeds and layers of a replication;
    ``table(header, rows)`` renders a Markdown table."""
    seeds = sorted(runs)
    losses = seed_losses(runs)
    multipliers = seed_multipliers(comparison, runs, largest)
    fractions = layer_fractions(verdicts)
    acts = list(losses)
    base = "gelu"
    rows = []
    for act in acts:
        delta = spread([losses[act][s] - losses[base][s] for s in seeds]) if act != base else None
        mult = spread(list(multipliers[act].values())) if multipliers else None
        rows.append([act, *(f"{losses[act][s]:.4f}" for s in seeds),
                     _fmt(spread(list(losses[act].values())), 4),
                     "-" if delta is None else _fmt(delta, 4),
                     "-" if mult is None else _fmt(mult, 2, "x")])
    lines = [f"## Across seeds: {len(seeds)} seeds of the {largest} models", "",
             "Mean ± sample standard deviation over seeds (range; Student-t 95% interval of the "
             "mean). The loss difference is paired by seed; each seed's multiplier is read off a "
             "scaling law through the smaller baselines and that seed's own baseline.", "",
             *table(["activation", *(f"loss, seed {s}" for s in seeds), "loss over seeds",
                     "vs gelu (nats)", "size-equivalent multiplier"], rows), ""]
    layer_rows = []
    for layer in sorted({x for layers in fractions.values() for x in layers}):
        for act in acts:
            by_seed = fractions[act][layer]
            layer_rows.append([layer, act, *(f"{by_seed[s]:.1%}" for s in seeds),
                               _fmt(spread([100 * v for v in by_seed.values()]), 1, "%")])
    plot_layer_fractions(fractions, figures / "fig4_layers_auto.png")
    lines += [f"## Automated verdict by layer, every neuron of the {largest} models", "",
              *table(["layer", "activation", *(f"seed {s}" for s in seeds), "over seeds"],
                     layer_rows), "", "![Figure 4 by layer](figures/fig4_layers_auto.png)"]
    numbers = {"seeds": seeds, "losses": {a: {str(s): v for s, v in d.items()}
                                          for a, d in losses.items()},
               "multipliers": None if multipliers is None else {
                   a: {str(s): v for s, v in d.items()} for a, d in multipliers.items()},
               "layer_fractions": {a: {str(layer): {str(s): v for s, v in d.items()}
                                       for layer, d in layers.items()}
                                   for a, layers in fractions.items()}}
    return lines, numbers
