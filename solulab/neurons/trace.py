"""One neuron's activation on every token of any text: to test a hypothesis about it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from solulab.core.model import Transformer
from solulab.data.tokenizer import load_tokenizer
from solulab.errors import SolulabError
from solulab.runs import rundir


def trace(run_dir: str | Path, text: str, layer: int, neuron: int,
          post_ln: bool = False) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """``(tokens, activations [pos], other point's activations [pos] or None)`` of the neuron
    on ``text`` (its last ``n_ctx`` tokens); ``post_ln`` reads ``hook_post`` instead of
    ``hook_mid``."""
    run_dir = Path(run_dir)
    model = Transformer.from_pretrained(run_dir).eval()
    if not 0 <= layer < model.cfg.n_layers:
        raise SolulabError(f"layer {layer} out of range: this model has layers "
                           f"0..{model.cfg.n_layers - 1}")
    if not 0 <= neuron < model.cfg.d_mlp:
        raise SolulabError(f"neuron {neuron} out of range 0..{model.cfg.d_mlp - 1}")
    tokenizer = load_tokenizer(run_dir / rundir.TOKENIZER)
    ids = tokenizer.encode(text).ids[-model.cfg.n_ctx:]
    if not ids:
        raise SolulabError("the text has no tokens")
    main = model.neuron_hook(layer, post_ln)
    names = {main}
    other = None
    if model.blocks[layer].mlp.hook_mid is not None:
        other = model.neuron_hook(layer, not post_ln)
        names.add(other)
    with torch.no_grad():
        cache = model.activations(torch.tensor([ids]), names)
    tokens = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    acts = cache[main][0, :, neuron].float().numpy()
    other_acts = None if other is None else cache[other][0, :, neuron].float().numpy()
    return tokens, acts, other_acts
