"""A stream's top-k under heavy ties and in a first batch, and its histogram and samples while
grids grow: the C pass and the PyTorch path, against a sort and against each other; the C pass's
extremes against PyTorch's; and a batch with nan or infinite activations, refused by both
before it changes anything."""

import math

import numpy as np
import pytest
import torch

from solulab import ModelConfig, Transformer
from solulab.errors import SolulabError
from solulab.neurons import c_stats
from solulab.neurons import collect as collect_module
from solulab.neurons import stream as stream_module
from solulab.neurons.collect import Collector
from solulab.neurons.settings import StoreSettings
from solulab.neurons.stream import PointStream, finalize, position_keys

D, K, N_POS, SEQS, BATCHES = 6, 7, 16, 4, 3


def tied_batches(n_pos: int = N_POS) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches whose values take five levels only, so most of a top-k ties on its value, and
    whose positions come in no order, so that ties are decided by position whichever arrives
    first."""
    gen = torch.Generator().manual_seed(3)
    order = torch.randperm(BATCHES * SEQS * n_pos, generator=gen).view(BATCHES, SEQS, n_pos)
    out = []
    for b in range(BATCHES):
        acts = torch.randint(-2, 3, (SEQS, n_pos, D), generator=gen).float() * 0.5
        tokens = torch.randint(0, 50, (SEQS, n_pos), generator=gen)
        out.append((acts, tokens, order[b]))
    return out


def top_positions(stream: PointStream) -> list[list[int]]:
    """Each neuron's kept positions, strongest first, ties to the lower position."""
    e = stream.top.entries()
    rows = sorted(zip(e.neuron.tolist(), (-e.value).tolist(), e.position.tolist()))
    return [[p for n, _, p in rows if n == neuron] for neuron in range(D)]


