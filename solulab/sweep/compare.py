"""Compare the activations of a sweep: losses, the size-equivalent multiplier, plots.

The baseline's final validation losses across sizes are fitted with ``L(N) = E + A N^-alpha``
(``scaling``); each other run's multiplier is ``N_eq / N``, where ``N_eq`` is the baseline size
that reaches its loss (the paper's Figure 1 bottom). The same is done at every evaluation
point shared by the runs, for multiplier curves over training.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from solulab.errors import SolulabError
from solulab.io import atomic_write_json
from solulab.runs import rundir
from solulab.sweep import load_sweep

COMPARE_FILE = "compare.json"
BAND = (0.95, 1.05)


@dataclass
class RunSummary:
    size: str
    act: str
    n_params: int
    val_loss: float
    curve: list[tuple[int, float]]  # (tokens, val_loss)
    multiplier: float | None = None
    multiplier_low: float | None = None
    multiplier_high: float | None = None
    loss_vs_baseline: float | None = None  # nats, this run minus the baseline of its size


def read_curve(run_dir: Path) -> list[tuple[int, float]]:
    curve = []
    for line in (Path(run_dir) / rundir.METRICS).read_text().splitlines():
        record = json.loads(line)
        if "val_loss" in record:
            curve.append((record["tokens"], record["val_loss"]))
    return curve


def compare_sweep(root: Path, baseline: str = "gelu", n_bootstrap: int = 200) -> dict[str, Any]:
    """Summaries, fits and multipliers of a sweep; written to ``compare.json``."""
    from solulab.sweep import scaling

    root = Path(root)
    plan, runs = load_sweep(root)
    if not runs:
        raise SolulabError(f"{root}: no finished runs to compare")
    summaries = [
        RunSummary(key.split("/")[0], key.split("/")[1], run["n_params"], run["val_loss"],
                   read_curve(root / key))
        for key, run in sorted(runs.items(), key=lambda kv: kv[1]["n_params"])
    ]
    base = {s.size: s for s in summaries if s.act == baseline}
    if not base:
        raise SolulabError(f"{root}: no finished {baseline!r} runs to serve as the baseline")
    result: dict[str, Any] = {"baseline": baseline, "fit": None, "note": None}
    try:
        fit = scaling.fit([s.n_params for s in base.values()],
                          [s.val_loss for s in base.values()], n_bootstrap=n_bootstrap)
    except SolulabError as e:
        fit = None
        result["note"] = f"no scaling-law fit, so no multipliers: {e}"
    for s in summaries:
        if s.size in base:
            s.loss_vs_baseline = s.val_loss - base[s.size].val_loss
        if fit is not None:
            s.multiplier = fit.multiplier(s.n_params, s.val_loss)
            low, high = fit.multiplier_interval(s.n_params, s.val_loss)
            if not math.isnan(low):  # no interval without bootstrap refits (three sizes)
                s.multiplier_low, s.multiplier_high = low, high
    if fit is not None:
        result["fit"] = fit.to_dict()
        result["curves"] = multiplier_curves(summaries, baseline)
    result["runs"] = [asdict(s) for s in summaries]
    atomic_write_json(root / COMPARE_FILE, result)  # non-finite numbers are written as null
    return result


def multiplier_curves(summaries: list[RunSummary], baseline: str) -> dict[str, list]:
    """Per non-baseline run, ``[(tokens, multiplier)]`` at evaluation points all runs share,
    the baseline refitted at each point."""
    from solulab.sweep import scaling

    base = [s for s in summaries if s.act == baseline]
    shared = set.intersection(*(set(t for t, _ in s.curve) for s in summaries))
    curves: dict[str, list] = {f"{s.size}/{s.act}": [] for s in summaries if s.act != baseline}
    for tokens in sorted(shared):
        at = {id(s): dict(s.curve)[tokens] for s in summaries}
        try:
            fit = scaling.fit([s.n_params for s in base], [at[id(s)] for s in base],
                              n_bootstrap=0)
        except SolulabError:
            continue  # early in training the ladder need not be monotone yet
        for s in summaries:
            if s.act != baseline:
                curves[f"{s.size}/{s.act}"].append((tokens, fit.multiplier(s.n_params, at[id(s)])))
    return curves


def _gap(high: float | None, low: float | None) -> float:
    """An error bar's length; none where an end is unknown or infinite (stored as null). A
    percentile interval need not contain the point estimate, so a bar may also be empty."""
    return 0.0 if high is None or low is None else max(0.0, high - low)


def format_table(result: dict[str, Any]) -> str:
    """The comparison as a text table."""
    lines = [f"{'size':<10} {'act':<8} {'non-emb params':>14} {'val loss':>9} "
             f"{'vs ' + result['baseline']:>10} {'multiplier':>11} {'95% interval':>15}"]
    for r in result["runs"]:
        diff = "" if r["loss_vs_baseline"] is None else f"{r['loss_vs_baseline']:+.4f}"
        mult = "" if r["multiplier"] is None else f"{r['multiplier']:.3f}x"
        interval = ("" if r["multiplier_low"] is None
                    else f"{r['multiplier_low']:.2f}-{r['multiplier_high']:.2f}")
        lines.append(f"{r['size']:<10} {r['act']:<8} {r['n_params']:>14,} {r['val_loss']:>9.4f} "
                     f"{diff:>10} {mult:>11} {interval:>15}")
    if result.get("note"):
        lines.append(result["note"])
    return "\n".join(lines)


def _log_tokens_axis(ax) -> None:
    """A log x axis labelled at 1, 2 and 5 of each decade in engineering notation (20k, 5M),
    with no labels on the minor ticks: readable and never overlapping."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_comparison(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Figure-1-style plots: learning curves (baseline dotted, others solid) and multipliers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = result["runs"]
    sizes = sorted({r["size"] for r in runs}, key=lambda s: min(
        r["n_params"] for r in runs if r["size"] == s))
    # viridis without its last, pale yellow fifth, so that every curve stays visible
    colors = {s: plt.cm.viridis(0.8 * i / max(1, len(sizes) - 1)) for i, s in enumerate(sizes)}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        tokens, losses = zip(*r["curve"]) if r["curve"] else ((), ())
        style = ":" if r["act"] == result["baseline"] else "-"
        ax.plot(tokens, losses, style, color=colors[r["size"]], lw=1.8,
                label=f"{r['size']} {r['act']}")
    _log_tokens_axis(ax)
    ax.set_xlabel("tokens")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"Learning curves ({result['baseline']} dotted)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out_dir / "learning_curves.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if result.get("fit"):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        for act in sorted({r["act"] for r in runs} - {result["baseline"]}):
            mine = [r for r in runs if r["act"] == act and r["multiplier"] is not None]
            n = [r["n_params"] for r in mine]
            m = [r["multiplier"] for r in mine]
            err = [[_gap(r["multiplier"], r["multiplier_low"]) for r in mine],
                   [_gap(r["multiplier_high"], r["multiplier"]) for r in mine]]
            left.errorbar(n, m, yerr=err, marker="o", capsize=3, label=act)
        for key, points in result.get("curves", {}).items():
            if points:
                size = key.split("/")[0]
                tokens, mult = zip(*points)
                right.plot(tokens, mult, color=colors[size], label=key)
        for ax, xlabel in ((left, "non-embedding parameters"), (right, "tokens")):
            ax.axhspan(*BAND, color="grey", alpha=0.2, label="0.95-1.05x")
            ax.axhline(1.0, color="black", lw=0.8, ls=":")
            _log_tokens_axis(ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"model-size equivalent (x {result['baseline']})")
            ax.legend(fontsize=7)
        left.set_title("Final multiplier by size")
        right.set_title("Multiplier over training")
        fig.tight_layout()
        paths.append(out_dir / "multiplier.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
