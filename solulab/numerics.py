"""Precision and shape helpers shared by the readable activations and the fused kernels."""

from __future__ import annotations

import torch


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """At least float32: half types are promoted, float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def split_blocks(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """``[..., d]`` -> ``[..., blocks, d // blocks]`` (a view)."""
    d = x.shape[-1]
    if blocks < 1 or d % blocks:
        raise ValueError(f"cannot split a last dimension of {d} into {blocks} equal blocks")
    return x.unflatten(-1, (blocks, d // blocks))


def local(t: torch.Tensor | None) -> torch.Tensor | None:
    """This rank's part of a distributed tensor (a ``DTensor`` under tensor parallelism); any
    other tensor as it is."""
    return t.to_local() if hasattr(t, "to_local") else t
