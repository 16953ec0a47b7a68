"""Training's settings, without torch: what ``solulab train`` and every pipeline pass to the
trainer (``solulab.training.trainer``), validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from solulab.errors import SolulabError
from solulab.runs.tracking import TRACKERS


class TrainError(SolulabError):
    """Training cannot start as asked; the message says what to change."""


@dataclass
class TrainConfig:
    """Optimisation settings; identical across the runs of a comparison."""

    batch_size: int = 8  # sequences per micro-batch per process
    grad_accum: int = 1
    steps: int | None = None
    tokens: int | None = None  # alternative to steps: train on about this many tokens
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None  # default: 5% of the steps
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_sequences: int = 32
    log_every: int = 10
    checkpoint_every: int = 200
    checkpoint_minutes: float = 10.0  # also checkpoint when this long has passed since the last
    keep_checkpoints: int = 2
    seed: int = 0
    compile: bool = False
    fsdp: bool = False
    tp: int = 1  # tensor-parallel degree under torchrun
    device: str | None = None
    log: tuple[str, ...] = ()  # experiment trackers (solulab.runs.tracking); not part of the run

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "eval_every", "eval_sequences", "log_every",
                     "checkpoint_every", "keep_checkpoints", "tp"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(self, name)}")
        if (self.steps is None) == (self.tokens is None):
            raise TrainError("give exactly one of --steps or --tokens")
        if self.steps is not None and self.steps < 1:
            raise TrainError(f"steps must be >= 1, got {self.steps}")
        if self.tokens is not None and self.tokens < 1:
            raise TrainError(f"tokens must be >= 1, got {self.tokens}")
        if not self.checkpoint_minutes > 0:
            raise TrainError(f"checkpoint_minutes must be > 0, got {self.checkpoint_minutes}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        self.betas = tuple(self.betas)
        self.log = tuple(self.log)
        unknown = sorted(set(self.log) - set(TRACKERS))
        if unknown:
            raise TrainError(f"unknown trackers {unknown}: choose from {', '.join(TRACKERS)}")

    def global_batch(self, dp_size: int) -> int:
        """Sequences per optimizer step over the ``dp_size`` data-parallel ranks."""
        return self.batch_size * self.grad_accum * dp_size

    def total_steps(self, dp_size: int, n_ctx: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.tokens / (self.global_batch(dp_size) * n_ctx)))
