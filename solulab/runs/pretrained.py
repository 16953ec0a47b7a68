"""Loading whatever model a command is given: a solulab model directory
(``Transformer.from_pretrained``), a TransformerLens checkpoint directory
(``solulab.interop.transformerlens``) or ``hf:ORG/NAME`` (such a checkpoint in the Hugging Face
cache)."""

from __future__ import annotations

from pathlib import Path

import torch

from solulab.core.checkpoint import CheckpointError
from solulab.core.model import Transformer
from solulab.interop import hub, transformerlens


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """The model at ``directory`` (any of the three kinds), on ``device``."""
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
    return Transformer.from_pretrained(directory, device=device)
