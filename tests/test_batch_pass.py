"""The collector's PyTorch pass over a batch, compiled and eager, against NumPy."""

import math

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
    return group, v.max(0), v.min(0), sums, (v > 0).sum(0), (v > threshold).sum(0)


def _eager_summaries(v: torch.Tensor, threshold: float):
    return batch_pass._summaries(v, threshold, batch_pass.row_runs(len(v)))


@pytest.mark.parametrize("summaries, groups",
                         [(batch_pass.summaries, batch_pass.groups),
                          (_eager_summaries, batch_pass._into(batch_pass._groups))],
                         ids=["compiled", "eager"])
@pytest.mark.parametrize("tokens", [300, 301])  # four runs of 75 rows; one run of 301
def test_summaries_and_groups_equal_numpy(summaries, groups, tokens):
    v, width = _batch(tokens)
    out = torch.full(v.shape, -7, dtype=torch.int32)  # written over, every element
    group, run_max, *rest = (groups(out, v, width), *summaries(v, 0.5))
    assert group.data_ptr() == out.data_ptr()
    runs = batch_pass.row_runs(tokens)
    np.testing.assert_array_equal(run_max.numpy(), v.view(runs, -1, v.shape[1]).amax(1).numpy())
    got = (group, run_max.amax(0), *rest)
    want = _numpy_statistics(v.numpy(), width.numpy(), 0.5)
    for name, a, b in zip(["group", "max", "min", "sums", "positive", "above"], got, want):
        if name == "sums":
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-12)
        else:
            np.testing.assert_array_equal(a.numpy(), b, err_msg=name)
    assert got[4][0] == tokens - len(range(0, tokens, 5)) - int((v[:, 0] < 0).sum())
    assert got[5][1] == int((v[:, 1] > 0.5).sum())  # the exact threshold is not above it


@pytest.mark.parametrize("run", [batch_pass.candidates,
                                 batch_pass._into(batch_pass._candidates)],
                         ids=["compiled", "eager"])
def test_candidates_equal_the_rule_element_by_element(run):
    gen = torch.Generator().manual_seed(4)
    rows, d = 50, 6
    high_keys = torch.randint(-2**31, 2**31, (rows, 1), generator=gen, dtype=torch.int32)
    high_mask = torch.randint(-2**31, 2**31, (d,), generator=gen, dtype=torch.int32)
    bound_high = torch.randint(-2**31, 2**31, (d * 32,), generator=gen, dtype=torch.int32)
    bound_high[::7] = 2**31 - 1  # free slots: every key passes
    group = torch.randint(0, 32, (rows, d), generator=gen, dtype=torch.int32) + \
        torch.arange(d, dtype=torch.int32) * 32
    v = torch.randn(rows, d, generator=gen)
    kth = torch.tensor([-math.inf, 0.5, 1.0, 3.0, -0.5, 0.0])
    v[3, 1] = 0.5  # exactly the k-th: a candidate
    out = torch.full((rows, d), -1, dtype=torch.int8)  # written over, every element
    got = run(out, high_keys, high_mask, bound_high, group, v, kth)
    assert got.data_ptr() == out.data_ptr()
    for i in range(rows):
        for j in range(d):
            sample = int(high_keys[i, 0] ^ high_mask[j]) <= int(bound_high[group[i, j]])
            top = float(v[i, j]) >= float(kth[j])
            assert int(got[i, j]) == sample * batch_pass.SAMPLE + top * batch_pass.TOP
    assert set(got.unique().tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("density", [0.0, 0.003, 0.5, 1.0])
def test_marked_finds_every_nonzero_code_with_its_value(density):
    gen = torch.Generator().manual_seed(5)
    codes = torch.randint(1, 4, (8 * 1000,), generator=gen, dtype=torch.int8)
    codes[torch.rand(len(codes), generator=gen) >= density] = 0
    codes[-1] = 3  # the last code of the last word
    index, values = batch_pass.marked(codes)
    want = torch.nonzero(codes).squeeze(1)
    assert torch.equal(index, want)
    assert torch.equal(values, codes[want])


def test_a_failed_compile_falls_back_to_the_same_ops(monkeypatch):
    def cannot_compile(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", cannot_compile)
    run = batch_pass._compiled_or_eager(batch_pass._summaries)
    v, _ = _batch()
    with pytest.warns(UserWarning, match="uncompiled PyTorch ops"):
        first = run(v, 0.5, 3)
    second = run(v, 0.5, 3)  # no second try, no second warning
    for a, b, c in zip(first, second, batch_pass._summaries(v, 0.5, 3)):
        assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("threads", [1, 3])
def test_counting_groups_thread_by_thread_equals_one_bincount(threads):
    gen = torch.Generator().manual_seed(5)
    group = torch.randint(0, 40, (10, 7), generator=gen, dtype=torch.int32)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = batch_pass.count_groups(group, 50)
    finally:
        torch.set_num_threads(before)
    want = np.bincount(group.numpy().ravel(), minlength=50)
    np.testing.assert_array_equal(got.numpy(), want)
    assert got.dtype == torch.int64 and got.sum() == 70


def test_counting_groups_by_adding_ones_equals_bincount():
    """The way a GPU counts (no host sync), on the CPU against NumPy."""
    gen = torch.Generator().manual_seed(6)
    group = torch.randint(0, 40, (10, 7), generator=gen, dtype=torch.int32)
    got = batch_pass.add_counts(group, 50)
    np.testing.assert_array_equal(got.numpy(), np.bincount(group.numpy().ravel(), minlength=50))
    assert got.dtype == torch.int64
