"""Streaming per-neuron summaries of one activation point, in memory independent of the tokens.

``PointStream.update`` takes a batch of activations ``[batch, pos, d_mlp]`` and keeps, for every
neuron:

* the top-k activations with their context windows, ties broken by the lower global position;
* moments (sum of ``v``, ``v^2``, ``v^3``, ``v^4`` in float64), extremes, counts above zero and
  above a threshold;
* a histogram on a symmetric grid of ``2 * HALF_BINS`` bins of width ``h = H0 * 2**e``, where
  ``e`` is the smallest integer with ``max |v| < HALF_BINS * h``: the grid depends only on the
  largest magnitude seen, so it doubles as values grow and merging two streams is exact;
* per grid bin, a uniform sample of ``samples`` activations with their windows: the entries with
  the smallest pseudo-random keys, a hash of (global position, neuron). The smallest keys of a
  union are the smallest keys of the parts, so bins merge exactly when the grid doubles and when
  ranks merge, and any union of bins (a final activation interval) has a uniform sample.

Both kinds of examples live in fixed ``Slots`` (``slots``), so memory is ``d_mlp x (k + 2 *
HALF_BINS * samples) x window`` from the start, whatever the number of tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from solulab.errors import SolulabError
from solulab.neurons import batch_pass, c_stats
from solulab.neurons.batch_pass import HALF_BINS
from solulab.neurons.scratch import Scratch
from solulab.neurons.slots import EMPTY, Entries, Slots, at, rank_in_group, select

H0_EXP = -24  # the finest bin width is 2**-24
GOLDEN = 0x9E3779B97F4A7C15
SURE = 6.0  # a first batch's sample candidates: this many standard deviations to spare
EMPTY_BELOW = torch.iinfo(torch.int64).min  # a screen no key passes (but its own)


def position_keys(positions: torch.Tensor, seed: int) -> torch.Tensor:
    """A splitmix64 hash of each global position: pseudo-random int64 keys, the same on every
    rank and in every run with the same seed. In int64 ops on the positions' device (no trip
    to the host): products wrap as unsigned ones do, and a shift right clears the sign's copies."""
    x = positions.long() + _int64(seed * GOLDEN)
    x = (x ^ _shift_right(x, 30)) * _int64(0xBF58476D1CE4E5B9)
    x = (x ^ _shift_right(x, 27)) * _int64(0x94D049BB133111EB)
    return x ^ _shift_right(x, 31)


def _int64(value: int) -> int:
    """``value`` mod 2**64 as a signed 64-bit integer (the same bits)."""
    value %= 2**64
    return value - 2**64 if value >= 2**63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical shift right of int64 bits: the arithmetic shift, less the copies of the sign."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


