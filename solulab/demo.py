"""``solulab demo``: the pipeline on the built-in corpus, small enough for a laptop CPU.

The built-in corpus (this Python's standard library source) is built once and cached. Runs that
already finished are kept; an interrupted one resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import typer

from solulab.config import ModelConfig
from solulab.data import build_corpus, is_corpus
from solulab.train import RUN_FILE, TrainConfig, Trainer
from solulab.train_state import list_checkpoints

DEMO_ACTS = ("gelu", "solu_ln")
DEMO_VOCAB = 4096
DEMO_MAX_BYTES = None  # the whole standard library: about 3.5M tokens, seconds to build
DEMO_MODEL = dict(n_layers=1, d_model=128, n_heads=4, d_mlp=512, n_ctx=128)


def cache_dir() -> Path:
    """``$SOLULAB_CACHE``, else ``$XDG_CACHE_HOME/solulab``, else ``~/.cache/solulab``."""
    if "SOLULAB_CACHE" in os.environ:
        return Path(os.environ["SOLULAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "solulab"


def builtin_corpus(vocab_size: int = DEMO_VOCAB, max_bytes: int | None = DEMO_MAX_BYTES,
                   progress: bool = True) -> Path:
    """The cached built-in corpus directory, built on first use."""
    version = f"{sys.version_info.major}{sys.version_info.minor}"
    path = cache_dir() / "corpora" / f"stdlib-py{version}-v{vocab_size}-b{max_bytes or 'all'}"
    if not is_corpus(path):
        typer.echo(f"building the built-in corpus (once) into {path}", err=True)
        build_corpus(path, sources=None, vocab_size=vocab_size, max_bytes=max_bytes,
                     progress=progress)
    return path


def is_complete_run(run_dir: Path) -> bool:
    record = run_dir / RUN_FILE
    return record.is_file() and json.loads(record.read_text()).get("complete", False)


def train_or_resume(model_cfg: ModelConfig, cfg: TrainConfig, corpus: Path, run_dir: Path,
                    progress: bool = True) -> float:
    """Train ``run_dir`` unless it is complete; resume it when it has a checkpoint."""
    if not is_complete_run(run_dir):
        resume = bool(list_checkpoints(run_dir))
        if run_dir.exists() and not resume:  # killed before its first checkpoint
            shutil.rmtree(run_dir)
        Trainer(model_cfg, cfg, corpus, run_dir, resume=resume, progress=progress).run()
    return json.loads((run_dir / RUN_FILE).read_text())["val_loss"]


def run_demo(out: Path, steps: int = 800, progress: bool = True) -> dict[str, float]:
    """Train a tiny GELU and SoLU-LN model with identical settings; print their losses."""
    typer.echo("[1/2] corpus: the Python standard library source", err=True)
    corpus = builtin_corpus(progress=progress)
    vocab = json.loads((corpus / "manifest.json").read_text())["vocab_size"]
    cfg = TrainConfig(steps=steps, batch_size=16, lr=2e-3, eval_every=max(1, steps // 4),
                      checkpoint_every=max(1, steps // 4), log_every=10)
    losses = {}
    for i, act in enumerate(DEMO_ACTS):
        typer.echo(f"[2/2] training {act} ({i + 1}/{len(DEMO_ACTS)})", err=True)
        model_cfg = ModelConfig(**DEMO_MODEL, d_vocab=vocab, act_fn=act)
        losses[act] = train_or_resume(model_cfg, cfg, corpus, out / "runs" / act, progress)
    typer.echo("\nvalidation loss (nats/token):")
    for act, loss in losses.items():
        typer.echo(f"  {act:<8} {loss:.4f}   {out / 'runs' / act}")
    typer.echo(f"corpus: {corpus}")
    return losses
