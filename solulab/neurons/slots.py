"""Fixed slots for the examples a stream keeps, and the flat form they are merged and stored in.

A ``Slots`` holds ``capacity`` examples in each of ``groups`` groups (the top-k: a group per
neuron; the interval samples: a group per (neuron, grid bin)). Within a group, examples rank by
(-value, position), or by (key, position) where the slots have keys; a group keeps its
``capacity`` best. Memory is fixed when the stream starts. Admitting candidates touches only
their groups: in PyTorch ops (any device) or, on the CPU, in the collector's C pass, which
replaces a group's worst slot (``c_stats.stream_batch``). Both keep the same examples: the
ranking is a total order, as positions are unique.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EMPTY = torch.iinfo(torch.int64).max  # the position (and key) of a free slot

Windows = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # ids, acts, other


def at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for an int64 ``index`` into the first axis, by ``index_select``: on the
    CPU twice as fast as indexing (16 -> 7 ms for a million values of 16 million, here)."""
    return values.index_select(0, index)


@dataclass
class Entries:
    """A flat set of kept examples: neuron, value, global position, key, window ids and acts."""

    neuron: torch.Tensor  # [n] int64
    value: torch.Tensor  # [n] float32
    position: torch.Tensor  # [n] int64
    key: torch.Tensor  # [n] int64
    ids: torch.Tensor  # [n, window] int32, -1 outside the sequence
    acts: torch.Tensor  # [n, window] float32, nan outside the sequence
    other: torch.Tensor | None  # [n, window] activations at the other point

    def take(self, index: torch.Tensor) -> Entries:
        other = None if self.other is None else at(self.other, index)
        return Entries(at(self.neuron, index), at(self.value, index), at(self.position, index),
                       at(self.key, index), at(self.ids, index), at(self.acts, index), other)


def select(groups: torch.Tensor, primary: torch.Tensor, secondary: torch.Tensor | None,
           capacity: int) -> torch.Tensor:
    """Indices of the entries kept: per group, the ``capacity`` smallest by (primary, secondary),
    returned in (group, primary, secondary) order. ``secondary`` may be None where no two
    entries of a group tie on ``primary`` (keys: distinct positions of a neuron have distinct
    keys); on the CPU, one already in order (a batch's positions, offered in the batch's order)
    is not sorted by. The checks that save sorts on the CPU are skipped elsewhere: on a GPU a
    sort costs less than the host sync a check takes."""
    on_cpu = groups.device.type == "cpu"
    by_secondary = None
    if secondary is not None and not (on_cpu and _nondecreasing(secondary)):
        by_secondary = torch.argsort(secondary, stable=True)
        groups, primary = at(groups, by_secondary), at(primary, by_secondary)
    order = _by_group_then_primary(groups, primary, packable=on_cpu and secondary is None)
    kept = order[rank_in_group(at(groups, order)) < capacity]
    return kept if by_secondary is None else at(by_secondary, kept)


def _nondecreasing(values: torch.Tensor) -> bool:
    return len(values) < 2 or bool((values[1:] >= values[:-1]).all())


def _by_group_then_primary(groups: torch.Tensor, primary: torch.Tensor,
                           packable: bool) -> torch.Tensor:
    """The entries' stable order by (group, primary), in one sort where it can: a float32
    ``primary`` as one int64 with its group; an int64 one, ``packable`` (unique within each
    group), by its group and high bits (``_by_group_then_high_bits``); otherwise two."""
    if primary.dtype == torch.float32:
        return torch.argsort(_group_then_float(groups, primary), stable=True)
    if packable:
        order = _by_group_then_high_bits(groups, primary)
        if order is not None:
            return order
    order = torch.argsort(primary, stable=True)
    return at(order, torch.argsort(at(groups, order), stable=True))


def _by_group_then_high_bits(groups: torch.Tensor, primary: torch.Tensor) -> torch.Tensor | None:
    """The order of int64 ``primary`` within ``groups`` from one sort of an int64 holding the
    group in its high bits and as many of ``primary``'s high bits as fit below (at least 32);
    None where the groups leave less room or two entries of a group share those bits (two
    random keys of a group do with a chance of 2**-32 at most)."""
    if not len(groups):
        return groups
    shift = 63 - int(groups.max()).bit_length()  # the bits left for the primary
    if shift < 32:
        return None
    high = (primary >> (64 - shift)) + (1 << (shift - 1))  # in [0, 2**shift), monotone
    packed, order = torch.sort((groups << shift) | high)
    distinct = len(packed) < 2 or bool((packed[1:] > packed[:-1]).all())
    return order if distinct else None


