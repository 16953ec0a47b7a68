"""Under torchrun: the tensor-parallel model against the single-process blocked model.

usage: torchrun --nproc_per_node 2 _tp_child.py OUT_JSON [--plant-nan]
Writes the largest relative differences of the logits and of every parameter's gradient; a NaN
anywhere counts as an infinite difference. ``--plant-nan`` puts a NaN in one split gradient, to
prove that it would be caught.
"""

import json
import sys

import torch
from torch.distributed.tensor import DTensor

from solulab import ModelConfig, Transformer
from solulab.core.model import lm_loss
from solulab.distributed import init_distributed, shutdown_distributed
from solulab.distributed.tensor_parallel import apply_tensor_parallel


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| over largest |a|; infinite when either holds a NaN."""
    if torch.isnan(a).any() or torch.isnan(b).any():
        return float("inf")
    return ((a - b).abs().max() / a.abs().max()).item()


def main() -> None:
    info = init_distributed("cpu", tp=2)
    errors = {}
    for act in ("solu_ln", "gelu_ln", "exp_ln", "solu", "gelu"):
        cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, d_vocab=50,
                          act_fn=act, act_blocks=2)
        single, split = Transformer(cfg), Transformer(cfg)
        apply_tensor_parallel(split, info.mesh["tp"])
        tokens = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))
        outputs = {}
        for name, model in (("single", single), ("split", split)):
            logits = model(tokens)
            lm_loss(logits, tokens).backward()
            grads = {}
            for key, p in model.named_parameters():
                g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
                grads[key] = g
            outputs[name] = (logits, grads)
        (la, ga), (lb, gb) = outputs["single"], outputs["split"]
        if "--plant-nan" in sys.argv:
            next(iter(gb.values())).view(-1)[0] = float("nan")
        pairs = [(la, lb)] + [(ga[key], gb[key]) for key in ga]
        errors[act] = max(relative_difference(a, b) for a, b in pairs)
    if info.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump(errors, f)
    shutdown_distributed()


if __name__ == "__main__":
    main()
