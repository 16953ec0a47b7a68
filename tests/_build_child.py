"""Under ``torchrun --nproc_per_node 2``: build the model as training does (meta device, then
sharded and materialised) for FSDP and for tensor parallelism, gather the full state, and save it
with each rank's largest local shard, for ``test_distributed_build.py``.

usage: torchrun --nproc_per_node 2 _build_child.py OUT_DIR
"""

import sys
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from solulab import ModelConfig, Transformer
from solulab.distributed import init_distributed, shutdown_distributed
from solulab.distributed.sharded import build_model

CONFIG = dict(n_layers=2, d_model=32, n_heads=2, d_mlp=128, n_ctx=16, d_vocab=97,
              act_fn="solu_ln", act_blocks=2, init_seed=7)


def main() -> None:
    out = Path(sys.argv[1])
    mode = sys.argv[2]
    info = init_distributed("cpu", tp=2 if mode == "tp" else 1)
    cfg = ModelConfig(**CONFIG)
    model, _ = build_model(cfg, info, fsdp=mode == "fsdp")
    local = {name: (p.to_local().numel() if isinstance(p, DTensor) else p.numel(), p.numel())
             for name, p in model.named_parameters()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(model, options=options)
    # The resume path: a full state (as every rank reads it from a checkpoint) loaded into a
    # freshly built, sharded model.
    state = {k: v * 2 for k, v in Transformer(cfg).state_dict().items()}
    loaded, _ = build_model(cfg, info, fsdp=mode == "fsdp", state=state)
    reloaded = get_model_state_dict(loaded, options=options)
    if info.is_main:
        torch.save({"full": full, "reloaded": reloaded, "local": local},
                   out / f"{mode}.pt")
    shutdown_distributed()


if __name__ == "__main__":
    main()
