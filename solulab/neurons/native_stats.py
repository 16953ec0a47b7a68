"""The collector's per-element bookkeeping in one C pass (``kernels/csrc/neuron_stats.c``).

Built on first use like the SoLU kernels; where it cannot be built, or for tensors that are not
float32 on the CPU, ``ready`` is False and the stream uses PyTorch ops instead.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

from solulab.kernels.native import FLAG_SETS, compile_source

SOURCE = Path(__file__).resolve().parent.parent / "kernels" / "csrc" / "neuron_stats.c"
CAPACITY = 1 << 16  # candidates per thread before the caller falls back
_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


@functools.cache
def load_library() -> ctypes.CDLL | None:
    if os.environ.get("SOLULAB_NATIVE_KERNELS", "1") == "0":
        return None
    for flags in FLAG_SETS:
        path = compile_source(SOURCE, flags)
        if path is None:
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        lib.batch_extremes.argtypes = [_P, _I64, _I64, _P, _P, _INT]
        lib.neuron_bookkeeping.argtypes = [_P, _I64, _I64, _P, _INT, _P, _P, _P, _F, _P, _P, _P,
                                           _P, _P, _P, _P, _P, _P, _I64, _INT]
        return lib
    return None


def ready(v: torch.Tensor) -> bool:
    return v.device.type == "cpu" and v.dtype == torch.float32 and load_library() is not None


def extremes(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-neuron max and min of ``v [tokens, d_mlp]``."""
    v = v.contiguous()
    bmax = torch.full((v.shape[1],), -torch.inf)
    bmin = torch.full((v.shape[1],), torch.inf)
    load_library().batch_extremes(v.data_ptr(), v.shape[0], v.shape[1], bmax.data_ptr(),
                                  bmin.data_ptr(), torch.get_num_threads())
    return bmax, bmin


def bookkeeping(v: torch.Tensor, width: torch.Tensor, half: int, moments: torch.Tensor,
                n_positive: torch.Tensor, n_above: torch.Tensor, threshold: float,
                counts: torch.Tensor, kth: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor, bound: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Add ``v [tokens, d_mlp]`` to the statistics in place and return the flat indices of
    the top-k and sample candidates; None (statistics still added) when there are too many."""
    v = v.contiguous()
    threads = torch.get_num_threads()
    top = torch.empty(threads * CAPACITY, dtype=torch.int64)
    samples = torch.empty(threads * CAPACITY, dtype=torch.int64)
    n_top = torch.zeros(threads, dtype=torch.int64)
    n_samples = torch.zeros(threads, dtype=torch.int64)
    load_library().neuron_bookkeeping(
        v.data_ptr(), v.shape[0], v.shape[1], width.data_ptr(), half, moments.data_ptr(),
        n_positive.data_ptr(), n_above.data_ptr(), threshold, counts.data_ptr(),
        kth.data_ptr(), keys.data_ptr(), mask.data_ptr(), bound.data_ptr(), top.data_ptr(),
        n_top.data_ptr(), samples.data_ptr(), n_samples.data_ptr(), CAPACITY, threads)
    if (n_top < 0).any() or (n_samples < 0).any():
        return None
    gather = lambda found, n: torch.cat(  # noqa: E731
        [found[i * CAPACITY:i * CAPACITY + int(n[i])] for i in range(threads)])
    return gather(top, n_top), gather(samples, n_samples)
