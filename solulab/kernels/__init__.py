"""Fast SoLU-family activations, chosen by device: C kernels on the CPU, Triton kernels on CUDA,
fused PyTorch ops wherever neither can run.

The interface is tensors and numbers: ``activation(x, kind, w, b, blocks, eps)`` computes the
activation of ``kind`` (``fused.KINDS``; ``w`` and ``b`` the extra LayerNorm's gain and bias, or
``None``) through a fused kernel with a memory-saving backward, and returns ``None`` where no
kernel applies, so that the caller runs its readable reference. ``use_backend("reference")``
makes every call return ``None``, e.g. to compare against the reference.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator

import torch

from solulab.kernels.c_kernels import native_activation, native_activation_with_mid, native_ready
from solulab.kernels.fused import KINDS, Kind, fused_activation

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


def backend_for(kind: Kind, x: torch.Tensor) -> str:
    """The backend that ``activation`` will use for an activation of ``kind`` and input ``x``."""
    if kind not in KINDS or _backend == "reference":
        return "reference"
    if _backend != "auto":
        return _backend
    if native_ready(x):
        return "native"
    return "triton" if x.is_cuda and triton_ready() else "fused"


@functools.cache
def triton_ready() -> bool:
    return importlib.util.find_spec("triton") is not None


def activation(x: torch.Tensor, kind: Kind, w: torch.Tensor | None, b: torch.Tensor | None,
               blocks: int, eps: float) -> torch.Tensor | None:
    """The activation of ``kind`` at ``x`` through the fastest kernel; ``None`` if none applies."""
    backend = backend_for(kind, x)
    if backend == "reference":
        return None
    if backend == "native":
        return native_activation(x, kind, w, b, blocks, eps)
    if backend == "triton":
        from solulab.kernels.triton_kernels import triton_activation

        return triton_activation(x, kind, w, b, blocks, eps)
    return fused_activation(x, kind, w, b, blocks, eps)


def activation_with_mid(x: torch.Tensor, kind: Kind, w: torch.Tensor | None,
                        b: torch.Tensor | None, blocks: int, eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(nonlinearity, nonlinearity then LayerNorm)`` of an activation with an extra LayerNorm,
    in one C pass where no gradient is needed (to read ``hook_mid``); ``None`` elsewhere."""
    if w is None or torch.is_grad_enabled() or backend_for(kind, x) != "native":
        return None
    return native_activation_with_mid(x, kind, w, b, blocks, eps)
