"""Direct logit effects: what each neuron's output direction does to the logits.

Neuron ``n`` of a layer adds ``a * W_out[n]`` to the residual stream. Read straight out by the
unembedding, through the final LayerNorm, that direction changes the logits by
``(W_out[n] - mean(W_out[n])) * ln_final.w @ W_U`` times the LayerNorm's positive 1/std of the
token: the centring and the gain are exact, the scale is shared by every token's logits, so the
ranking and signs are the neuron's. In a 1-layer model nothing else reads the MLP's output, so
this is the neuron's whole effect on the logits (the paper's section 6.3.1).
"""

from __future__ import annotations

import torch

from solulab.core.model import Transformer

TOP = 20


@torch.no_grad()
def top_logit_effects(model: Transformer, layer: int, top: int = TOP,
                      chunk: int = 256) -> dict[str, torch.Tensor]:
    """``top_ids/top_values`` (most increased) and ``bottom_ids/bottom_values`` (most
    decreased), each ``[d_mlp, top]``, computed ``chunk`` neurons at a time."""
    names = ("top_ids", "top_values", "bottom_ids", "bottom_values")
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    w_out = model.blocks[layer].mlp.W_out.float()
    w_u = model.unembed.weight.float().T  # [d_model, d_vocab]
    gain = model.ln_final.w.float()
    top = min(top, w_u.shape[1])
    for start in range(0, w_out.shape[0], chunk):
        rows = w_out[start:start + chunk]
        effects = ((rows - rows.mean(dim=1, keepdim=True)) * gain) @ w_u
        high = torch.topk(effects, top, dim=1)
        low = torch.topk(effects, top, dim=1, largest=False)
        parts["top_ids"].append(high.indices)
        parts["top_values"].append(high.values)
        parts["bottom_ids"].append(low.indices)
        parts["bottom_values"].append(low.values)
    return {k: torch.cat(v) for k, v in parts.items()}