def _splitmix64(position: int, seed: int) -> int:
    """splitmix64's mix of ``position + seed * golden``, in Python's unbounded integers, as a
    signed 64-bit integer."""
    mask = 2**64 - 1
    x = (position + seed * 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
    return x - 2**64 if x >= 2**63 else x


@pytest.mark.parametrize("seed", [0, 1, 7, 2**40 + 3])
def test_position_keys_are_splitmix64_of_the_positions(seed):
    positions = torch.tensor([0, 1, 2, 255, 4096, 2**31 + 5, 2**40 + 17, 2**62 + 1])
    got = position_keys(positions, seed).tolist()
    assert got == [_splitmix64(p, seed) for p in positions.tolist()]
    # splitmix64's first output from the state 0 (its published test value)
    assert position_keys(torch.tensor([0]), 1).item() == _splitmix64(0, 1) == (
        0xE220A8397B1DCDAF - 2**64)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("n_pos", [N_POS, 80])  # 64 runs of one row, or of five (batch_pass)
def test_top_k_under_ties_keeps_the_lowest_positions(native, n_pos, monkeypatch):
    if native and not c_stats.ready(torch.zeros(1)):
        pytest.skip("no C compiler here: only the PyTorch path runs")
    if not native:
        monkeypatch.setattr(c_stats, "ready", lambda v: False)
    stream = PointStream(D, K, before=2, after=1, samples=2, threshold=0.5, with_other=False)
    batches = tied_batches(n_pos)
    for acts, tokens, positions in batches:
        stream.update(acts, tokens, positions)
    values = torch.cat([a.reshape(-1, D) for a, _, _ in batches]).numpy()
    positions = torch.cat([p.reshape(-1) for _, _, p in batches]).numpy()
    for neuron, kept in enumerate(top_positions(stream)):
        expected = np.lexsort((positions, -values[:, neuron]))[:K]
        assert kept == positions[expected].tolist()


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("n_pos", [80, 5])  # 64 runs of five rows; 20 rows, 4 runs (< k)
def test_a_first_batch_of_distinct_values_keeps_its_top_k(native, n_pos, monkeypatch):
    """Both paths screen a first batch's top-k candidates with a floor under its k-th value
    (``_top_floor``); every value above the floor must be offered."""
    if native and not c_stats.ready(torch.zeros(1)):
        pytest.skip("no C compiler here: only the PyTorch path runs")
    if not native:
        monkeypatch.setattr(c_stats, "ready", lambda v: False)
    gen = torch.Generator().manual_seed(6)
    acts = torch.randn(SEQS, n_pos, D, generator=gen)
    positions = torch.arange(SEQS * n_pos).view(SEQS, n_pos)
    k = 24
    stream = PointStream(D, k, before=2, after=1, samples=2, threshold=0.5, with_other=False)
    stream.update(acts, torch.zeros_like(positions), positions)
    for neuron, kept in enumerate(top_positions(stream)):
        assert kept == torch.argsort(-acts[..., neuron].reshape(-1))[:k].tolist()


def growing_batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches whose magnitudes grow row by row, by a factor 2**16 across each, so that a
    neuron's grid coarsens many times within a batch, with candidates of earlier rows waiting."""
    gen = torch.Generator().manual_seed(4)
    out = []
    for b in range(BATCHES):
        rows = SEQS * N_POS
        scale = torch.exp2(torch.linspace(-8.0, 8.0, rows) + 4 * b).view(SEQS, N_POS, 1)
        acts = torch.randn(SEQS, N_POS, D, generator=gen) * scale
        tokens = torch.randint(0, 50, (SEQS, N_POS), generator=gen)
        positions = torch.arange(rows).view(SEQS, N_POS) + b * rows
        out.append((acts, tokens, positions))
    return out


def finalized_in_both_paths(batches: list, samples: int, n_intervals: int,
                            monkeypatch) -> tuple[dict, dict]:
    """The store arrays of a stream fed ``batches`` by the C pass, then by the PyTorch path."""
    stores = []
    for native in (True, False):
        if not native:
            monkeypatch.setattr(c_stats, "ready", lambda v: False)
        stream = PointStream(D, K, before=2, after=1, samples=samples, threshold=0.5,
                             with_other=False)
        for acts, tokens, positions in batches:
            stream.update(acts, tokens, positions)
        stores.append(finalize(stream, n_intervals=n_intervals))
    return stores[0], stores[1]


def assert_same_store(got: dict, want: dict) -> None:
    """Every array of ``got`` equal to ``want``'s; the moments (``stats``) within rounding, as
    they differ only in the order they are summed."""
    for name, array in got.items():
        if name == "stats":
            np.testing.assert_allclose(array, want[name], rtol=1e-12)
        else:
            np.testing.assert_array_equal(array, want[name], err_msg=name)


def test_grids_growing_batch_after_batch_keep_the_same_samples_in_both_paths(monkeypatch):
    """Both paths grow a neuron's grid to fit each batch before its values are offered, the C
    pass in C and the PyTorch path with ``Slots.regroup``. Histograms and interval samples must
    come out the same."""
    if not c_stats.ready(torch.zeros(1)):
        pytest.skip("no C compiler here: only the PyTorch path runs")
    native, plain = finalized_in_both_paths(growing_batches(), 3, 8, monkeypatch)
    assert native["hist_width"].max() > 2.0**-10  # the grids did coarsen, many times
    assert_same_store(native, plain)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_batch_with_nan_or_inf_is_refused_and_changes_nothing(native, bad, monkeypatch):
    if native and not c_stats.ready(torch.zeros(1)):
        pytest.skip("no C compiler here: only the PyTorch path runs")
    if not native:
        monkeypatch.setattr(c_stats, "ready", lambda v: False)
    stream = PointStream(D, K, before=2, after=1, samples=2, threshold=0.5, with_other=False)
    first, (acts, tokens, positions) = tied_batches()[:2]
    stream.update(*first)
    before = finalize(stream, n_intervals=4)
    acts = acts.clone()
    acts[1, 5, 2] = bad
    with pytest.raises(SolulabError, match="1 of 384 activations in this batch are nan or inf"):
        stream.update(acts, tokens, positions)
    after = finalize(stream, n_intervals=4)
    assert stream.n_tokens == SEQS * N_POS
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


@pytest.mark.parametrize("rows, runs", [(64, 64), (80, 16), (7, 1)])
def test_the_c_extremes_match_pytorch_and_count_what_is_not_finite(rows, runs):
    if not c_stats.ready(torch.zeros(1)):
        pytest.skip("no C compiler here: only the PyTorch path runs")
    v = torch.randn(rows, 37, generator=torch.Generator().manual_seed(8))
    run_max, run_min, non_finite = c_stats.extremes(v, runs)
    torch.testing.assert_close(run_max, v.view(runs, -1, 37).amax(1), rtol=0, atol=0)
    torch.testing.assert_close(run_min, v.view(runs, -1, 37).amin(1), rtol=0, atol=0)
    assert non_finite == 0
    v[0, 3], v[rows - 1, 36], v[rows // 2, 0] = math.nan, math.inf, -math.inf
    assert c_stats.extremes(v, runs)[2] == 3


@pytest.mark.parametrize("stacked", [False, True])
def test_a_model_with_nan_weights_names_the_point_it_cannot_collect(stacked):
    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=50,
                      act_fn="solu_ln")
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.blocks[1].mlp.fc_in.weight.fill_(math.nan)
    collector = Collector(model, [0, 1], StoreSettings(k=4), seed=0, stacked=stacked)
    tokens = torch.randint(0, 50, (2, 8))
    with pytest.raises(SolulabError, match=r"blocks\.1\.mlp\.hook_mid: 512 of 512 .* diverge"):
        collector.update(tokens, torch.arange(16).view(2, 8))


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("act_fn, stacked_neurons, streams", [
    ("solu_ln", 16_384, 1), ("gelu", 16_384, 1), ("solu_ln", 96, 2), ("solu_ln", 32, 4)])
def test_points_side_by_side_in_one_stream_keep_what_a_stream_each_keeps(
        native, act_fn, stacked_neurons, streams, monkeypatch):
    """A stacked collector (what a GPU runs) against one stream per point, on the same batches:
    the same store, point by point; also split over streams (room for three points: two, a
    layer's, each point's other point beside it), and one point a stream with its other point
    passed beside it."""
    if native and not c_stats.ready(torch.zeros(1)):
        pytest.skip("no C compiler here: only the PyTorch path runs")
    if not native:
        monkeypatch.setattr(c_stats, "ready", lambda v: False)
    monkeypatch.setattr(collect_module, "STACKED_NEURONS", stacked_neurons)
    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=16, d_vocab=50,
                      act_fn=act_fn)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    gen = torch.Generator().manual_seed(5)
    stores = []
    for stacked in (False, True):
        collector = Collector(model, [0, 1], StoreSettings(k=5, samples=3), seed=2,
                              stacked=stacked)
        assert len(collector.streams) == (streams if stacked else len(collector.hooks))
        gen.manual_seed(5)
        for batch in range(3):
            tokens = torch.randint(0, 50, (4, 16), generator=gen)
            collector.update(tokens, torch.arange(64).view(4, 16) + 64 * batch)
        stores.append(collector.arrays(n_intervals=4))
    apart, together = stores
    assert apart.keys() == together.keys() == set(collector.hooks)
    for key, arrays in apart.items():
        assert arrays.keys() == together[key].keys()
        assert all(array.shape[0] == cfg.d_mlp for array in arrays.values())
        assert_same_store(arrays, together[key])


