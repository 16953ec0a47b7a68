"""The collector's PyTorch pass over a batch, compiled and eager, against NumPy."""

import numpy as np
import pytest
import torch

from solulab.neurons import batch_pass


def _batch(tokens: int = 300, d: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(tokens, d, generator=gen) * 2
    v[::5, 0] = 0.0  # exactly zero: not above zero
    v[1::7, 1] = 0.5  # exactly the threshold: not above it
    v[2::9, 2] = -0.25  # exactly a bin edge
    width = torch.ldexp(torch.ones(d), torch.tensor([-3, -2, -1, 0, -3, -4, -2]))
    return v, width


def _numpy_statistics(v: np.ndarray, width: np.ndarray, threshold: float):
    bins = np.clip(np.floor(v / width), -16, 15).astype(np.int64) + 16
    group = bins + np.arange(v.shape[1]) * 32
    v64 = v.astype(np.float64)
    sums = np.stack([(v64**p).sum(0) for p in (1, 2, 3, 4)], 1)
    return group, sums, (v > 0).sum(0), (v > threshold).sum(0)


@pytest.mark.parametrize("run", [batch_pass.statistics, batch_pass._statistics],
                         ids=["compiled", "eager"])
def test_statistics_equal_numpy(run):
    v, width = _batch()
    group, sums, n_positive, n_above = run(v, width, 0.5)
    want = _numpy_statistics(v.numpy(), width.numpy(), 0.5)
    np.testing.assert_array_equal(group.numpy(), want[0])
    np.testing.assert_allclose(sums.numpy(), want[1], rtol=1e-12)
    np.testing.assert_array_equal(n_positive.numpy(), want[2])
    np.testing.assert_array_equal(n_above.numpy(), want[3])
    assert n_positive[0] == 300 - 60 - int((v[:, 0] < 0).sum())


def test_sample_screen_equals_the_rule_element_by_element():
    gen = torch.Generator().manual_seed(4)
    rows, d = 50, 6
    high_keys = torch.randint(-2**31, 2**31, (rows, 1), generator=gen, dtype=torch.int32)
    high_mask = torch.randint(-2**31, 2**31, (d,), generator=gen, dtype=torch.int32)
    key_bound = torch.randint(-2**31, 2**31, (d,), generator=gen, dtype=torch.int32)
    group = torch.randint(0, 32, (rows, d), generator=gen, dtype=torch.int32) + \
        torch.arange(d, dtype=torch.int32) * 32
    low = torch.tensor([0, 3, 32, 10, 0, 31], dtype=torch.int32) + torch.arange(d) * 32
    high = torch.tensor([32, 20, 32, 11, 1, 32], dtype=torch.int32) + torch.arange(d) * 32
    got = batch_pass.sample_screen(high_keys, high_mask, key_bound, group, low.int(), high.int())
    for i in range(rows):
        for j in range(d):
            passes = int(high_keys[i, 0] ^ high_mask[j]) <= int(key_bound[j])
            outside = not int(low[j]) <= int(group[i, j]) < int(high[j])
            assert bool(got[i, j]) == (passes or outside)


def test_a_failed_compile_falls_back_to_the_same_ops(monkeypatch):
    def cannot_compile(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", cannot_compile)
    run = batch_pass._compiled_or_eager(batch_pass._statistics)
    v, width = _batch()
    with pytest.warns(UserWarning, match="uncompiled PyTorch ops"):
        first = run(v, width, 0.5)
    second = run(v, width, 0.5)  # no second try, no second warning
    for a, b, c in zip(first, second, batch_pass._statistics(v, width, 0.5)):
        assert torch.equal(a, c) and torch.equal(b, c)
