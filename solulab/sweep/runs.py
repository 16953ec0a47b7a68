"""Sweeps: every size x activation trained with identical settings, resumable.

A sweep directory holds ``sweep.json`` (the plan: sizes, activations, model and training
settings) and one run directory per ``{size}/{act}``. Running a sweep again skips finished runs,
resumes interrupted ones from their newest checkpoint, and refuses to mix in runs of another
plan. Sizes are ``LxD`` (``L`` layers of width ``D``, ``solulab.core.sizes``), e.g. ``1x64``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import typer

from solulab.core.config import ModelConfig
from solulab.core.sizes import parse_size
from solulab.data import Corpus
from solulab.errors import SolulabError
from solulab.io import atomic_write_json
from solulab.runs import rundir
from solulab.training.checkpoints import list_checkpoints
from solulab.training.trainer import TrainConfig, Trainer

SWEEP_FILE = "sweep.json"
MACHINE_SETTINGS = ("device", "compile", "log")  # may differ between invocations of one sweep


class SweepError(SolulabError):
    """A sweep that cannot run as asked."""


@dataclass
class SweepPlan:
    sizes: list[str]
    acts: list[str]
    model: dict[str, Any]  # settings shared by every model: n_ctx, positional, act_blocks, ...
    train: dict[str, Any]  # TrainConfig fields
    corpus_tokenizer_sha256: str = ""
    runs: list[str] = field(default_factory=list)

    def run_dir(self, root: Path, size: str, act: str) -> Path:
        return root / size / act

    def model_config(self, size: str, act: str, d_vocab: int) -> ModelConfig:
        return ModelConfig(**parse_size(size), **self.model, d_vocab=d_vocab, act_fn=act,
                           init_seed=self.train.get("seed", 0))


def train_or_resume(model_cfg: ModelConfig, cfg: TrainConfig, corpus: Path, run_dir: Path,
                    progress: bool = True) -> dict[str, Any]:
    """Train ``run_dir`` unless it is complete, resuming from a checkpoint when there is one;
    returns its ``run.json``."""
    if not rundir.is_complete(run_dir):
        resume = bool(list_checkpoints(run_dir))
        if run_dir.exists() and not resume:  # killed before its first checkpoint
            shutil.rmtree(run_dir)
        Trainer(model_cfg, cfg, corpus, run_dir, resume=resume, progress=progress).run()
    return rundir.read_record(run_dir)


def _check_plan(root: Path, plan: SweepPlan) -> None:
    """Refuse to continue a sweep directory that was started with other settings."""
    path = root / SWEEP_FILE
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    current = json.loads(json.dumps(asdict(plan)))  # tuples as lists, as saved
    for key in ("model", "train", "corpus_tokenizer_sha256"):
        old, new = saved.get(key), current[key]
        if old != new:
            if isinstance(old, dict) and isinstance(new, dict):
                diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                                 for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            else:
                diff = f"{old!r} -> {new!r}"
            raise SweepError(f"{root} holds a sweep with other {key} settings ({diff}); "
                             "use another --out")


def run_sweep(corpus_dir: Path, out: Path, sizes: list[str], acts: list[str],
              model: dict[str, Any], train_cfg: TrainConfig, progress: bool = True,
              log=typer.echo) -> dict[str, dict[str, Any]]:
    """Train every size x activation; returns ``{"size/act": run.json}``."""
    if not sizes or not acts:
        raise SweepError("give at least one size and one activation")
    corpus = Corpus(corpus_dir)
    for size in sizes:
        for act in acts:  # validate the whole plan before training anything
            SweepPlan(sizes, acts, model, {}).model_config(size, act, corpus.vocab_size)
    out = Path(out)
    settings = {k: v for k, v in asdict(train_cfg).items() if k not in MACHINE_SETTINGS}
    plan = SweepPlan(sizes, acts, model, settings, corpus.tokenizer_sha256)
    _check_plan(out, plan)
    if out.is_file():
        raise SweepError(f"{out} is a file, not a sweep directory")
    saved_runs = []
    if (out / SWEEP_FILE).is_file():
        saved_runs = json.loads((out / SWEEP_FILE).read_text()).get("runs", [])
    plan.runs = sorted(set(saved_runs) | {f"{s}/{a}" for s in sizes for a in acts})
    atomic_write_json(out / SWEEP_FILE, asdict(plan))
    results = {}
    total = len(sizes) * len(acts)
    for i, (size, act) in enumerate((s, a) for s in sizes for a in acts):
        run_dir = plan.run_dir(out, size, act)
        state = "done" if rundir.is_complete(run_dir) else "training"
        log(f"  run {i + 1}/{total}: {size} {act} ({state}) -> {run_dir}")
        cfg = plan.model_config(size, act, corpus.vocab_size)
        results[f"{size}/{act}"] = train_or_resume(cfg, train_cfg, corpus_dir, run_dir, progress)
    return results


def load_sweep(root: Path) -> tuple[SweepPlan, dict[str, dict[str, Any]]]:
    """The plan and the ``run.json`` of every finished run of a sweep directory."""
    path = Path(root) / SWEEP_FILE
    if not path.is_file():
        raise SweepError(f"{root}: no {SWEEP_FILE} (not a sweep directory)")
    plan = SweepPlan(**json.loads(path.read_text()))
    runs = {}
    for key in plan.runs:
        run_dir = Path(root) / key
        if rundir.is_complete(run_dir):
            runs[key] = rundir.read_record(run_dir)
    return plan, runs