class PointStream:
    """Streaming summaries of every neuron at one activation point; see the module docstring.

    ``points`` > 1 keeps that many points side by side (activations ``[..., points * d_mlp]``),
    each point's neurons keyed as in a stream of its own: the examples of ``points`` separate
    streams, for the ops of one per batch (on a GPU, where each op's launch costs more than its
    work, the separate streams' ops dominate a collection). ``partners``, where each point's
    other point is side by side with it (point ``i``'s is point ``partners[i]``), cuts the
    other point's windows from the batch's own columns: ``update`` then takes no ``other``.
    Streams updated one after the other may share a ``scratch`` for their batch-sized tensors."""

    def __init__(self, d_mlp: int, k: int, before: int, after: int, samples: int,
                 threshold: float, with_other: bool, seed: int = 0, device="cpu",
                 points: int = 1, partners: tuple[int, ...] | None = None,
                 scratch: Scratch | None = None):
        gen = torch.Generator().manual_seed(seed)
        neuron_mask = torch.randint(-2**62, 2**62, (d_mlp,), generator=gen).repeat(points)
        self.partner = None  # per neuron, its column at the other point
        if partners is not None:
            if not with_other or sorted(partners) != list(range(points)):
                raise ValueError("partners: the other point of each point, for with_other")
            column = torch.arange(d_mlp)
            self.partner = torch.cat([p * d_mlp + column for p in partners]).to(device)
        d_mlp *= points
        self.d, self.k, self.before, self.after = d_mlp, k, before, after
        self.window = before + after + 1
        self.samples, self.threshold, self.seed = samples, threshold, seed
        self.device = torch.device(device)
        self.top = Slots.empty(d_mlp, k, self.window, keyed=False, with_other=with_other,
                               per_neuron=1, device=self.device)
        self.pool = Slots.empty(d_mlp * 2 * HALF_BINS, samples, self.window, keyed=True,
                                with_other=False, per_neuron=2 * HALF_BINS, device=self.device)
        self.exp = torch.zeros(d_mlp, dtype=torch.int64, device=self.device)  # h = 2**(H0+exp)
        self.counts = torch.zeros(d_mlp, 2 * HALF_BINS, dtype=torch.int64, device=self.device)
        self.moments = torch.zeros(d_mlp, 4, dtype=torch.float64, device=self.device)
        self.n_positive = torch.zeros(d_mlp, dtype=torch.int64, device=self.device)
        self.n_above = torch.zeros(d_mlp, dtype=torch.int64, device=self.device)
        self.vmax = torch.full((d_mlp,), -math.inf, device=self.device)
        self.vmin = torch.full((d_mlp,), math.inf, device=self.device)
        self.n_tokens = 0
        self.neuron_mask = neuron_mask.to(self.device)
        self.scratch = Scratch() if scratch is None else scratch  # batch-sized tensors

    # -- grid ---------------------------------------------------------------------------------
    def width(self) -> torch.Tensor:
        """Bin width per neuron, ``[d_mlp]`` float32."""
        return torch.ldexp(torch.ones(self.d, device=self.device), self.exp + H0_EXP)

    def bins(self, values: torch.Tensor, neurons: torch.Tensor | None = None) -> torch.Tensor:
        """Grid bin of each value (``values [..., d_mlp]``, or flat with ``neurons``)."""
        h = self.width() if neurons is None else at(self.width(), neurons)
        return batch_pass.grid_bin(values, h).long() + HALF_BINS

    def _grow(self, max_abs: torch.Tensor) -> None:
        """Coarsen the grid of neurons whose largest magnitude no longer fits."""
        _, exponent = torch.frexp(max_abs.float() / HALF_BINS * 2.0**-H0_EXP)
        need = torch.where(max_abs > 0, exponent.long(), 0).clamp_(min=0)
        grow = need > self.exp
        if not grow.any():
            return
        steps = (need - self.exp).clamp(min=0)
        old_width, factor = self.width(), torch.ldexp(torch.ones_like(self.vmax), steps)
        self.exp = torch.maximum(self.exp, need)
        grid = torch.arange(-HALF_BINS, HALF_BINS, device=self.device)
        centres = (grid + 0.5) * old_width[:, None]
        new_bins = torch.floor(centres / (old_width * factor)[:, None]).long() + HALF_BINS
        counts = torch.zeros_like(self.counts)
        self.counts = counts.scatter_add_(1, new_bins, self.counts)
        grown = torch.nonzero(grow).squeeze(1)
        self.pool.regroup(grown, new_bins[grown])

    def _sample_group(self, value: torch.Tensor, neuron: torch.Tensor) -> torch.Tensor:
        """The (neuron, grid bin) sample group of each value, flat with its neuron."""
        return neuron * (2 * HALF_BINS) + self.bins(value, neuron)

    def _offer_entries(self, slots: Slots, entries: Entries) -> None:
        """Offer kept examples (another stream's, or regridded ones) to ``slots``."""
        group = entries.neuron
        if slots is self.pool:
            group = self._sample_group(entries.value, entries.neuron)
        target, taken = slots.keep_best(group, entries.value, entries.position,
                                        entries.key if slots.key is not None else None)
        other = None if entries.other is None else at(entries.other, taken)
        slots.write_windows(target, (at(entries.ids, taken), at(entries.acts, taken), other))

    # -- streaming ----------------------------------------------------------------------------
    def _windows(self, tokens: torch.Tensor, row: torch.Tensor, columns: list) -> list:
        """Context windows of the elements at rows ``row`` (of ``[batch * pos]``) whose window
        may cross the ends of their sequence (those positions: id -1, value nan): ids, then the
        values of each ``(activations, neuron)`` of ``columns``."""
        n_pos = tokens.shape[1]
        offset = row % n_pos
        within = offset[:, None] + torch.arange(-self.before, self.after + 1, device=row.device)
        outside = (within < 0) | (within >= n_pos)
        rows = (row - offset)[:, None] + within.clamp_(0, n_pos - 1)  # flat rows of the window
        ids = torch.take(tokens.to(torch.int32), rows).masked_fill_(outside, -1)
        rows.mul_(self.d)

        def values(a: torch.Tensor, neuron: torch.Tensor) -> torch.Tensor:
            return torch.take(a, rows + neuron[:, None]).float().masked_fill_(outside, math.nan)

        return [ids] + [values(a, neuron) for a, neuron in columns]

    def _inner_windows(self, tokens: torch.Tensor, row: torch.Tensor, columns: list) -> list:
        """``_windows`` of elements whose window lies within their sequence: each a run of
        ``window`` elements of a strided view of the batch, gathered whole (a third of the time
        of indexing every element)."""
        start = row - self.before
        n_rows = tokens.numel() - self.window + 1
        ids = tokens.to(torch.int32).view(-1).as_strided((n_rows, self.window), (1, 1))

        def values(a: torch.Tensor, neuron: torch.Tensor) -> torch.Tensor:
            runs = a.contiguous().view(-1).as_strided((n_rows * self.d, self.window), (1, self.d))
            return runs[start * self.d + neuron].float()

        return [ids.index_select(0, start)] + [values(a, neuron) for a, neuron in columns]

    def _admit(self, batch: tuple, slots: Slots, element: torch.Tensor,
               group: torch.Tensor | None = None, key: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Offer the batch's elements ``element`` (indices into ``[tokens * d_mlp]``, in the
        batch's order) to ``slots``, in groups ``group`` (default: their neurons), with their
        ``key`` where the slots are keyed. Returns the slots written and the element each took,
        in the batch's order (no sort: the offered elements are in it already)."""
        positions, v = batch[3], batch[-1]
        group = element % self.d if group is None else group
        target, taken = slots.keep_best(group, at(v.view(-1), element),
                                        at(positions.reshape(-1), element // self.d), key)
        slot_of = torch.full_like(element, -1).index_copy_(0, taken, target)
        took = torch.nonzero(slot_of >= 0).squeeze(1)
        return at(slot_of, took), at(element, took)

    def _cut_windows(self, batch: tuple, slots: Slots, target: torch.Tensor,
                     element: torch.Tensor) -> None:
        """Write the windows of the slots ``target`` that took the batch's elements ``element``,
        once, when the batch is done: an element pushed out again by a later one of the same
        batch never has its window cut. Windows are cut in the batch's order, which reads it
        front to back (on the CPU, 2.5 times as fast as in the slots' order)."""
        acts, other, tokens = batch[:3]
        row, neuron = element // self.d, element % self.d
        offset = row % acts.shape[1]
        inside = (offset >= self.before) & (offset < acts.shape[1] - self.after)
        for part, cut in ((inside, self._inner_windows), (~inside, self._windows)):
            index = torch.nonzero(part).squeeze(1)
            if len(index):
                of = at(neuron, index)
                columns = [(acts, of)]
                if slots.other is not None:
                    columns.append((other, of) if self.partner is None
                                   else (acts, at(self.partner, of)))
                ids, *values = cut(tokens, at(row, index), columns)
                other_values = values[1] if len(values) > 1 else None
                slots.write_windows(at(target, index), (ids, values[0], other_values))

    @torch.no_grad()
    def update(self, acts: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor,
               other: torch.Tensor | None = None) -> None:
        """Add ``acts [batch, pos, d_mlp]`` of ``tokens [batch, pos]`` at global ``positions
        [batch, pos]``; ``other`` is the other point's activations on the same tokens."""
        if (other is None) != (self.top.other is None or self.partner is not None):
            raise ValueError("pass the other point's activations exactly when the stream keeps "
                             "them (with_other) from no columns of its own (partners)")
        v = acts.reshape(-1, self.d).float()  # [tokens, d_mlp]
        keys = position_keys(positions.reshape(-1), self.seed)  # [tokens]
        batch = (acts, other, tokens, positions, keys, v)
        if c_stats.ready(v):  # C: the extremes, then the rest
            v = v.contiguous()
            run_max, run_min, non_finite = c_stats.extremes(v, batch_pass.row_runs(len(v)))
            _refuse_non_finite(non_finite, v.numel())
            self.n_tokens += v.shape[0]
            self._extend(run_max.amax(0), run_min.amin(0))  # the C pass grows the grids
            other_v = None if other is None else other.reshape(-1, self.d)
            if self.partner is not None:
                other_v = v.index_select(1, self.partner)
            c_stats.stream_batch(self, HALF_BINS, H0_EXP, v, other_v, tokens, positions, keys,
                                 self._top_floor(run_max, v))
            return
        run_max, batch_min, sums, n_positive, n_above = batch_pass.summaries(v, self.threshold)
        batch_max = run_max.amax(0)
        _check_finite(v, batch_min, batch_max)
        self.n_tokens += v.shape[0]
        self._extend(batch_max, batch_min)
        self._grow(self._max_abs())
        group = batch_pass.groups(self.scratch.get("group", tuple(v.shape), torch.int32, v.device),
                                  v, self.width())
        self.moments += sums
        self.n_positive += n_positive
        self.n_above += n_above
        self.counts += batch_pass.count_groups(group, self.counts.numel()).view_as(self.counts)
        self._offer(batch, group, run_max)

    def _extend(self, batch_max: torch.Tensor, batch_min: torch.Tensor) -> None:
        """Take new per-neuron extremes (a batch's, or another stream's) into the stream's."""
        self.vmax = torch.maximum(self.vmax, batch_max)
        self.vmin = torch.minimum(self.vmin, batch_min)

    def _max_abs(self) -> torch.Tensor:
        """Each neuron's largest magnitude so far: what its grid must fit."""
        return torch.maximum(self.vmax.abs(), self.vmin.abs())

    def _top_floor(self, run_max: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per neuron, a value below which nothing of the batch ``v`` can enter the top-k: the
        kept k-th and, while slots are free, a floor of the batch's own k-th (the k-th largest
        of the maxima of ``run_max``'s runs of rows: k distinct values, where there are k
        runs)."""
        kth = self.top.worst()
        if torch.isinf(kth).any():
            tops = run_max if len(run_max) >= self.k else v
            kth = torch.maximum(kth, torch.topk(tops, min(self.k, len(tops)), dim=0).values[-1])
        return kth

    def _offer(self, batch: tuple, group: torch.Tensor, run_max: torch.Tensor) -> None:
        """Offer the values that can enter the top-k and those whose key can enter their bin's
        sample, all in one ``keep_best`` each.

        Top-k: the values at least ``_top_floor``. Samples: the values whose key is within
        their group's bound and, where the group's count has grown many times over (a first
        batch), within ``_key_ceiling``, which cuts the candidates to a few times the
        samples; a group whose kept keys do not end up all under its ceiling (a few groups in
        a million) is offered the rest of its values up to its new bound, so that what is kept
        is exact. One compiled pass marks the candidates of both (``batch_pass.candidates``)."""
        v = batch[-1]
        kth = self._top_floor(run_max, v)
        bound = torch.minimum(self.pool.worst(), self._key_ceiling())
        top, sample, sample_group, key = self._candidates(batch, group, kth, bound, bound)
        pool_taken = [self._admit(batch, self.pool, sample, sample_group, key)]
        kept = self.pool.worst()
        missed = kept > bound  # groups whose sample may take values above the ceiling
        if bool(missed.any()):  # keys above the first's: they take none of its slots
            _, sample, sample_group, key = self._candidates(
                batch, group, torch.full_like(kth, math.inf),
                torch.where(missed, kept, EMPTY_BELOW), torch.where(missed, kept, bound),
                above=bound)
            pool_taken.append(self._admit(batch, self.pool, sample, sample_group, key))
        self._cut_windows(batch, self.top, *self._admit(batch, self.top, top))
        for target, element in pool_taken:
            self._cut_windows(batch, self.pool, target, element)

    def _key_ceiling(self) -> torch.Tensor:
        """Per sample group, a key under which at least ``samples`` of the values the group
        has seen (``counts``, this batch's included) fall, almost surely: keys are uniform, so
        ``want`` of them do on average, ``SURE`` standard deviations and ``SURE`` values more
        than ``samples``. No ceiling (``EMPTY``) for groups of fewer than ``2 * want``."""
        want = self.samples + SURE * math.sqrt(self.samples) + SURE
        share = (want / self.counts.view(-1).double().clamp(min=1)).clamp(0, 0.5)
        return torch.where(share < 0.5, (share * 2.0**64 - 2.0**63).long(), EMPTY)

    def _candidates(self, batch: tuple, group: torch.Tensor, kth: torch.Tensor,
                    screen: torch.Tensor, bound: torch.Tensor,
                    above: torch.Tensor | None = None) -> tuple:
        """The batch's top-k candidates (values at least their neuron's ``kth``), and its
        sample candidates, whose key is at most their group's ``bound`` (and more than
        ``above``), with their groups and keys: elements of ``[tokens * d_mlp]``, in the batch's
        order. The compiled pass screens keys by their high 32 bits against ``screen`` (at least
        ``bound``)."""
        keys, v = batch[-2], batch[-1]
        n = v.numel()
        codes = self.scratch.get("code", (n + -n % 8,), torch.int8, v.device)
        codes[n:].zero_()  # whole words of eight codes, for ``marked``
        batch_pass.candidates(codes[:n].view(v.shape), (keys >> 32).to(torch.int32)[:, None],
                              (self.neuron_mask >> 32).to(torch.int32),
                              (screen >> 32).to(torch.int32), group, v, kth)
        element, code = batch_pass.marked(codes)
        top = element[code >= batch_pass.TOP]
        element = element[code != batch_pass.TOP]
        key = at(keys, element // self.d) ^ at(self.neuron_mask, element % self.d)
        sample_group = at(group.view(-1), element).long()
        within = key <= at(bound, sample_group)
        if above is not None:
            within &= key > at(above, sample_group)
        exact = torch.nonzero(within).squeeze(1)
        return top, at(element, exact), at(sample_group, exact), at(key, exact)

    def to(self, device) -> None:
        """Move every tensor to ``device`` (streams travel between ranks on the CPU)."""
        self.device = torch.device(device)
        for name, value in vars(self).items():
            if isinstance(value, (torch.Tensor, Slots)):
                setattr(self, name, value.to(device))

    # -- merging ------------------------------------------------------------------------------
    def merge(self, other: PointStream) -> None:
        """Fold another stream over disjoint tokens into this one, exactly."""
        self.n_tokens += other.n_tokens
        self.moments += other.moments
        self.n_positive += other.n_positive
        self.n_above += other.n_above
        self._extend(other.vmax, other.vmin)
        max_abs = self._max_abs()
        other._grow(max_abs)
        self._grow(max_abs)
        self.counts += other.counts
        self._offer_entries(self.top, other.top.entries())
        self._offer_entries(self.pool, other.pool.entries())


def _check_finite(v: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
    """Refuse a batch ``v`` with nan or infinite values before the stream takes any of it: they
    have no rank, no bin and no moments. Its extremes ``low`` and ``high`` (of the batch, or
    per neuron) are finite only when all its values are."""
    if not bool(torch.isfinite(low).all() & torch.isfinite(high).all()):
        refuse_non_finite(v)


def refuse_non_finite(v: torch.Tensor) -> None:
    """The error for activations ``v`` with nan or infinite values, if they have any."""
    _refuse_non_finite(int((~torch.isfinite(v)).sum()), v.numel())


def _refuse_non_finite(count: int, total: int) -> None:
    """The error for a batch with ``count`` nan or infinite values of ``total``, if any."""
    if count:
        raise SolulabError(f"{count:,} of {total:,} activations in this batch are nan or "
                           "infinite")


def _dense(entries: Entries, slot: torch.Tensor, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Entries scattered into ``[*shape]`` (and ``[*shape, window]``) arrays, padded with -1
    positions and nan values."""
    rows = shape[0] * shape[1]
    window = entries.ids.shape[1]

    def scatter(values: torch.Tensor, fill, width: int | None = None) -> np.ndarray:
        out = torch.full((rows,) if width is None else (rows, width), fill, dtype=values.dtype)
        out[slot] = values.cpu()
        return out.view(*shape, *(() if width is None else (width,))).numpy()

    arrays = {"values": scatter(entries.value, math.nan),
              "positions": scatter(entries.position, -1),
              "ids": scatter(entries.ids, -1, window),
              "acts": scatter(entries.acts, math.nan, window)}
    if entries.other is not None:
        arrays["other"] = scatter(entries.other, math.nan, window)
    return arrays


def finalize(stream: PointStream, n_intervals: int) -> dict[str, np.ndarray]:
    """The stream as NumPy arrays for the store: ``top.*`` ``[d_mlp, k(, window)]``,
    ``samples.*`` ``[d_mlp, n_intervals, samples(, window)]`` with ``interval_edges``
    ``[d_mlp, n_intervals + 1]`` (nan past a neuron's last interval), and statistics."""
    d = stream.d
    top = stream.top.entries()
    top = top.take(select(top.neuron, -top.value, top.position, stream.k))
    slot = top.neuron * stream.k + rank_in_group(top.neuron)
    out = {f"top.{name}": a for name, a in _dense(top, slot, (d, stream.k)).items()}

    # Final intervals: the grid bins from min to max split into at most n_intervals runs.
    width = stream.width()
    low, high = stream.bins(stream.vmin), stream.bins(stream.vmax)  # [d_mlp]
    occupied = (high - low + 1).clamp(min=1)
    n_groups = occupied.clamp(max=n_intervals)
    i = torch.arange(n_intervals + 1)
    bin_edges = low[:, None] + torch.div(i * occupied[:, None], n_groups[:, None],
                                         rounding_mode="floor")
    valid = i[None] <= n_groups[:, None]
    bin_edges = torch.where(valid, bin_edges, torch.iinfo(torch.int64).max)
    edges = (bin_edges - HALF_BINS).double() * width.double()[:, None]
    out["interval_edges"] = torch.where(valid, edges, math.nan).numpy()

    pool = stream.pool.entries()
    entry_bins = stream.bins(pool.value, pool.neuron)
    interval = (entry_bins[:, None] >= bin_edges[pool.neuron]).sum(1) - 1  # [entries]
    group = pool.neuron * n_intervals + interval
    kept = pool.take(select(group, pool.key, None, stream.samples))
    kept_group = kept.neuron * n_intervals + (
        (stream.bins(kept.value, kept.neuron)[:, None] >= bin_edges[kept.neuron]).sum(1) - 1)
    slot = kept_group * stream.samples + rank_in_group(kept_group)
    dense = _dense(kept, slot, (d * n_intervals, stream.samples))
    for name, a in dense.items():
        out[f"samples.{name}"] = a.reshape(d, n_intervals, *a.shape[1:])

    n = max(stream.n_tokens, 1)
    m1, m2, m3, m4 = (stream.moments[:, j] / n for j in range(4))
    var = (m2 - m1 * m1).clamp(min=0)
    central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
    kurtosis = torch.where(var > 0, central4 / var.clamp(min=1e-300) ** 2 - 3, math.nan)
    out["stats"] = torch.stack([
        stream.vmax.double(), stream.vmin.double(), m1, var.sqrt(), kurtosis,
        stream.n_positive.double() / n, stream.n_above.double() / n]).T.numpy()
    out["hist_counts"] = stream.counts.cpu().numpy()
    out["hist_width"] = width.double().cpu().numpy()
    return out
