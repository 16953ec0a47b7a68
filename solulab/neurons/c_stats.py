"""The collector's passes over a batch in C (``neurons/csrc/neuron_stats.c``): ``extremes``
first, then ``stream_batch``: grids grown to fit them, statistics, histogram, and the top-k and
interval samples offered element by element to their fixed slots.

Built on first use like the SoLU kernels; where it cannot be built, or for tensors that are not
float32 on the CPU, ``ready`` is False and the stream uses PyTorch ops instead.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from solulab.kernels.c_kernels import build_library, pointer
from solulab.neurons.slots import Slots

SOURCE = Path(__file__).resolve().parent / "csrc" / "neuron_stats.c"
_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


class _Slots(ctypes.Structure):
    _fields_ = [("value", _P), ("position", _P), ("key", _P), ("ids", _P), ("acts", _P),
                ("other", _P), ("cap", _I64)]


class _Batch(ctypes.Structure):
    _fields_ = [("v", _P), ("other", _P), ("tokens", _P), ("positions", _P), ("keys", _P),
                ("T", _I64), ("D", _I64), ("n_pos", _I64), ("before", _I64), ("after", _I64)]


@functools.cache
def load_library() -> ctypes.CDLL | None:
    lib = build_library(SOURCE)
    if lib is not None:
        lib.batch_extremes.argtypes = [_P, _I64, _I64, _I64, _P, _P, _INT]
        lib.batch_extremes.restype = _I64
        lib.stream_batch.argtypes = [ctypes.POINTER(_Batch), _P, _INT, _INT, _P, _F, _P, _P, _P,
                                     _P, _P, _P, _P, ctypes.POINTER(_Slots),
                                     ctypes.POINTER(_Slots), _INT]
    return lib


def ready(v: torch.Tensor) -> bool:
    return v.device.type == "cpu" and v.dtype == torch.float32 and load_library() is not None


def _slots(s: Slots) -> _Slots:
    return _Slots(*(pointer(t) for t in (s.value, s.position, s.key, s.ids, s.acts, s.other)),
                  s.capacity)


def extremes(v: torch.Tensor, runs: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For ``v [tokens, d_mlp]`` (contiguous), per neuron, the largest and the smallest value of
    each of ``runs`` equal runs of rows (``[runs, d_mlp]`` each); and how many values are nan or
    infinite (the extremes leave them out)."""
    run_max, run_min = torch.empty(2, runs, v.shape[1])
    non_finite = load_library().batch_extremes(v.data_ptr(), v.shape[0], v.shape[1], runs,
                                               run_max.data_ptr(), run_min.data_ptr(),
                                               torch.get_num_threads())
    return run_max, run_min, non_finite


def stream_batch(stream, half_bins: int, h0_exp: int, v: torch.Tensor,
                 other: torch.Tensor | None, tokens: torch.Tensor, positions: torch.Tensor,
                 keys: torch.Tensor, floor: torch.Tensor) -> None:
    """Add ``v [tokens, d_mlp]`` (and ``other``, the other point's activations) to ``stream``
    (a ``PointStream`` whose extremes already take the batch in), in place: grids grown to fit
    them, statistics, histogram, top-k and samples. ``floor [d_mlp]``: per neuron, a value below
    which nothing of the batch can enter the top-k (``PointStream._top_floor``). ``tokens`` and
    ``positions`` are ``[sequences, n_pos]``."""
    arrays = [v.contiguous(), None if other is None else other.contiguous().float(),
              tokens.contiguous(), positions.reshape(-1).contiguous(), keys.contiguous()]
    batch = _Batch(*(pointer(t) for t in arrays), v.shape[0], v.shape[1], tokens.shape[1],
                   stream.before, stream.after)
    load_library().stream_batch(
        ctypes.byref(batch), stream.exp.data_ptr(), h0_exp, half_bins,
        stream.neuron_mask.data_ptr(), stream.threshold, stream.vmax.data_ptr(),
        stream.vmin.data_ptr(), floor.contiguous().data_ptr(),
        stream.moments.data_ptr(), stream.n_positive.data_ptr(), stream.n_above.data_ptr(),
        stream.counts.data_ptr(), ctypes.byref(_slots(stream.top)),
        ctypes.byref(_slots(stream.pool)), torch.get_num_threads())
