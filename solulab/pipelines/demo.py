"""``solulab demo``: the whole pipeline on the built-in corpus, small enough for a laptop CPU.

corpus (built once, cached) -> sweep of sizes x {gelu, solu_ln} -> compare (scaling fit,
multipliers, plots) -> offline evals -> neuron collection and automated explanations -> report.
Finished runs, neuron stores and explanations are kept and interrupted runs resume, so running
the demo again is cheap.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from solulab.autointerp.run import ensure_explanations
from solulab.cache import cache_dir
from solulab.data import build_corpus, is_corpus
from solulab.evals.runner import evaluate_run
from solulab.neurons.collect import ensure_store
from solulab.pipelines.sweep_report import neuron_worth_reading, write_report
from solulab.stats import proportion
from solulab.sweep import run_sweep
from solulab.sweep.compare import compare_sweep, format_table
from solulab.training.trainer import TrainConfig

DEMO_VOCAB = 4096
STUDY_PORT = 8001  # the viewer takes 8000: the study gets a server of its own


@dataclass(frozen=True)
class DemoSettings:
    """How big the demo is; the defaults take about six minutes on 2 CPU cores."""

    sizes: tuple[str, ...] = ("1x32", "1x64", "1x128")
    acts: tuple[str, ...] = ("gelu", "solu_ln")
    steps: int = 400
    batch_size: int = 16
    n_ctx: int = 128
    eval_items: int = 200
    neuron_tokens: int = 65_536  # validation tokens streamed for each run's neuron store
    corpus_max_bytes: int | None = None  # None: the whole standard library, ~3.5M tokens


def builtin_corpus(vocab_size: int = DEMO_VOCAB, max_bytes: int | None = None,
                   progress: bool = True) -> Path:
    """The cached built-in corpus directory, built on first use."""
    version = f"{sys.version_info.major}{sys.version_info.minor}"
    path = cache_dir() / "corpora" / f"stdlib-py{version}-v{vocab_size}-b{max_bytes or 'all'}"
    if not is_corpus(path):
        typer.echo(f"      building it once into {path}", err=True)
        build_corpus(path, sources=None, vocab_size=vocab_size, max_bytes=max_bytes,
                     progress=progress)
    return path


def run_demo(out: Path, settings: DemoSettings = DemoSettings(), progress: bool = True) -> Path:
    """Run every stage into ``out``; returns the report's path."""
    out = Path(out)
    say = lambda message: typer.echo(message, err=True)  # noqa: E731
    say("[1/6] corpus: the Python standard library source")
    corpus = builtin_corpus(max_bytes=settings.corpus_max_bytes, progress=progress)
    manifest = json.loads((corpus / "manifest.json").read_text())
    say(f"      {manifest['splits']['train']['tokens']:,} train tokens, "
        f"{manifest['splits']['val']['tokens']:,} validation tokens")

    say(f"[2/6] sweep: sizes {', '.join(settings.sizes)} x {', '.join(settings.acts)}, "
        f"{settings.steps} steps each, identical settings")
    cfg = TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=2e-3,
                      eval_every=max(1, settings.steps // 8),
                      checkpoint_every=max(1, settings.steps // 4), log_every=10)
    sweep_dir = out / "sweep"
    runs = run_sweep(corpus, sweep_dir, list(settings.sizes), list(settings.acts),
                     {"n_ctx": settings.n_ctx}, cfg, progress=progress, log=say)

    say("[3/6] compare: baseline scaling law and size-equivalent multipliers")
    typer.echo(format_table(compare_sweep(sweep_dir)))

    say(f"[4/6] evals: arithmetic and cloze, {settings.eval_items} items each")
    for key in runs:
        results = evaluate_run(sweep_dir / key, ["arithmetic", "cloze"], corpus,
                               n=settings.eval_items)
        summary = ", ".join(f"{t} {r['accuracy']:.3f}" for t, r in results.items())
        say(f"      {key}: {summary}")

    say(f"[5/6] neurons: top examples, interval samples and logit effects over "
        f"{settings.neuron_tokens:,} validation tokens per run, then automated explanations")
    for key in runs:
        store = ensure_store(sweep_dir / key, corpus, settings.neuron_tokens, progress)
        labels = [e["interpretable"] for e in ensure_explanations(sweep_dir / key,
                                                                  progress).values()]
        p = proportion(sum(labels), len(labels))
        say(f"      {key}: {store}; auto-interpretable {p.fraction:.1%} "
            f"(95% Wilson {p.low:.2f}-{p.high:.2f})")

    say("[6/6] report")
    report = write_report(sweep_dir)
    largest = f"{sweep_dir}/{settings.sizes[-1]}"
    layer, neuron, description = neuron_worth_reading(Path(largest) / "solu_ln") or (0, 0, "")
    typer.echo(f"\nreport: {report}")
    typer.echo(f"runs:   {sweep_dir}/<size>/<activation>")
    typer.echo(f"corpus: {corpus}")
    activate = activation_line()
    if activate:
        typer.echo(f"first, in each new shell: {activate}")
    typer.echo(f"read a neuron:   solulab neurons show {largest}/solu_ln --layer {layer} "
               f"--neuron {neuron}" + (f"   # {description}" if description else ""))
    typer.echo(f"open the viewer: solulab serve --runs {sweep_dir}")
    typer.echo(f"blinded study:   solulab study create --model solu_ln={largest}/solu_ln "
               f"--model gelu={largest}/gelu --annotators you --out {out}/study.sqlite "
               f"--base-url http://127.0.0.1:{STUDY_PORT}")
    typer.echo(f"                 solulab serve --study {out}/study.sqlite --port {STUDY_PORT}"
               "   # then open the link create printed")
    return report


def activation_line() -> str | None:
    """``source .../bin/activate`` when this ``solulab`` runs from a virtual environment that a
    new shell would not find on its PATH (``make demo`` runs ``.venv/bin/solulab``)."""
    scripts = Path(sys.prefix) / "bin"
    active = os.environ.get("VIRTUAL_ENV")
    if sys.prefix == sys.base_prefix or not (scripts / "activate").is_file() or (
            active and Path(active).resolve() == Path(sys.prefix).resolve()):
        return None
    try:
        where = scripts.relative_to(Path.cwd())
    except ValueError:
        where = scripts
    return f"source {where}/activate"
