"""The ``solulab`` command."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from solulab.cli import interop as interop_cli
from solulab.cli.autointerp import app as autointerp_app
from solulab.cli.exits import (
    is_main_process,
    raise_on_sigterm,
    reports_errors,
    reports_interruption,
    stops_cleanly,
)
from solulab.cli.neurons import app as neurons_app
from solulab.cli.study import app as study_app
from solulab.core.config import ModelConfig
from solulab.errors import SolulabError
from solulab.pipelines.replicate_plan import Request
from solulab.runs.tracking import parse_trackers
from solulab.training.config import TrainConfig


def _defaults(cls) -> dict[str, Any]:
    """A dataclass's field defaults: each default is written once, where the setting lives."""
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


MODEL, TRAIN, REPLICATE = _defaults(ModelConfig), _defaults(TrainConfig), _defaults(Request)

app = typer.Typer(
    help="Train SoLU and baseline language models and read their neurons.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
corpus_app = typer.Typer(help="Build and inspect token corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


def _print_version(value: bool) -> None:
    if value:
        from solulab import __version__

        typer.echo(f"solulab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version,
                                          is_eager=True, help="Print the version and exit.")):
    """Train SoLU and baseline language models and read their neurons."""
app.add_typer(neurons_app, name="neurons")
app.add_typer(study_app, name="study")
app.add_typer(autointerp_app, name="autointerp")
app.command("import")(interop_cli.import_command)
app.command("export")(interop_cli.export_command)


@corpus_app.command("build")
@reports_errors
def corpus_build(
    out: Path = typer.Option(..., help="Directory to create for the corpus."),
    source: Optional[list[Path]] = typer.Option(
        None, help="File or directory of .txt .md .py .rst .html, .jsonl(.gz|.zst), .parquet "
        "shards or a saved `datasets` directory (repeatable; .rst and .html lose their markup). "
        "Default: the built-in corpus (this Python's standard library source)."),
    vocab_size: int = typer.Option(4096, help="BPE vocabulary size."),
    val_fraction: float = typer.Option(0.05, help="Share of documents held out for validation."),
    max_bytes: Optional[int] = typer.Option(None, help="Stop reading after this many bytes."),
    tokenizer: Optional[Path] = typer.Option(
        None, help="Tokenize with this tokenizer.json (a model's own) instead of training one."),
    keep_markup: bool = typer.Option(False, "--keep-markup",
                                     help="Read .rst and .html files as they are."),
    text_field: str = typer.Option("text", help="The field or column holding each record's "
                                   "text (.jsonl, .parquet, datasets)."),
    workers: int = typer.Option(
        1, help="Encoding processes (1: in this process, where the tokenizer already uses every "
        "core; more help where reading documents is the bottleneck). The corpus is the same "
        "whatever the number."),
):
    """Tokenize text sources into a corpus directory (tokenizer + token shards). A stopped build
    resumes where it stopped when the same command is run again."""
    from solulab.data.build import build_corpus, partial_dir

    def what_was_kept() -> str:
        if not partial_dir(out).is_dir():
            return f"nothing was written to {out}"
        return (f"nothing was written to {out}; the work done so far is kept in "
                f"{partial_dir(out)}: run the same command again to resume")

    with stops_cleanly(what_was_kept):
        manifest = build_corpus(out, sources=source or None, vocab_size=vocab_size,
                                val_fraction=val_fraction, max_bytes=max_bytes,
                                tokenizer=tokenizer, keep_markup=keep_markup,
                                text_field=text_field, workers=workers)
    typer.echo(manifest.summary())
    typer.echo(f"corpus written to {out}")


@app.command()
def presets():
    """List the model-size presets (about 4x apart in non-embedding parameters)."""
    import torch

    from solulab import ModelConfig, Transformer
    from solulab.core.presets import PRESETS

    typer.echo(f"{'preset':<10} {'layers':>6} {'d_model':>7} {'heads':>5} {'d_mlp':>6} "
               f"{'non-emb params':>15}")
    for p in PRESETS.values():
        with torch.device("meta"):
            n = Transformer(ModelConfig(**p.model_kwargs())).n_params()
        typer.echo(f"{p.name:<10} {p.n_layers:>6} {p.d_model:>7} {p.n_heads:>5} "
                   f"{4 * p.d_model:>6} {n:>15,}")


@app.command()
@reports_errors
def train(
    corpus: Path = typer.Option(..., help="Corpus directory (from `solulab corpus build`)."),
    act: str = typer.Option(..., help="Activation: gelu, relu, solu, solu_ln, gelu_ln, exp_ln."),
    out: Path = typer.Option(..., help="Run directory to write."),
    preset: Optional[str] = typer.Option(None, help="Model size preset (see `solulab presets`)."),
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
    log: Optional[list[str]] = typer.Option(
        None, "--log", "--trackers", help="Experiment trackers: tensorboard, wandb, mlflow "
        "(repeatable or comma-separated; default $SOLULAB_LOG, else none), offline, inside each "
        "run directory. Under torchrun write --trackers: torchrun takes --log for its --log-dir."),
):
    """Train one model. Under `torchrun --nproc_per_node N` it trains with DDP (or FSDP2)."""
    from solulab.core.presets import get_preset
    from solulab.data import Corpus
    from solulab.training.trainer import Trainer, TrainError

    if preset is not None:
        sizes = get_preset(preset).model_kwargs()
        given = {k: v for k, v in dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads,
                                       d_mlp=d_mlp).items() if v is not None}
        sizes.update(given)
    elif n_layers is None or d_model is None or n_heads is None:
        raise TrainError("give --preset NAME or all of --n-layers, --d-model, --n-heads")
    else:
        sizes = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=d_mlp)
    vocab = Corpus(corpus).vocab_size
    model_cfg = ModelConfig(**sizes, n_ctx=n_ctx, d_vocab=vocab, act_fn=act,
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


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
@reports_errors
def sweep(
    corpus: Path = typer.Option(..., help="Corpus directory."),
    sizes: str = typer.Option(..., help="Comma-separated presets or LxD sizes, e.g. 1x64,1l-128."),
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
    log: Optional[list[str]] = typer.Option(
        None, "--log", "--trackers", help="Experiment trackers: tensorboard, wandb, mlflow "
        "(repeatable or comma-separated; default $SOLULAB_LOG, else none), offline, inside each "
        "run directory. Under torchrun write --trackers: torchrun takes --log for its --log-dir."),
):
    """Train every size x activation with identical settings; re-run to resume."""
    from solulab.sweep import run_sweep

    cfg = TrainConfig(tokens=tokens, steps=steps, batch_size=batch_size, grad_accum=grad_accum,
                      lr=lr, eval_every=eval_every, checkpoint_every=checkpoint_every,
                      checkpoint_minutes=checkpoint_minutes,
                      seed=seed, device=device, log=parse_trackers(log))
    with reports_interruption(resume_flag=False):
        run_sweep(corpus, out, _split(sizes), _split(acts), {"n_ctx": n_ctx}, cfg)
    typer.echo(f"sweep finished: {out}  (next: solulab compare {out})")


@app.command()
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


@app.command("eval")
@reports_errors
def eval_run(
    run: Path = typer.Argument(..., help="Run directory."),
    tasks: str = typer.Option("arithmetic,cloze", help="Comma-separated offline tasks."),
    corpus: Optional[Path] = typer.Option(None, help="Corpus for cloze (default: the run's)."),
    n: Optional[int] = typer.Option(None, help="Items per task."),
):
    """Offline downstream tasks with accuracy and standard error (written to evals.json)."""
    from solulab.evals.runner import evaluate_run

    for task, r in evaluate_run(run, _split(tasks), corpus, n).items():
        typer.echo(f"{task:<12} accuracy {r['accuracy']:.3f} +- {r['stderr']:.3f} "
                   f"(n={r['n']}, chance {r['chance']:.2f})")


@app.command()
@reports_errors
def report(
    sweep_dir: Path = typer.Argument(..., help="Sweep directory."),
    out: Optional[Path] = typer.Option(None, help="HTML file (default SWEEP/report.html)."),
):
    """Write one static HTML report with the comparison, evals and neuron results."""
    from solulab.pipelines.sweep_report import write_report

    typer.echo(f"report: {write_report(sweep_dir, out)}")


@app.command()
@reports_errors
def demo(
    out: Path = typer.Option(Path("solulab-demo"), help="Where the demo writes everything."),
    steps: int = typer.Option(400, help="Optimizer steps per model."),
):
    """The whole pipeline on the built-in corpus: sweep, compare, evals, report."""
    from solulab.pipelines.demo import DemoSettings, run_demo

    run_demo(out, DemoSettings(steps=steps))


@app.command()
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
    neurons_per_model: int = typer.Option(REPLICATE["neurons_per_model"],
                                          help="Neurons of each model in the study."),
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
    log: Optional[list[str]] = typer.Option(
        None, "--log", "--trackers", help="Experiment trackers: tensorboard, wandb, mlflow "
        "(repeatable or comma-separated; default $SOLULAB_LOG, else none), offline, inside each "
        "run directory. Under torchrun write --trackers: torchrun takes --log for its --log-dir."),
):
    """GELU vs SoLU-LN (and the LayerNorm-only ablation) at the largest size the budget
    trains well, with several seeds of it: loss, multipliers, automated verdicts per layer, a
    blinded study stratified by layer, results.md."""
    from solulab.pipelines.replicate import replicate
    from solulab.pipelines.replicate_plan import read_plan_file, request_from_plan

    if (budget_minutes is None) == (plan is None):
        raise SolulabError("give exactly one of --budget-minutes or --plan")
    saved = read_plan_file(plan) if plan is not None else None
    if saved is not None:
        request = request_from_plan(saved, corpus)
    else:
        request = Request(corpus, budget_minutes, tuple(a.strip() for a in acts.split(",")),
                          n_ctx, batch_size, lr, seed, neurons_per_model, collect_tokens,
                          tuple(a.strip() for a in annotators.split(",")), layers, seeds,
                          device)
    with reports_interruption(resume_flag=False):
        results = replicate(request, out, saved, base_url, trackers=parse_trackers(log),
                            log=lambda message: typer.echo(message, err=True))
    typer.echo(f"results: {results}")


