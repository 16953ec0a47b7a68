"""The collector's PyTorch pass over a batch: what ``PointStream`` computes of every value.

``summaries`` gives the batch's extremes, moments and counts, and ``groups`` (once the grid has
grown to fit the extremes) each value's histogram group: elementwise ops and reductions over
``[tokens, d_mlp]`` that, compiled (``torch.compile``: C++ on the CPU, Triton on CUDA), become
one pass over the batch each instead of one per op (on 2 CPU cores, 80 -> 7 ms per ``[4096,
1024]`` batch for both). Where compiling fails (no C++ compiler, an unsupported device) the same
ops run eagerly, with the same results. ``candidates`` marks the values that may enter the top-k
or their bin's sample, for the exact tests that follow. ``groups`` and ``candidates`` write into
a tensor the caller keeps (``scratch``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

HALF_BINS = 16


def grid_bin(values: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Each value's bin on its neuron's grid of bins ``width`` wide, ``-HALF_BINS`` to
    ``HALF_BINS - 1`` (values beyond go to the end bins), as floats."""
    return torch.floor(values / width).clamp(-HALF_BINS, HALF_BINS - 1)


def _summaries(v: torch.Tensor, threshold: float, chunks: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``v [tokens, d_mlp]``, per neuron: the largest value of each of ``chunks`` runs of
    rows (``[chunks, d_mlp]``), the smallest value, the sums of ``v``, ``v^2``, ``v^3``, ``v^4``
    (``[d_mlp, 4]`` float64, as the C pass sums) and the counts above zero and above
    ``threshold``. Each reduction runs over the runs of rows, then over the runs: compiled, one
    pass that keeps every core busy (a single reduction down whole columns gets half the
    speed). Counts are summed as floats, exact below 2**24 rows a run: the compiled sum of a
    boolean is several times slower."""
    x = v.view(chunks, -1, v.shape[1])
    x64 = x.double()
    x2 = x64 * x64
    sums = torch.stack([x64.sum(1), x2.sum(1), (x2 * x64).sum(1), (x2 * x2).sum(1)], 2).sum(0)

    def count(above: torch.Tensor) -> torch.Tensor:
        return torch.where(above, 1.0, 0.0).sum(1).double().sum(0).long()

    return (x.amax(1), x.amin(1).amin(0), sums, count(x > 0), count(x > threshold))


def _groups(v: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Each value's group: the int32 index of its (neuron, grid bin) in a ``[d_mlp, 2 *
    HALF_BINS]`` table, on grids of bins ``width [d_mlp]`` wide."""
    first = torch.arange(v.shape[1], dtype=torch.int32, device=v.device) * (2 * HALF_BINS)
    return grid_bin(v, width).to(torch.int32) + (first + HALF_BINS)


SAMPLE, TOP = 1, 2  # what ``candidates`` adds for each test a value passes


def _candidates(high_keys: torch.Tensor, high_mask: torch.Tensor, bound_high: torch.Tensor,
                group: torch.Tensor, v: torch.Tensor, kth: torch.Tensor) -> torch.Tensor:
    """Which values ``v [rows, d_mlp]`` may enter the kept examples, as the int8 sum of a code
    per test passed: ``SAMPLE`` where the high 32 bits of the value's key (``high_keys [rows,
    1]`` xor the neuron's ``high_mask``) are within those of its group's bound (``bound_high
    [groups]`` int32 at ``group``: a superset of the keys within the bound), ``TOP`` where the
    value is at least its neuron's ``kth``. Summed as integers and narrowed once: compiled, as
    fast as writing floats, where booleans narrowed to int8 take five times as long."""
    sample = (high_keys ^ high_mask) <= bound_high[group]
    return (torch.where(sample, SAMPLE, 0) + torch.where(v >= kth, TOP, 0)).to(torch.int8)


def marked(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices and values of the nonzero int8 ``codes`` (1-D, a multiple of 8 long): the
    nonzero words of eight codes first, then the codes within them where those words are few
    (on the CPU a fifth of the time of ``nonzero`` over every code: 1.6 against 9 ms for 16
    million, a few in a thousand nonzero), every code where they are not (a first batch)."""
    words = torch.nonzero(codes.view(torch.int64)).squeeze(1)
    if len(words) > len(codes) // 128:  # over one word in sixteen
        index = torch.nonzero(codes).squeeze(1)
        return index, codes.index_select(0, index)
    index = (words[:, None] * 8 + torch.arange(8, device=codes.device)).view(-1)
    within = codes.index_select(0, index)
    nonzero = torch.nonzero(within).squeeze(1)
    return index.index_select(0, nonzero), within.index_select(0, nonzero)


def count_groups(group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """How many values of ``group [rows, ...]`` fall in each of ``n_groups`` groups (int64):
    on the CPU ``bincount``, which runs on one core, over a share of the rows per thread (on 2
    cores, 8.1 -> 4.8 ms for ``[4096, 1024]``); elsewhere ``add_counts``."""
    if group.device.type != "cpu":
        return add_counts(group, n_groups)
    parts = min(torch.get_num_threads(), len(group))
    pieces = [piece.reshape(-1) for piece in group.chunk(max(parts, 1))]
    others = [_threads(len(pieces)).submit(torch.bincount, piece, minlength=n_groups)
              for piece in pieces[1:]]
    total = torch.bincount(pieces[0], minlength=n_groups)
    for counted in others:
        total += counted.result()
    return total


def add_counts(group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``count_groups`` by adding ones at the groups: no host sync, where ``bincount`` reads the
    largest group first (a GPU waits for that)."""
    flat = group.reshape(-1).long()
    ones = torch.ones(1, dtype=torch.int64, device=group.device).expand(len(flat))
    return torch.zeros(n_groups, dtype=torch.int64, device=group.device).index_add_(0, flat, ones)


@functools.cache
def _threads(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="solulab-count")


# Every compiled loop runs on all CPU threads. Inductor otherwise decides from the shapes of
# the first call, and its on-disk cache hands that decision to later processes: kernels first
# compiled for a test's 50 rows ran a 4,096-row batch on one thread, at half the speed.
_OPTIONS = {"cpp.dynamic_threads": True}


def _compiled_or_eager(fn: Callable) -> Callable:
    """``fn`` compiled for any shape on first use; ``fn`` itself from the first call that fails
    to compile."""
    compiled: Callable | None = None
    use_compiled = True

    @functools.wraps(fn)
    def run(*args):
        nonlocal compiled, use_compiled
        if use_compiled:
            try:
                compiled = compiled or torch.compile(fn, dynamic=True, options=_OPTIONS)
                return compiled(*args)
            except (RuntimeError, OSError) as error:  # compiler missing or backend unsupported
                use_compiled = False
                warnings.warn(f"neuron collection runs uncompiled PyTorch ops ({error!s:.200})",
                              stacklevel=2)
        return fn(*args)

    return run


def _into(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` writing its result into a given tensor ``out`` (its first argument), which it
    returns: compiled, the pass stores straight into ``out``, with no temporary."""
    def write(out: torch.Tensor, *args) -> torch.Tensor:
        return out.copy_(fn(*args))

    write.__name__ = write.__qualname__ = f"{fn.__name__}_into"
    return write


_compiled_summaries = _compiled_or_eager(_summaries)
groups = _compiled_or_eager(_into(_groups))  # groups(out, v, width)
candidates = _compiled_or_eager(_into(_candidates))  # candidates(out, high_keys, ...)


def row_runs(rows: int) -> int:
    """How many equal runs ``_summaries`` cuts ``rows`` rows into: up to 64."""
    return next(c for c in (64, 32, 16, 8, 4, 2, 1) if rows % c == 0)


def summaries(v: torch.Tensor, threshold: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_summaries`` of a batch, compiled."""
    return _compiled_summaries(v, threshold, row_runs(v.shape[0]))
