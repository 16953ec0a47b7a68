"""``select``, the ranking every kept example goes through, against a plain Python sort."""

import math

import torch

from solulab.neurons.slots import select


def _by_python(groups, primary, secondary, capacity):
    rows = sorted(range(len(groups)), key=lambda i: (groups[i], primary[i], secondary[i]))
    kept, seen = [], {}
    for i in rows:
        seen[groups[i]] = seen.get(groups[i], 0) + 1
        if seen[groups[i]] <= capacity:
            kept.append(i)
    return kept


def test_float_ranks_break_ties_by_position_and_treat_signed_zeros_alike():
    gen = torch.Generator().manual_seed(5)
    n = 400
    groups = torch.randint(0, 9, (n,), generator=gen)
    values = torch.randint(0, 3, (n,), generator=gen).float() / 4  # many ties, zeros kept
    values[::11] = -0.0
    values[::37] = -math.inf  # free slots
    values[::17] = -1e-45  # the smallest subnormal
    positions = torch.randperm(n, generator=gen)
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
