"""Pretrained model directories: ``config.json`` + ``model.safetensors`` (TransformerLens
checkpoints are read by ``solulab.interop.transformerlens``), and ``solulab.Transformer``: the
model of ``solulab.model`` with ``save_pretrained`` and ``from_pretrained``.

Loading checks everything before touching the model, so that a missing, truncated or mismatched
file gives one ``CheckpointError`` naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from solulab import model as plain
from solulab import rundir
from solulab.config import ConfigError, ModelConfig
from solulab.errors import SolulabError
from solulab.io import atomic_write_bytes, atomic_write_json

FORMAT_VERSION = 1


class CheckpointError(SolulabError):
    """A model directory that cannot be loaded; the message names the file and the problem."""


class Transformer(plain.Transformer):
    """The transformer of ``solulab.model``, saved to and loaded from model directories."""

    def save_pretrained(self, directory: str | Path) -> None:
        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path,
                        device: str | torch.device = "cpu") -> Transformer:
        return load_pretrained(directory, device=device)


def _state_to_save(model: plain.Transformer) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if model.cfg.tie_embeddings:
        state.pop("unembed.weight")  # the same tensor as embed.weight
    return state


def save_pretrained(model: plain.Transformer, directory: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in _state_to_save(model).items()}
    atomic_write_bytes(directory / rundir.WEIGHTS, save(weights))
    atomic_write_json(
        directory / rundir.CONFIG,
        {"solulab_format_version": FORMAT_VERSION, **model.cfg.to_dict()},
    )


def read_config(directory: str | Path) -> ModelConfig:
    """The ``ModelConfig`` of a model directory, or a ``CheckpointError`` that says why not."""
    path = Path(directory) / rundir.CONFIG
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
        problems.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(
            f"unexpected {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else "")
        )
    if wrong_shape:
        problems.append("shape mismatch " + "; ".join(wrong_shape[:5]))
    if problems:
        raise CheckpointError(f"{path} does not match {rundir.CONFIG}: " + "; ".join(problems))


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Load a model saved by ``save_pretrained``, a TransformerLens checkpoint directory, or
    ``hf:ORG/NAME`` (a TransformerLens checkpoint in the Hugging Face cache)."""
    from solulab.interop import hub, transformerlens

    if hub.is_hub_name(directory):
        directory = hub.resolve(directory)
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model directory")
    if transformerlens.is_checkpoint(directory):
        cfg, state = transformerlens.read_checkpoint(directory)
        model = Transformer(cfg)
        model.load_state_dict(state)
        return model.to(device)
    cfg = read_config(directory)
    path = directory / rundir.WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        weights = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt ({e})") from None
    model = Transformer(cfg)
    _check_weights(path, weights, _state_to_save(model))
    model.load_state_dict(weights, strict=False)
    return model.to(device)