def test_partners_are_refused_unless_each_point_has_one_and_then_no_other_is_passed():
    with pytest.raises(ValueError, match="partners"):
        PointStream(D, K, 2, 1, 2, 0.5, with_other=False, points=2, partners=(1, 0))
    with pytest.raises(ValueError, match="partners"):
        PointStream(D, K, 2, 1, 2, 0.5, with_other=True, points=2, partners=(1, 1))
    stream = PointStream(D, K, 2, 1, 2, 0.5, with_other=True, points=2, partners=(1, 0))
    acts, tokens, positions = tied_batches()[0]
    both = torch.cat([acts, -acts], -1)
    with pytest.raises(ValueError, match="no columns of its own"):
        stream.update(both, tokens, positions, both)
    stream.update(both, tokens, positions)
    top = stream.top
    kept = top.position != torch.iinfo(torch.int64).max
    torch.testing.assert_close(top.other[:D][kept[:D]], -top.acts[:D][kept[:D]], equal_nan=True)


def test_a_collectors_streams_share_one_set_of_batch_buffers(monkeypatch):
    """Two stacked streams (a layer each) keep the batch-sized tensors of one: its points side
    by side, their bins and their candidate codes, reused batch after batch."""
    monkeypatch.setattr(c_stats, "ready", lambda v: False)
    monkeypatch.setattr(collect_module, "STACKED_NEURONS", 64)
    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=16, d_vocab=50,
                      act_fn="solu_ln")
    collector = Collector(Transformer(cfg).eval(), [0, 1], StoreSettings(k=4), seed=0)
    assert len(collector.streams) == 2
    assert all(s.scratch is collector.scratch for s in collector.streams.values())
    for batch in range(2):
        collector.update(torch.randint(0, 50, (4, 16)), torch.arange(64).view(4, 16) + 64 * batch)
        # tokens x 2 points: points and bins 4 bytes each, candidate codes 1
        assert collector.scratch.nbytes() == 64 * (2 * 32) * (4 + 4 + 1)


