"""Fast SoLU-family activations, chosen by device: C kernels on the CPU, Triton kernels on CUDA,
fused PyTorch ops wherever neither can run.

``activation(act, x)`` computes ``act(x)`` (an ``activations.Activation``) through a fused kernel
with a memory-saving backward where one exists for its kind, and through the readable reference
otherwise. ``use_backend("reference")`` forces the reference, e.g. to compare against it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from solulab.distributed.tensor_parallel import local
from solulab.kernels.c_kernels import native_activation, native_activation_with_mid, native_ready
from solulab.kernels.fused import KINDS, fused_activation

if TYPE_CHECKING:
    from solulab.activations import Activation

BACKENDS = ("auto", "reference", "fused", "native", "triton")
_backend = "auto"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Within the block, compute activations with backend ``name``."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; known: {', '.join(BACKENDS)}")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def backend_for(act: Activation, x: torch.Tensor) -> str:
    """The backend that ``activation`` will use for this activation and input."""
    if act.spec.kind not in KINDS or _backend == "reference":
        return "reference"
    if _backend != "auto":
        return _backend
    if native_ready(x):
        return "native"
    return "triton" if x.is_cuda and triton_ready() else "fused"


@functools.cache
def triton_ready() -> bool:
    return importlib.util.find_spec("triton") is not None


def activation(act: Activation, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` through the fastest available implementation."""
    backend = backend_for(act, x)
    if backend == "reference":
        return act.reference(x)
    w, b = (local(act.ln.w), local(act.ln.b)) if act.ln is not None else (None, None)
    eps = act.ln.eps if act.ln is not None else 0.0
    if backend == "native":
        return native_activation(x, act.spec.kind, w, b, act.blocks, eps)
    if backend == "triton":
        from solulab.kernels.triton_kernels import triton_activation

        return triton_activation(x, act.spec.kind, w, b, act.blocks, eps)
    return fused_activation(x, act.spec.kind, w, b, act.blocks, eps)


def activation_with_mid(act: Activation, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(act.nonlinearity(x), act(x))`` for an activation with an extra LayerNorm, to read
    ``hook_mid``: in one C pass where no gradient is needed, else through the reference."""
    if not torch.is_grad_enabled() and backend_for(act, x) == "native":
        return native_activation_with_mid(x, act.spec.kind, local(act.ln.w), local(act.ln.b),
                                          act.blocks, act.ln.eps)
    mid = act.nonlinearity(x)
    return mid, act.ln(mid)
