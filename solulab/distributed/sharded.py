"""Models built for many processes: parallelism applied from outside, in a fixed order.

``parallelize`` applies tensor parallelism, then data parallelism: DDP, or FSDP2 (``fully_shard``
on every block, then the root) when ``fsdp`` is asked for or tensor parallelism is on.
``build_model`` builds a model that will be sharded on the meta device, shards it, then
materialises and initialises each rank's shards: a process holds its shards and, while
initialising, one whole parameter at a time, never the whole model. The values equal the
single-process model's bit for bit (each parameter is drawn from its own seed).
"""

from __future__ import annotations

import torch
from torch import nn

from solulab.core.config import ModelConfig
from solulab.core.model import Transformer
from solulab.distributed.process_groups import DistInfo
from solulab.distributed.tensor_parallel import apply_tensor_parallel


def is_sharded(info: DistInfo, fsdp: bool) -> bool:
    """Parameters become DTensors (FSDP or tensor parallelism) and need collective saving."""
    return info.distributed and (fsdp or info.tp > 1)


def parallelize(model: nn.Module, info: DistInfo, fsdp: bool = False) -> nn.Module:
    """The model to call in the training step: tensor parallelism (``info.tp > 1``), then DDP
    or FSDP2 over the data-parallel ranks, or the model itself in one process."""
    if not info.distributed:
        return model
    if info.tp > 1:
        apply_tensor_parallel(model, info.mesh["tp"])
    if info.dp_size == 1:
        return model
    if fsdp or info.tp > 1:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block, mesh=info.mesh["dp"])
        fully_shard(model, mesh=info.mesh["dp"])
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def build_model(cfg: ModelConfig, info: DistInfo, fsdp: bool = False,
                state: dict[str, torch.Tensor] | None = None) -> tuple[Transformer, nn.Module]:
    """``(model, model to call in the training step)`` on ``info.device``, initialised from
    ``cfg.init_seed`` or loaded from a full (unsharded) ``state``."""
    if not is_sharded(info, fsdp):
        model = Transformer(cfg)
        if state is not None:
            model.load_state_dict(state)
        model.to(info.device)
        return model, parallelize(model, info, fsdp)
    with torch.device("meta"):
        model = Transformer(cfg)
    train_model = parallelize(model, info, fsdp)
    model.to_empty(device=info.device)
    if state is None:
        model.init_weights()
    else:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    return model, train_model
