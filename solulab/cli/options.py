"""What several commands share: the settings' defaults (each written once, where the setting
lives), the trackers option, comma-separated lists."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from solulab.core.config import ModelConfig
from solulab.pipelines.replicate_plan import Request
from solulab.training.config import TrainConfig


def _defaults(cls) -> dict[str, Any]:
    """A dataclass's field defaults."""
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


MODEL, TRAIN, REPLICATE = _defaults(ModelConfig), _defaults(TrainConfig), _defaults(Request)

TRACKERS = typer.Option(
    None, "--log", "--trackers", help="Experiment trackers: tensorboard, wandb, mlflow "
    "(repeatable or comma-separated; default $SOLULAB_LOG, else none), offline, inside each "
    "run directory. Under torchrun write --trackers: torchrun takes --log for its --log-dir.")


def split(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [v.strip() for v in value.split(",") if v.strip()]
