"""Evaluation results of a sweep side by side: each activation against the baseline per task and
size (the paper's Figure 2), as a table and a plot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solulab.runs import rundir


@dataclass(frozen=True)
class EvalPoint:
    size: str
    act: str
    n_params: int
    task: str
    accuracy: float
    stderr: float
    n: int
    chance: float


def collect_evals(root: Path, runs: list[dict[str, Any]]) -> list[EvalPoint]:
    """Every run's ``evals.json`` results; ``runs`` are ``compare.json``'s run entries."""
    points = []
    for r in runs:
        path = Path(root) / r["size"] / r["act"] / rundir.EVALS
        if not path.is_file():
            continue
        for task, t in sorted(json.loads(path.read_text()).items()):
            points.append(EvalPoint(r["size"], r["act"], r["n_params"], task, t["accuracy"],
                                    t["stderr"], t["n"], t["chance"]))
    return points


def side_by_side(points: list[EvalPoint], baseline: str) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per (task, size), ``accuracy +- s.e.`` per activation and
    each other activation's difference from the baseline."""
    acts = sorted({p.act for p in points}, key=lambda a: (a != baseline, a))
    by_key = {(p.task, p.size, p.act): p for p in points}
    smallest = {}  # the activations of one size differ a little in parameters: one row each
    for p in points:
        smallest[p.task, p.size] = min(p.n_params, smallest.get((p.task, p.size), p.n_params))
    order = sorted((task, n, size) for (task, size), n in smallest.items())
    header = ["task", "size", *acts, *(f"{a} - {baseline}" for a in acts if a != baseline)]
    rows = []
    for task, _, size in order:
        cells = [task, size]
        for act in acts:
            p = by_key.get((task, size, act))
            cells.append("" if p is None else f"{p.accuracy:.3f} ± {p.stderr:.3f}")
        base = by_key.get((task, size, baseline))
        for act in acts:
            if act == baseline:
                continue
            p = by_key.get((task, size, act))
            cells.append("" if p is None or base is None else f"{p.accuracy - base.accuracy:+.3f}")
        rows.append(cells)
    return header, rows


def plot_evals(points: list[EvalPoint], baseline: str, path: Path) -> Path | None:
    """Accuracy against model size per task, one line per activation with standard-error bars
    (baseline dotted) and chance as a grey line; None when there is nothing to plot."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({p.task for p in points})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [p for p in points if p.task == task]
        for act in sorted({p.act for p in mine}):
            line = sorted((p for p in mine if p.act == act), key=lambda p: p.n_params)
            ax.errorbar([p.n_params for p in line], [p.accuracy for p in line],
                        yerr=[p.stderr for p in line], marker="o", capsize=3,
                        ls=":" if act == baseline else "-", label=act)
        ax.axhline(mine[0].chance, color="grey", lw=0.8, label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters")
        ax.set_ylabel("accuracy")
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
