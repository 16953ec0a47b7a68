"""Tensor parallelism for the MLP, applied to a built model from outside it.

``W_in`` is split column-wise and ``W_out`` row-wise over the ``tp`` ranks, so each rank holds
``d_mlp / tp`` neurons and the MLP needs one all-reduce, after ``W_out``. With ``act_blocks`` a
multiple of ``tp`` every softmax and LayerNorm block lies inside one rank's slice, so SoLU and the
extra LayerNorm stay local and add no communication, as the paper's blocked models did (section
4.4). Attention and embeddings are replicated. Hooks inside the MLP see the local slice.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    parallelize_module,
)

from solulab.errors import SolulabError


def apply_tensor_parallel(model: nn.Module, tp_mesh) -> None:
    """Split every block's MLP over ``tp_mesh`` (in place)."""
    tp = tp_mesh.size()
    for layer, block in enumerate(model.blocks):
        mlp = block.mlp
        act = mlp.act
        if not act.spec.elementwise and act.blocks % tp:
            raise SolulabError(
                f"tensor-parallel degree {tp} needs act_blocks to be a multiple of {tp} "
                f"(layer {layer} has {act.blocks}) so that softmax and LayerNorm stay local: "
                f"pass --act-blocks {tp}")
        parallelize_module(mlp, tp_mesh, {"fc_in": ColwiseParallel(),
                                          "fc_out": RowwiseParallel()})
        act.blocks = max(1, act.blocks // tp)
        if act.ln is not None:
            act.ln.blocks = act.blocks
            for name in ("w", "b"):  # this rank's slice, without communication (meta too)
                mine = getattr(act.ln, name).data.chunk(tp)[tp_mesh.get_local_rank()].clone()
                setattr(act.ln, name, nn.Parameter(
                    DTensor.from_local(mine, tp_mesh, [Shard(0)], run_check=False)))


@torch.no_grad()
def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for a mix of plain and distributed (``DTensor``) parameters."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = []
    for g in grads:
        norm = torch.linalg.vector_norm(g.float())
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    total = torch.linalg.vector_norm(torch.stack(norms))
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    if scale < 1.0:
        for g in grads:
            g.mul_(scale)
    return total