@pytest.mark.parametrize("sure", [6.0, 0.0])  # the key ceiling as it is; missing in half the groups
def test_every_kept_example_holds_the_window_of_its_own_position(sure, monkeypatch):
    """PyTorch path: each kept example's window holds the tokens around its own position and its
    own activations, the value at the centre, also where groups' key ceilings missed and the
    samples were admitted in two rounds, their windows cut round by round."""
    monkeypatch.setattr(c_stats, "ready", lambda v: False)
    monkeypatch.setattr(stream_module, "SURE", sure)
    gen = torch.Generator().manual_seed(12)
    n_pos, seqs, before, after = 40, 4, 2, 1
    stream = PointStream(D, K, before=before, after=after, samples=2, threshold=0.5,
                         with_other=False)
    all_tokens, all_acts = [], []
    for b in range(3):
        acts = torch.randn(seqs, n_pos, D, generator=gen)
        tokens = torch.randint(0, 50, (seqs, n_pos), generator=gen)
        stream.update(acts, tokens, torch.arange(seqs * n_pos).view(seqs, n_pos) + b * seqs * n_pos)
        all_tokens.append(tokens.reshape(-1))
        all_acts.append(acts.reshape(-1, D))
    tokens, acts = torch.cat(all_tokens).numpy(), torch.cat(all_acts).numpy()  # at position p
    store = finalize(stream, n_intervals=4)
    checked = 0
    for kind in ("top", "samples"):
        for neuron in range(D):
            positions = store[f"{kind}.positions"][neuron].reshape(-1)
            ids = store[f"{kind}.ids"][neuron].reshape(len(positions), -1)
            window = store[f"{kind}.acts"][neuron].reshape(len(positions), -1)
            values = store[f"{kind}.values"][neuron].reshape(-1)
            for p, got_ids, got_acts, value in zip(positions, ids, window, values):
                if p < 0:
                    continue
                assert got_acts[before] == value == acts[p, neuron]
                for j, q in enumerate(range(p - before, p + after + 1)):
                    same_sequence = q // n_pos == p // n_pos and q >= 0
                    assert got_ids[j] == (tokens[q] if same_sequence else -1)
                    if same_sequence:
                        assert got_acts[j] == acts[q, neuron]
                    else:
                        assert math.isnan(got_acts[j])
                checked += 1
    assert checked > D * K


def test_batches_of_changing_size_keep_in_the_pytorch_path_what_the_c_pass_keeps(monkeypatch):
    """The PyTorch path's kept batch buffers serve a smaller batch with a prefix and a larger
    one again after it (a collection's last batch is often short). Sequences of 15 positions:
    batches of 90 to 360 values, most not a whole number of words of eight candidate codes."""
    if not c_stats.ready(torch.zeros(1)):
        pytest.skip("no C compiler here: only the PyTorch path runs")
    gen = torch.Generator().manual_seed(9)
    batches, n_pos = [], 15
    for b, seqs in enumerate((4, 1, 3, 4)):
        acts = torch.randn(seqs, n_pos, D, generator=gen)
        tokens = torch.randint(0, 50, (seqs, n_pos), generator=gen)
        batches.append((acts, tokens, torch.arange(seqs * n_pos).view(seqs, n_pos) + 100 * b))
    native, plain = finalized_in_both_paths(batches, 2, 4, monkeypatch)
    assert plain["top.positions"].max() >= 300  # the last batch's examples are among them
    assert_same_store(native, plain)
