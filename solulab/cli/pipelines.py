"""The pipelines: ``demo`` and ``replicate``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from solulab.cli.exits import reports_errors, reports_interruption
from solulab.cli.options import REPLICATE, TRACKERS, split
from solulab.errors import SolulabError
from solulab.pipelines.replicate_plan import Request
from solulab.runs.tracking import parse_trackers


@reports_errors
def demo(
    out: Path = typer.Option(Path("solulab-demo"), help="Where the demo writes everything."),
    steps: int = typer.Option(400, help="Optimizer steps per model."),
):
    """The whole pipeline on the built-in corpus: sweep, compare, evals, report."""
    from solulab.pipelines.demo import DemoSettings, run_demo

    run_demo(out, DemoSettings(steps=steps))


@reports_errors
def replicate(
    corpus: Path = typer.Option(..., help="Corpus directory (from `solulab corpus build`)."),
    out: Path = typer.Option(..., help="Where everything goes; run again to continue."),
    budget_minutes: Optional[float] = typer.Option(
        None, help="Minutes of training for all models together (or give --plan)."),
    plan: Optional[Path] = typer.Option(None, help="A replicate.json to redo without timing."),
    acts: str = typer.Option(",".join(REPLICATE["acts"]),
                             help="Activations; gelu is the baseline."),
    n_ctx: int = typer.Option(REPLICATE["n_ctx"]),
    batch_size: int = typer.Option(REPLICATE["batch_size"]),
    lr: float = typer.Option(REPLICATE["lr"]),
    seed: int = typer.Option(REPLICATE["seed"]),
    neurons_per_model: int = typer.Option(
        REPLICATE["neurons_per_model"],
        help="Neurons of each activation in the study, split evenly over the seeds."),
    collect_tokens: int = typer.Option(REPLICATE["collect_tokens"],
                                       help="Validation tokens per neuron store."),
    annotators: str = typer.Option(",".join(REPLICATE["annotators"]),
                                   help="Comma-separated annotator names."),
    layers: int = typer.Option(REPLICATE["layers"], help="Layers of every model: the sizes "
                               "tried are LAYERSx32, LAYERSx64, ...; 2 or more reach past the "
                               "first layer, 4 where the budget allows."),
    seeds: int = typer.Option(REPLICATE["seeds"], help="Seeds of the largest size (seed, "
                              "seed+1, ...): the spread of loss, multiplier and fractions."),
    base_url: str = typer.Option("http://127.0.0.1:8000", help="Where `solulab serve` runs."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda if present)."),
    log: Optional[list[str]] = TRACKERS,
):
    """GELU vs SoLU-LN (and the LayerNorm-only ablation) at the largest size the budget
    trains well, with several seeds of it: loss, multipliers, automated verdicts per layer, a
    blinded study stratified by layer, results.md."""
    from dataclasses import replace

    from solulab.pipelines.replicate import replicate
    from solulab.pipelines.replicate_plan import read_plan_file

    if (budget_minutes is None) == (plan is None):
        raise SolulabError("give exactly one of --budget-minutes or --plan")
    saved = read_plan_file(plan) if plan is not None else None
    if saved is not None:
        request = replace(saved.request, corpus=corpus)  # its own path may be another machine's
    else:
        request = Request(corpus, budget_minutes, tuple(split(acts)), n_ctx, batch_size, lr,
                          seed, neurons_per_model, collect_tokens, tuple(split(annotators)),
                          layers, seeds, device)
    with reports_interruption(resume_flag=False):
        results = replicate(request, out, saved, base_url, trackers=parse_trackers(log),
                            log=lambda message: typer.echo(message, err=True))
    typer.echo(f"results: {results}")