@app.command()
@reports_errors
def site(
    runs: list[Path] = typer.Argument(..., help="Run directories with neuron stores."),
    out: Path = typer.Option(..., help="The site's directory (replaced whole when re-run)."),
    examples: int = typer.Option(10, help="Top examples per neuron."),
):
    """A static explorer of RUNS' neurons (HTML + JSON) that works from file:// and on any
    static host: the searchable table and a page per neuron."""
    import time

    from solulab.web.site import export_site

    started = time.perf_counter()
    with stops_cleanly(f"{out} is as it was before"):
        summary = export_site(runs, out, examples)
    typer.echo(f"site: {summary.path / 'index.html'}  ({summary.runs} runs, "
               f"{summary.neurons:,} neurons, {summary.files:,} files, "
               f"{summary.bytes / 2**20:.1f} MiB, {time.perf_counter() - started:.1f} s)")


@app.command("regex")
@reports_errors
def regex_command(
    run: Path = typer.Argument(..., help="Run directory with a neuron store."),
    pattern: str = typer.Option(..., help="Regular expression over each token's text."),
    top: int = typer.Option(20, help="Neurons to list."),
    tokens: int = typer.Option(16_384, help="Held-out tokens."),
    fire_fraction: float = typer.Option(0.5, help="Fires above this fraction of its max."),
):
    """Rank neurons by how well PATTERN predicts where they fire (F1, then AUROC)."""
    from solulab.autointerp.run import rank_by_pattern

    ranked = rank_by_pattern(run, pattern, None, tokens, fire_fraction, top)
    typer.echo(f"{'layer':>5} {'neuron':>7} {'F1':>6} {'precision':>10} {'recall':>7} "
               f"{'AUROC':>7}")
    for r in ranked:
        typer.echo(f"{r['layer']:>5} {r['neuron']:>7} {r['f1']:>6.3f} {r['precision']:>10.3f} "
                   f"{r['recall']:>7.3f} {r['auroc']:>7.3f}")


