"""A model directory: ``config.json`` + ``model.safetensors``, written atomically, read back with
every check made before the model is touched, so that a missing, truncated or mismatched file
gives one ``CheckpointError`` naming the file and the problem. ``Transformer.save_pretrained``
and ``Transformer.from_pretrained`` call these."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from solulab.core.config import CONFIG, WEIGHTS, ConfigError, ModelConfig
from solulab.errors import SolulabError
from solulab.io import atomic_write_bytes, atomic_write_json

FORMAT_VERSION = 1


class CheckpointError(SolulabError):
    """A model directory that cannot be loaded; the message names the file and the problem."""


def state_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if cast(ModelConfig, model.cfg).tie_embeddings:
        state.pop("unembed.weight")  # the same tensor as embed.weight
    return state


def save_pretrained(model: nn.Module, directory: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in state_to_save(model).items()}
    atomic_write_bytes(directory / WEIGHTS, save(weights))
    cfg = cast(ModelConfig, model.cfg)
    atomic_write_json(directory / CONFIG,
                      {"solulab_format_version": FORMAT_VERSION, **cfg.to_dict()})


def read_config(directory: str | Path) -> ModelConfig:
    """The ``ModelConfig`` of a model directory, or a ``CheckpointError`` that says why not."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a solulab model directory?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    version = data.pop("solulab_format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: solulab_format_version is {version!r}, this solulab reads {FORMAT_VERSION}"
        )
    try:
        return ModelConfig.from_dict(data)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def _check_weights(path: Path, weights: dict[str, torch.Tensor], expected: dict) -> None:
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(weights[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in sorted(set(weights) & set(expected))
        if weights[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if wrong_shape:
        problems.append("shape mismatch " + "; ".join(wrong_shape[:5]))
    if problems:
        raise CheckpointError(f"{path} does not match {CONFIG}: " + "; ".join(problems))


def load_weights(model: nn.Module, directory: str | Path) -> None:
    """Load ``directory``'s weights into ``model`` (built from its config), checked first."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        weights = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt ({e})") from None
    _check_weights(path, weights, state_to_save(model))
    model.load_state_dict(weights, strict=False)
