"""``solulab autointerp``: explain every neuron of a run (``solulab autointerp RUN``), or compare
runs and human labels (``solulab autointerp compare RUN_A RUN_B [--study DB]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from solulab.autointerp import FIRE_FRACTION, HELD_OUT_TOKENS
from solulab.cli.exits import reports_errors


class RunByDefault(TyperGroup):
    """A group whose first argument, when it names no subcommand, is a run for ``run``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                  help="Automated interpretability: explain and score every neuron by program.")


@app.command("run")
@reports_errors
def run_command(
    run: Path = typer.Argument(..., help="Run directory with a neuron store."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers (default: all)."),
    tokens: int = typer.Option(HELD_OUT_TOKENS, help="Held-out tokens for the whole-range check."),
    fire_fraction: float = typer.Option(FIRE_FRACTION,
                                        help="Fires above this fraction of its max."),
    pattern: list[str] = typer.Option([], help="Extra regex rules (repeatable)."),
    simulator: str = typer.Option(
        "rule", help="'rule', or a directory with a local causal LM (a solulab run or a "
        "Hugging Face model) that predicts activations from each explanation."),
    simulate_tokens: int = typer.Option(256, help="Held-out tokens an LM simulator scores."),
):
    """Explain every neuron by a rule (the default command: `solulab autointerp RUN`)."""
    from solulab.autointerp.run import RESULTS_FILE, autointerp
    from solulab.autointerp.simulate import make_simulator
    from solulab.cli.neurons import parse_layers
    from solulab.neurons.collect import open_store
    from solulab.stats import proportion

    results = autointerp(run, parse_layers(layers), tokens, fire_fraction, pattern,
                         make_simulator(simulator, simulate_tokens))
    by_layer: dict[int, list] = {}
    for key, e in results.items():
        by_layer.setdefault(int(key.split(":")[0]), []).append(e)
    typer.echo(f"{'layer':>5} {'neurons':>8} {'auto-interpretable':>19} {'95% Wilson':>13} "
               f"{'median AUROC':>13} {'median simulation':>18}")
    for layer, explanations in sorted(by_layer.items()):
        p = proportion(sum(e.interpretable for e in explanations), len(explanations))
        typer.echo(f"{layer:>5} {p.n:>8} {p.fraction:>19.1%} {p.low:>6.2f}-{p.high:<6.2f} "
                   f"{median([e.auroc for e in explanations]):>13} "
                   f"{median([e.simulation for e in explanations]):>18}")
    typer.echo("random rule of the same frequency: AUROC 0.5")
    typer.echo(f"explanations: {open_store(run).path / RESULTS_FILE}  "
               f"(read one with `solulab neurons show {run} --layer L --neuron N`)")


def median(values: list[float]) -> str:
    present = sorted(v for v in values if v == v)
    return f"{present[len(present) // 2]:.3f}" if present else "-"


@app.command("compare")
@reports_errors
def compare_command(
    runs: list[Path] = typer.Argument(..., help="Run directories, each after autointerp."),
    study: Optional[Path] = typer.Option(None, help="Study database: agreement with humans."),
):
    """Fraction auto-interpretable per run (Wilson), Fisher per pair, kappa with human labels."""
    from solulab.autointerp.agreement import compare_runs, format_comparison

    typer.echo(format_comparison(compare_runs(runs, study)))


@reports_errors
def regex_command(
    run: Path = typer.Argument(..., help="Run directory with a neuron store."),
    pattern: str = typer.Option(..., help="Regular expression over each token's text."),
    top: int = typer.Option(20, help="Neurons to list."),
    tokens: int = typer.Option(HELD_OUT_TOKENS, help="Held-out tokens."),
    fire_fraction: float = typer.Option(FIRE_FRACTION,
                                        help="Fires above this fraction of its max."),
):
    """Rank neurons by how well PATTERN predicts where they fire (F1, then AUROC)."""
    from solulab.autointerp.run import rank_by_pattern

    ranked = rank_by_pattern(run, pattern, None, tokens, fire_fraction, top)
    typer.echo(f"{'layer':>5} {'neuron':>7} {'F1':>6} {'precision':>10} {'recall':>7} "
               f"{'AUROC':>7}")
    for r in ranked:
        typer.echo(f"{r['layer']:>5} {r['neuron']:>7} {r['f1']:>6.3f} {r['precision']:>10.3f} "
                   f"{r['recall']:>7.3f} {r['auroc']:>7.3f}")