@app.command()
@reports_errors
def serve(
    runs: Optional[Path] = typer.Option(None, help="Directory of runs with neuron stores: the "
                                        "viewer."),
    study: Optional[Path] = typer.Option(None, help="Study database: the annotators' pages."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1: this machine)."),
    port: int = typer.Option(8000, help="Port."),
    allow_host: list[str] = typer.Option([], help="A host name clients may use besides "
                                         "loopback (repeatable); needed with --host 0.0.0.0."),
):
    """The neuron viewer (--runs) or the blinded study (--study), one per server."""
    import uvicorn

    from solulab.web import app as web

    if (runs is None) == (study is None):
        raise SolulabError(
            "give --runs (the viewer) or --study (the annotators' pages), not both: an annotator "
            "who can reach the viewer can unblind the study. Serve them as two servers, e.g. "
            "`solulab serve --study S` and `solulab serve --runs R --port 8001`")
    hosts = web.serving_hosts(host, allow_host)
    if runs is not None:
        if not runs.is_dir():
            raise SolulabError(f"--runs {runs} is not a directory")
        server, what = web.viewer_app(runs, hosts), "viewer"
    else:
        from solulab.study.db import connect

        connect(study).close()  # refuses a missing or foreign file now, not per request
        server, what = web.study_app(study, hosts), "study (annotator links: /study/TOKEN)"
    web.check_port_free(host, port)
    typer.echo(f"{what}: http://{host}:{port}/")
    uvicorn.run(server, host=host, port=port, log_level="warning")


def main() -> None:  # pragma: no cover - console entry point
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    app()


if __name__ == "__main__":
    sys.exit(main())
