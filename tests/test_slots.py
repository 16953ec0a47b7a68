"""``select``, the ranking every kept example goes through, and ``Slots.keep_best``, which
admits offered examples, against a plain Python sort."""

import copy
import math

import pytest
import torch

from solulab.neurons.slots import EMPTY, Slots, select


def _by_python(groups, primary, secondary, capacity):
    rows = sorted(range(len(groups)), key=lambda i: (groups[i], primary[i], secondary[i]))
    kept, seen = [], {}
    for i in rows:
        seen[groups[i]] = seen.get(groups[i], 0) + 1
        if seen[groups[i]] <= capacity:
            kept.append(i)
    return kept


@pytest.mark.parametrize("positions_in_order", [False, True])
def test_float_ranks_break_ties_by_position_and_treat_signed_zeros_alike(positions_in_order):
    gen = torch.Generator().manual_seed(5)
    n = 400
    groups = torch.randint(0, 9, (n,), generator=gen)
    values = torch.randint(0, 3, (n,), generator=gen).float() / 4  # many ties, zeros kept
    values[::11] = -0.0
    values[::37] = -math.inf  # free slots
    values[::17] = -1e-45  # the smallest subnormal
    # offered in position order (a batch's candidates), select does not sort by them again
    positions = torch.arange(n) * 3 if positions_in_order else torch.randperm(n, generator=gen)
    got = select(groups, values, positions, 5).tolist()
    # -0.0 == 0.0 in Python too, so the reference ties them as floats do
    assert got == _by_python(groups.tolist(), values.tolist(), positions.tolist(), 5)


def test_keys_unique_within_a_group_need_no_secondary():
    gen = torch.Generator().manual_seed(6)
    n = 300
    groups = torch.randint(0, 7, (n,), generator=gen)
    keys = torch.randint(-2**63, 2**63 - 1, (n,), generator=gen)
    positions = torch.randperm(n, generator=gen)
    with_positions = select(groups, keys, positions, 4).tolist()
    assert select(groups, keys, None, 4).tolist() == with_positions
    assert with_positions == _by_python(groups.tolist(), keys.tolist(), positions.tolist(), 4)


@pytest.mark.parametrize("group_limit", [7, 2**40])
def test_keys_sharing_their_high_bits_or_groups_too_many_to_pack_rank_in_full(group_limit):
    """Keys of a group equal but for their lowest bits, the extreme int64 keys, and group
    numbers too large to share an int64 with the keys' high bits: the same as a full sort."""
    gen = torch.Generator().manual_seed(7)
    n = 300
    groups = torch.randint(0, group_limit, (n,), generator=gen)
    groups[::5] = groups[0]
    keys = torch.randint(-2**63, 2**63 - 1, (n,), generator=gen)
    keys[::5] = (keys[0] & ~1023) + torch.randperm(n // 5, generator=gen)  # high bits alike
    keys[1], keys[2] = -2**63, 2**63 - 1
    got = select(groups, keys, None, 4).tolist()
    assert got == _by_python(groups.tolist(), keys.tolist(), [0] * n, 4)


def test_regroup_keeps_what_emptying_and_offering_back_keeps():
    gen = torch.Generator().manual_seed(7)
    neurons, per, cap, window = 5, 8, 3, 4
    slots = Slots.empty(neurons * per, cap, window, keyed=True, with_other=True,
                        per_neuron=per, device="cpu")
    n = 150
    position = torch.randperm(10_000, generator=gen)[:n]
    key = torch.randint(-2**63, 2**63 - 1, (n,), generator=gen)
    acts = torch.randn(n, window, generator=gen)
    target, i = slots.keep_best(torch.randint(0, neurons * per, (n,), generator=gen),
                                acts[:, 0], position, key)
    slots.write_windows(target, (position[i, None].repeat(1, window).int(), acts[i], -acts[i]))
    owners = torch.tensor([1, 3, 4])
    new_group = torch.arange(per).div(2, rounding_mode="floor").repeat(3, 1)  # pairs merge
    new_group[2] = torch.arange(per).div(4, rounding_mode="floor") + 3  # fours, moved up

    # The reference: empty the owners' groups, then offer back what they held.
    reference = copy.deepcopy(slots)
    groups = (owners[:, None] * per + torch.arange(per)).view(-1)
    old_group, held = reference._occupied(groups)
    reference.value[groups], reference.position[groups], reference.key[groups] = \
        -math.inf, EMPTY, EMPTY
    row = {int(o): r for r, o in enumerate(owners)}
    target = torch.tensor([int(g) // per * per + int(new_group[row[int(g) // per], int(g) % per])
                           for g in old_group])
    slot, i = reference.keep_best(target, held.value, held.position, held.key)
    reference.write_windows(slot, (held.ids[i], held.acts[i], held.other[i]))
    slots.regroup(owners, new_group)

    def kept(s: Slots) -> list:
        group, e = s._occupied(None)
        return sorted(zip(group.tolist(), e.key.tolist(), e.position.tolist(), e.ids.tolist(),
                          e.acts.tolist(), e.other.tolist()))

    assert len(kept(slots)) < n  # some examples were pushed out by the merges
    assert kept(slots) == kept(reference)


@pytest.mark.parametrize("levels", [5, 60, None])
def test_keep_best_keeps_the_best_of_held_and_offered_and_writes_only_the_slots_it_replaces(
        levels):
    """Rounds of offers to slots ranked by (-value, position), values on five levels (most of a
    group ties), on sixty (a tie in some groups, not in others) or all distinct, and to keyed
    slots, some groups offered more than they hold:
    after each round every group holds the ``capacity`` best it was ever offered, by a Python
    sort."""
    gen = torch.Generator().manual_seed(11)
    groups, cap = 6, 4
    for keyed in (False, True):
        slots = Slots.empty(groups, cap, 2, keyed=keyed, with_other=False, per_neuron=1,
                            device="cpu")
        offered: list[tuple[int, float, int, int]] = []  # group, primary, position, key
        positions = torch.randperm(10_000, generator=gen)
        for n in (3, 9, 25, 1, 40, 12, 30, 7):
            group = torch.randint(0, groups, (n,), generator=gen)
            value = (torch.randint(-(levels // 2), levels - levels // 2, (n,),
                                   generator=gen).float() * 0.5 if levels
                     else torch.randn(n, generator=gen))
            position, positions = positions[:n], positions[n:]
            key = torch.randint(-2**62, 2**62, (n,), generator=gen) if keyed else None
            before = (slots.value.clone(), slots.position.clone())
            target, taken = slots.keep_best(group, value, position, key)
            assert len(set(target.tolist())) == len(target)
            assert torch.equal(slots.position.view(-1)[target], position[taken])
            untouched = torch.ones(groups * cap, dtype=torch.bool)
            untouched[target] = False
            assert torch.equal(slots.value.view(-1)[untouched], before[0].view(-1)[untouched])
            assert torch.equal(slots.position.view(-1)[untouched],
                               before[1].view(-1)[untouched])
            for i in range(n):
                primary = int(key[i]) if keyed else -float(value[i])
                offered.append((int(group[i]), primary, int(position[i]), 0))
            for g in range(groups):
                want = sorted((p, pos) for gg, p, pos, _ in offered if gg == g)[:cap]
                held = [(int(k) if keyed else -float(v), int(pos))
                        for v, pos, k in zip(slots.value[g], slots.position[g],
                                             slots.key[g] if keyed else slots.position[g])
                        if int(pos) != EMPTY]
                assert sorted(held) == want