def _group_then_float(groups: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered as (group, value): the group (below 2**31) in the high 32 bits, the
    float's bits made monotone in the low 32 (-0.0 as +0.0, which compare equal)."""
    bits = (values + 0.0).view(torch.int32)
    monotone = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long() + 2**31
    return (groups.long() << 32) | monotone


def rank_in_group(groups: torch.Tensor) -> torch.Tensor:
    """Position of each entry within its run of equal, sorted ``groups``."""
    first = torch.ones_like(groups, dtype=torch.bool)
    first[1:] = groups[1:] != groups[:-1]
    index = torch.arange(len(groups), device=groups.device)
    return index - torch.cummax(torch.where(first, index, 0), 0).values


@dataclass
class Slots:
    """``capacity`` examples per group; see the module docstring. ``per_neuron`` groups belong
    to each neuron (group ``g`` is neuron ``g // per_neuron``)."""

    value: torch.Tensor  # [groups, capacity] float32
    position: torch.Tensor  # [groups, capacity] int64, EMPTY where free
    key: torch.Tensor | None  # [groups, capacity] int64 (EMPTY where free), or no keys
    ids: torch.Tensor  # [groups, capacity, window] int32
    acts: torch.Tensor  # [groups, capacity, window] float32
    other: torch.Tensor | None  # [groups, capacity, window] float32
    per_neuron: int

    @staticmethod
    def empty(groups: int, capacity: int, window: int, keyed: bool, with_other: bool,
              per_neuron: int, device) -> Slots:
        def full(fill, dtype, *shape):
            return torch.full((groups, capacity, *shape), fill, dtype=dtype, device=device)

        return Slots(full(-math.inf, torch.float32), full(EMPTY, torch.int64),
                     full(EMPTY, torch.int64) if keyed else None,
                     full(-1, torch.int32, window), full(math.nan, torch.float32, window),
                     full(math.nan, torch.float32, window) if with_other else None, per_neuron)

    @property
    def capacity(self) -> int:
        return self.value.shape[1]

    def worst(self) -> torch.Tensor:
        """Per group, what a new example must beat: the lowest value kept (the largest key for
        keyed slots); -inf (EMPTY) while the group has a free slot."""
        return self.key.amax(1) if self.key is not None else self.value.amin(1)

    def _primary(self, value: torch.Tensor, key: torch.Tensor | None) -> torch.Tensor:
        return key if self.key is not None else -value

    def entries(self, groups: torch.Tensor | None = None) -> Entries:
        """The occupied slots (of ``groups``, default all), flat, in slot order."""
        return self._occupied(groups)[1]

    def _occupied(self, groups: torch.Tensor | None) -> tuple[torch.Tensor, Entries]:
        """The group of each occupied slot of ``groups``, and the slots as entries."""
        if groups is None:
            groups = torch.arange(self.value.shape[0], device=self.value.device)
        cap = self.capacity
        slots = (groups[:, None] * cap + torch.arange(cap, device=groups.device)).view(-1)
        slots = slots[self.position.view(-1)[slots] != EMPTY]  # only the occupied ones are read

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else at(t.view(-1, *t.shape[2:]), slots)

        group = slots // cap
        key = pick(self.key) if self.key is not None else torch.zeros_like(slots)
        return group, Entries(group // self.per_neuron, pick(self.value), pick(self.position), key,
                              pick(self.ids), pick(self.acts), pick(self.other))

    def regroup(self, owners: torch.Tensor, new_group: torch.Tensor) -> None:
        """Move the examples of keyed slots between the groups of each owner (a neuron and its
        ``per_neuron`` consecutive groups): group ``j`` of owner ``owners[i]`` goes to its group
        ``new_group[i, j]``, and each group keeps its ``capacity`` smallest keys (a neuron's
        keys are distinct). The same examples as emptying the groups and offering back what
        they held, ranked by ``select`` among themselves alone, without the general merge."""
        key = self.key
        assert key is not None, "regroup ranks by key"
        per, cap = self.per_neuron, self.capacity
        width = per * cap  # the slots of one owner, consecutive
        holding = (self.position.view(-1, width)[owners] != EMPTY).any(1)
        owners, new_group = owners[holding], new_group[holding]  # empty owners stay empty
        slot = (owners[:, None] * width + torch.arange(width, device=owners.device)).view(-1)
        # each slot's new group, numbered across the owners: owner row * per + its new group
        row = torch.arange(len(owners), device=owners.device)[:, None]
        group = (row * per + new_group).repeat_interleave(cap, dim=1).view(-1)
        index = select(group, at(key.view(-1), slot), None, cap)
        kept_group = at(group, index)
        source = at(slot, index)
        dest = (owners[kept_group // per] * width + kept_group % per * cap
                + rank_in_group(kept_group))
        fields = [self.value, self.position, key]
        windows = [t for t in (self.ids, self.acts, self.other) if t is not None]
        moved = [at(t.view(-1), source) for t in fields] + [
            at(t.view(-1, t.shape[-1]), source) for t in windows]
        self.value.view(-1)[slot] = -math.inf
        self.position.view(-1)[slot] = EMPTY
        key.view(-1)[slot] = EMPTY
        for t, new in zip(fields, moved):
            t.view(-1)[dest] = new
        for t, new in zip(windows, moved[len(fields):]):
            t.view(-1, t.shape[-1])[dest] = new

    def keep_best(self, group: torch.Tensor, value: torch.Tensor, position: torch.Tensor,
                  key: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Offer examples to groups ``group``: each touched group keeps its ``capacity`` best of
        what it held and what it is offered. Only the slots whose example is replaced are
        written. Returns the slots written and, for each, the index of the offered example it
        took; their windows are the caller's to write (``write_windows``), once the slots are
        settled.

        Only the offered are ranked among themselves; the held rows of the touched groups are
        sorted within the row. The offered example ranked ``r`` in its group enters exactly when
        it beats the held example ranked ``capacity - 1 - r`` (then fewer than ``capacity``
        examples beat it), and takes that one's slot: the examples pushed out are the group's
        worst held, as many as enter (free slots rank last, so they go first)."""
        if not len(group):
            return group, group
        cap = self.capacity
        primary = self._primary(value.float(), key)
        offered = select(group, primary, None if self.key is not None else position, cap)
        offered_group = at(group, offered)
        touched, row = torch.unique_consecutive(offered_group, return_inverse=True)
        slots = touched[:, None] * cap + torch.arange(cap, device=group.device)
        held_order = self._held_order(slots)
        held = at(slots.gather(1, held_order).view(-1),
                  row * cap + (cap - 1) - rank_in_group(offered_group))
        if self.key is not None:
            enters = at(key, offered) < at(self.key.view(-1), held)
        else:
            mine, theirs = at(primary, offered), -at(self.value.view(-1), held)
            enters = (mine < theirs) | ((mine == theirs) & (
                at(position, offered) < at(self.position.view(-1), held)))
        target, admitted = held[enters], offered[enters]
        self.value.view(-1)[target] = at(value, admitted).float()
        self.position.view(-1)[target] = at(position, admitted)
        if self.key is not None:
            self.key.view(-1)[target] = at(key, admitted)
        return target, admitted

    def _held_order(self, slots: torch.Tensor) -> torch.Tensor:
        """For rows of slots ``[groups, capacity]`` (a group each), the order of each row's
        examples, best first: by key, or by (-value, position); free slots last. On the CPU, by
        value alone, and by position too only in the rows that hold a value twice (a few in a
        thousand: tokens alike up to the first position, or free slots)."""
        if self.key is not None:
            return torch.sort(self.key.view(-1)[slots], dim=1).indices
        if slots.device.type != "cpu":
            return self._by_value_then_position(slots)
        ordered, order = torch.sort(-self.value.view(-1)[slots], dim=1)
        tied = torch.nonzero((ordered[:, 1:] == ordered[:, :-1]).any(1)).squeeze(1)
        if len(tied):
            order[tied] = self._by_value_then_position(at(slots, tied))
        return order

    def _by_value_then_position(self, slots: torch.Tensor) -> torch.Tensor:
        """``_held_order`` of unkeyed slots: by (-value, position) in two stable sorts."""
        by_position = torch.sort(self.position.view(-1)[slots], dim=1, stable=True).indices
        value = self.value.view(-1)[slots.gather(1, by_position)]
        return by_position.gather(1, torch.sort(-value, dim=1, stable=True).indices)

    def write_windows(self, slots: torch.Tensor, windows: Windows) -> None:
        """Write the windows ``(ids, acts, other)`` of the examples in ``slots``."""
        for slots_of, new in zip((self.ids, self.acts, self.other), windows):
            if slots_of is not None:  # index_copy_: half the time of assigning by index
                slots_of.view(-1, slots_of.shape[-1]).index_copy_(0, slots, new.to(slots_of.dtype))

    def to(self, device) -> Slots:
        return Slots(*(None if t is None else t.to(device) for t in (
            self.value, self.position, self.key, self.ids, self.acts, self.other)),
            self.per_neuron)
