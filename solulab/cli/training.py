"""Training commands: ``sizes``, ``train``, ``sweep``, and reading a sweep: ``compare``,
``eval``, ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from solulab.cli.exits import is_main_process, reports_errors, reports_interruption
from solulab.cli.options import MODEL, TRACKERS, TRAIN, split
from solulab.core.config import ModelConfig
from solulab.runs.tracking import parse_trackers
from solulab.training.config import TrainConfig


def list_sizes():
    """List the ladder of model sizes (LxD, about 4x apart in non-embedding parameters)."""
    import torch

    from solulab import ModelConfig, Transformer
    from solulab.core.sizes import LADDER, parse_size

    typer.echo(f"{'size':<10} {'layers':>6} {'d_model':>7} {'heads':>5} {'d_mlp':>6} "
               f"{'non-emb params':>15}")
    for size in LADDER:
        with torch.device("meta"):
            cfg = ModelConfig(**parse_size(size))
            n = Transformer(cfg).n_params()
        typer.echo(f"{size:<10} {cfg.n_layers:>6} {cfg.d_model:>7} {cfg.n_heads:>5} "
                   f"{cfg.d_mlp:>6} {n:>15,}")


@reports_errors
def train(
    corpus: Path = typer.Option(..., help="Corpus directory (from `solulab corpus build`)."),
    act: str = typer.Option(..., help="Activation: gelu, relu, solu, solu_ln, gelu_ln, exp_ln."),
    out: Path = typer.Option(..., help="Run directory to write."),
    size: Optional[str] = typer.Option(None, help="LxD: L layers of width D, e.g. 1x128 (see "
                                       "`solulab sizes`); --n-layers etc. override it."),
    n_layers: Optional[int] = typer.Option(None),
    d_model: Optional[int] = typer.Option(None),
    n_heads: Optional[int] = typer.Option(None),
    d_mlp: Optional[int] = typer.Option(None, help="Default 4 * d_model."),
    n_ctx: int = typer.Option(MODEL["n_ctx"], help="Context length in tokens."),
    act_blocks: int = typer.Option(MODEL["act_blocks"],
                                   help="Softmax/LayerNorm blocks over d_mlp."),
    positional: str = typer.Option(MODEL["positional"], help="rotary or learned."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (or give --tokens)."),
    tokens: Optional[int] = typer.Option(None, help="Train on about this many tokens."),
    batch_size: int = typer.Option(TRAIN["batch_size"],
                                   help="Sequences per micro-batch per process."),
    grad_accum: int = typer.Option(TRAIN["grad_accum"], help="Micro-batches per optimizer step."),
    lr: float = typer.Option(TRAIN["lr"]),
    warmup_steps: Optional[int] = typer.Option(None, help="Default: 5% of the steps."),
    weight_decay: float = typer.Option(TRAIN["weight_decay"]),
    grad_clip: float = typer.Option(TRAIN["grad_clip"]),
    eval_every: int = typer.Option(TRAIN["eval_every"]),
    log_every: int = typer.Option(TRAIN["log_every"]),
    checkpoint_every: int = typer.Option(TRAIN["checkpoint_every"]),
    checkpoint_minutes: float = typer.Option(TRAIN["checkpoint_minutes"],
                                             help="Also checkpoint after this long."),
    eval_sequences: int = typer.Option(TRAIN["eval_sequences"],
                                       help="Validation windows per evaluation."),
    seed: int = typer.Option(TRAIN["seed"], help="Seeds the data order and the initial weights."),
    compile: bool = typer.Option(False, "--compile", help="Use torch.compile."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard with FSDP2 under torchrun."),
    tp: int = typer.Option(TRAIN["tp"], help="Tensor-parallel degree under torchrun (MLP split; "
                           "needs --act-blocks a multiple of it)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda if present)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    log: Optional[list[str]] = TRACKERS,
):
    """Train one model. Under `torchrun --nproc_per_node N` it trains with DDP (or FSDP2)."""
    from solulab.core.sizes import parse_size
    from solulab.data import Corpus
    from solulab.training.trainer import Trainer, TrainError

    if size is not None:
        shape: dict = parse_size(size)
        shape.update({k: v for k, v in dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads,
                                            d_mlp=d_mlp).items() if v is not None})
    elif n_layers is None or d_model is None or n_heads is None:
        raise TrainError("give --size LxD or all of --n-layers, --d-model, --n-heads")
    else:
        shape = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=d_mlp)
    vocab = Corpus(corpus).vocab_size
    model_cfg = ModelConfig(**shape, n_ctx=n_ctx, d_vocab=vocab, act_fn=act,
                            act_blocks=act_blocks, positional=positional, init_seed=seed)
    cfg = TrainConfig(batch_size=batch_size, grad_accum=grad_accum, steps=steps, tokens=tokens,
                      lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
                      grad_clip=grad_clip, eval_every=eval_every, log_every=log_every,
                      checkpoint_every=checkpoint_every,
                      checkpoint_minutes=checkpoint_minutes, eval_sequences=eval_sequences,
                      seed=seed, compile=compile, fsdp=fsdp,
                      tp=tp, device=device, log=parse_trackers(log))
    with reports_interruption():
        result = Trainer(model_cfg, cfg, corpus, out, resume=resume).run()
    if not is_main_process():
        return
    if result.already_finished:
        typer.echo(f"{out} is finished ({result.steps} steps, val loss {result.val_loss:.4f}): "
                   "nothing to do")
    else:
        typer.echo(f"{act}: {result.steps} steps, {result.tokens:,} tokens, "
                   f"val loss {result.val_loss:.4f} -> {out}")


@reports_errors
def sweep(
    corpus: Path = typer.Option(..., help="Corpus directory."),
    sizes: str = typer.Option(..., help="Comma-separated LxD sizes (layers x width), "
                                        "e.g. 1x64,2x192."),
    acts: str = typer.Option("gelu,solu_ln", help="Comma-separated activations."),
    out: Path = typer.Option(..., help="Sweep directory."),
    tokens: Optional[int] = typer.Option(None, help="Tokens per run (or give --steps)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps per run."),
    n_ctx: int = typer.Option(MODEL["n_ctx"]),
    batch_size: int = typer.Option(TRAIN["batch_size"]),
    grad_accum: int = typer.Option(TRAIN["grad_accum"]),
    lr: float = typer.Option(TRAIN["lr"]),
    eval_every: int = typer.Option(TRAIN["eval_every"]),
    checkpoint_every: int = typer.Option(TRAIN["checkpoint_every"]),
    checkpoint_minutes: float = typer.Option(TRAIN["checkpoint_minutes"],
                                             help="Also checkpoint after this long."),
    seed: int = typer.Option(TRAIN["seed"]),
    device: Optional[str] = typer.Option(None),
    log: Optional[list[str]] = TRACKERS,
):
    """Train every size x activation with identical settings; re-run to resume."""
    from solulab.sweep import run_sweep

    cfg = TrainConfig(tokens=tokens, steps=steps, batch_size=batch_size, grad_accum=grad_accum,
                      lr=lr, eval_every=eval_every, checkpoint_every=checkpoint_every,
                      checkpoint_minutes=checkpoint_minutes,
                      seed=seed, device=device, log=parse_trackers(log))
    with reports_interruption(resume_flag=False):
        run_sweep(corpus, out, split(sizes), split(acts), {"n_ctx": n_ctx}, cfg)
    typer.echo(f"sweep finished: {out}  (next: solulab compare {out})")


@reports_errors
def compare(
    sweep_dir: Path = typer.Argument(..., help="Sweep directory."),
    baseline: str = typer.Option("gelu", help="Activation whose scaling law is the yardstick."),
):
    """Fit the baseline's scaling law; print each run's size-equivalent multiplier; plot."""
    from solulab.sweep.compare import compare_sweep, format_table, plot_comparison

    result = compare_sweep(sweep_dir, baseline=baseline)
    typer.echo(format_table(result))
    for path in plot_comparison(result, sweep_dir / "plots"):
        typer.echo(f"plot: {path}")


@reports_errors
def eval_run(
    run: Path = typer.Argument(..., help="Run directory."),
    tasks: str = typer.Option("arithmetic,cloze", help="Comma-separated offline tasks."),
    corpus: Optional[Path] = typer.Option(None, help="Corpus for cloze (default: the run's)."),
    n: Optional[int] = typer.Option(None, help="Items per task."),
):
    """Offline downstream tasks with accuracy and standard error (written to evals.json)."""
    from solulab.evals.runner import evaluate_run

    for task, r in evaluate_run(run, split(tasks), corpus, n).items():
        typer.echo(f"{task:<12} accuracy {r['accuracy']:.3f} +- {r['stderr']:.3f} "
                   f"(n={r['n']}, chance {r['chance']:.2f})")


@reports_errors
def report(
    sweep_dir: Path = typer.Argument(..., help="Sweep directory."),
    out: Optional[Path] = typer.Option(None, help="HTML file (default SWEEP/report.html)."),
):
    """Write one static HTML report with the comparison, evals and neuron results."""
    from solulab.pipelines.sweep_report import write_report

    typer.echo(f"report: {write_report(sweep_dir, out)}")
