"""Batch-sized tensors kept from one batch to the next.

A collection's largest temporaries (a batch's bins, its candidate codes, its points side by
side: 64, 16 and 64 MB for four ``[4096, 1024]`` points) would otherwise be allocated anew every
batch, and on the CPU memory allocated anew that size is often mapped and page-faulted in anew:
with glibc's default allocator, every batch (a compiled pass writing ``[4096, 4096]`` int32: 26
ms into a new tensor, 7 ms into a kept one, here). Kept, they cost their memory once, at the first
batch, and the collector's memory stays fixed from there; a collector's streams, updated one
after the other, share them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import torch


class Scratch:
    """One kept tensor per name, reallocated only when a batch needs more room, another dtype
    or another device (a smaller batch takes a prefix). It pickles empty: a stream sent to
    another rank carries no buffers."""

    def __init__(self) -> None:
        self._held: dict[Hashable, torch.Tensor] = {}

    def __reduce__(self):
        return Scratch, ()

    def nbytes(self) -> int:
        """The memory the kept tensors hold."""
        return sum(t.numel() * t.element_size() for t in self._held.values())

    def get(self, name: Hashable, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
        """A contiguous tensor of ``shape`` (contents undefined) for ``name``."""
        size = math.prod(shape)
        held = self._held.get(name)
        if held is None or held.numel() < size or held.dtype != dtype or held.device != device:
            self._held.pop(name, None)  # freed before its replacement is allocated
            held = self._held[name] = torch.empty(size, dtype=dtype, device=device)
        return held[:size].view(shape)
