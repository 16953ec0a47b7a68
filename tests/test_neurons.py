"""Neuron collection against brute force over every activation, and the store's contract."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from servers import free_port

from solulab import ModelConfig, Transformer
from solulab.data import Corpus
from solulab.errors import SolulabError
from solulab.neurons.collect import collect
from solulab.neurons.settings import StoreSettings
from solulab.neurons.store import NeuronStore, StoreError

N_CTX, BATCH, K, SAMPLES, INTERVALS = 32, 4, 5, 3, 6
ROOT = Path(__file__).resolve().parent.parent


def make_run(path: Path, corpus: Path, act_fn: str, n_layers: int = 2, d_mlp: int = 48,
             seed: int = 0) -> Path:
    path.mkdir(parents=True)
    cfg = ModelConfig(n_layers=n_layers, d_model=32, n_heads=2, d_mlp=d_mlp, n_ctx=N_CTX,
                      d_vocab=300, act_fn=act_fn, init_std=0.2, init_seed=seed)
    Transformer(cfg).save_pretrained(path)
    shutil.copy(corpus / "tokenizer.json", path / "tokenizer.json")
    (path / "run.json").write_text(json.dumps({"corpus": str(corpus)}))
    return path


@pytest.fixture(scope="module", params=["solu_ln", "gelu"])
def collected(request, small_corpus, tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("run") / "run", small_corpus, request.param)
    settings = StoreSettings(k=K, window_before=6, window_after=2, samples=SAMPLES,
                             n_intervals=INTERVALS)
    store = collect(run, n_tokens=40 * N_CTX, settings=settings, batch_size=BATCH,
                    progress=False)
    return run, NeuronStore.open(store)


def brute_force(run: Path, store: NeuronStore) -> dict:
    """Every activation of every point on the same sequences, batched as the collector does."""
    model = Transformer.from_pretrained(run).eval()
    tokens = np.asarray(Corpus(store.meta["corpus"]).tokens("val")[:store.meta["n_tokens"]])
    seqs = torch.from_numpy(tokens.astype(np.int64)).view(-1, N_CTX)
    names = {p: [f"blocks.{layer}.mlp.hook_{p}" for layer in store.layers] for p in store.points}
    acts = {p: {layer: [] for layer in store.layers} for p in store.points}
    with torch.no_grad():
        for start in range(0, len(seqs), BATCH):
            _, cache = model.run_with_cache(seqs[start:start + BATCH],
                                            [n for ns in names.values() for n in ns])
            for p in store.points:
                for layer, name in zip(store.layers, names[p]):
                    acts[p][layer].append(cache[name])
    return {"tokens": tokens, "acts": {p: {layer: torch.cat(v).reshape(-1, v[0].shape[-1]).numpy()
                                           for layer, v in by_layer.items()}
                                       for p, by_layer in acts.items()}}


@pytest.fixture(scope="module")
def reference(collected):
    run, store = collected
    return brute_force(run, store)


def test_top_examples_equal_brute_force(collected, reference):
    _, store = collected
    tokens = reference["tokens"]
    for point in store.points:
        other_point = [p for p in store.points if p != point]
        for layer in store.layers:
            acts = reference["acts"][point][layer]  # [tokens, d_mlp]
            for neuron in range(store.d_mlp):
                # Strongest first, ties to the lower position: lexsort's last key is primary.
                expected = np.lexsort((np.arange(len(acts)), -acts[:, neuron]))[:K]
                examples = store.examples(layer, neuron, point)
                assert [e.position for e in examples] == expected.tolist()
                for e, pos in zip(examples, expected):
                    assert e.value == acts[pos, neuron]
                    start = pos - e.fire_index
                    window = np.arange(start, start + len(e.token_ids))
                    assert e.token_ids == tokens[window].tolist()
                    assert (window // N_CTX == pos // N_CTX).all()  # never crosses a sequence
                    np.testing.assert_array_equal(e.acts, acts[window, neuron])
                    if other_point:
                        other = reference["acts"][other_point[0]][layer]
                        np.testing.assert_array_equal(e.other_acts, other[window, neuron])
                    else:
                        assert e.other_acts is None


def test_interval_samples_lie_inside_and_cover_every_nonempty_interval(collected, reference):
    _, store = collected
    for point in store.points:
        for layer in store.layers:
            acts = reference["acts"][point][layer]
            for neuron in range(store.d_mlp):
                intervals = store.interval_examples(layer, neuron, point)
                assert intervals[0][0][0] <= acts[:, neuron].min()
                assert intervals[-1][0][1] > acts[:, neuron].max()
                for (low, high), examples in intervals:
                    inside = (acts[:, neuron] >= low) & (acts[:, neuron] < high)
                    assert len(examples) == min(SAMPLES, inside.sum())
                    positions = [e.position for e in examples]
                    assert len(set(positions)) == len(positions)
                    for e in examples:
                        assert low <= e.value < high and inside[e.position]
                        assert e.value == acts[e.position, neuron]


def test_statistics_equal_numpy_and_scipy(collected, reference):
    _, store = collected
    for point in store.points:
        for layer in store.layers:
            acts = reference["acts"][point][layer].astype(np.float64)
            for neuron in range(0, store.d_mlp, 7):
                a = acts[:, neuron]
                s = store.stats(layer, neuron, point)
                assert s.n_tokens == len(a)
                assert (s.max, s.min) == (a.max(), a.min())
                assert s.mean == pytest.approx(a.mean(), rel=1e-5, abs=1e-9)
                assert s.std == pytest.approx(a.std(), rel=1e-4)
                assert s.kurtosis == pytest.approx(scipy.stats.kurtosis(a), rel=1e-3, abs=1e-3)
                assert s.frac_positive == np.mean(a > 0)
                assert s.frac_above == np.mean(a > s.threshold)
                counts, _ = np.histogram(a, bins=s.hist_edges)
                np.testing.assert_array_equal(s.hist_counts, counts)


def test_logit_effects_equal_an_independent_computation(collected):
    run, store = collected
    model = Transformer.from_pretrained(run)
    w_u = model.unembed.weight.detach().numpy().T.astype(np.float64)  # [d_model, vocab]
    gain = model.ln_final.w.detach().numpy().astype(np.float64)
    decode = store.decode
    for layer in store.layers:
        w_out = model.blocks[layer].mlp.fc_out.weight.detach().numpy().T.astype(np.float64)
        for neuron in (0, 5, store.d_mlp - 1):
            direction = w_out[neuron] - w_out[neuron].mean()
            effect = (direction * gain) @ w_u  # [vocab]
            order = np.argsort(-effect)
            got = store.logit_effects(layer, neuron)
            assert got.top_tokens == decode(order[:20])
            assert got.bottom_tokens == decode(order[::-1][:20])
            np.testing.assert_allclose(got.top_values, effect[order[:20]], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(got.bottom_values, effect[order[::-1][:20]], rtol=1e-4,
                                       atol=1e-6)
            assert got.complete is False  # two layers: later layers read this neuron too


def test_one_layer_store_says_its_logit_effects_are_complete(small_corpus, tmp_path):
    run = make_run(tmp_path / "run", small_corpus, "solu_ln", n_layers=1)
    store = NeuronStore.open(collect(run, n_tokens=4 * N_CTX, settings=StoreSettings(k=2),
                                     progress=False))
    assert store.logit_effects(0, 0).complete is True
    assert json.loads((store.path / "summary.json").read_text()) == {
        "tokens": 4 * N_CTX, "layers": 1, "d_mlp": 48}


def test_bad_requests_are_clear_errors(collected, small_corpus, tmp_path):
    run, store = collected
    with pytest.raises(StoreError, match="layer 7 is not in this store"):
        store.examples(7, 0)
    with pytest.raises(StoreError, match="neuron 48 out of range"):
        store.stats(0, 48)
    with pytest.raises(StoreError, match="collected from another model"):
        NeuronStore.open(store.path, model_sha256="0" * 64)
    with pytest.raises(StoreError, match="not a neuron store"):
        NeuronStore.open(tmp_path)
    with pytest.raises(SolulabError, match="out of range"):
        collect(run, layers=[5], out=tmp_path / "x", progress=False)
    other = tmp_path / "other_corpus"
    shutil.copytree(small_corpus, other)
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace(
        '"version"', '"version" ', 1))
    manifest = json.loads((other / "manifest.json").read_text())
    from solulab.data.tokenizer import sha256_file

    manifest["tokenizer_sha256"] = sha256_file(other / "tokenizer.json")
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SolulabError, match="another tokenizer"):
        collect(run, corpus_dir=other, out=tmp_path / "y", progress=False)


def _stores_equal(a: NeuronStore, b: NeuronStore) -> None:
    for layer in a.layers:
        for name in sorted(os.listdir(a.path / f"layer_{layer}")):
            x = np.load(a.path / f"layer_{layer}" / name)
            y = np.load(b.path / f"layer_{layer}" / name)
            if x.dtype.kind in "iu":
                np.testing.assert_array_equal(x, y, err_msg=name)
            else:
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)


def test_two_process_collection_equals_one_process(small_corpus, tmp_path):
    run = make_run(tmp_path / "run", small_corpus, "solu_ln")
    settings = StoreSettings(k=K, samples=SAMPLES, n_intervals=INTERVALS)
    kwargs = dict(n_tokens=24 * N_CTX, batch_size=BATCH, progress=False)
    single = NeuronStore.open(collect(run, out=tmp_path / "single", settings=settings, **kwargs))
    child_kwargs = json.dumps({**kwargs, "settings": asdict(settings)})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(free_port()), str(ROOT / "tests" / "_neurons_child.py"),
                    str(run), str(tmp_path / "double"), child_kwargs],
                   check=True, env=env, timeout=300)
    double = NeuronStore.open(tmp_path / "double")
    assert double.meta == {**single.meta}
    _stores_equal(single, double)


def test_memory_does_not_grow_with_the_number_of_tokens(small_corpus, tmp_path):
    """Peak memory of a collection over N and 10 N tokens, each in a fresh process; keeping
    every activation would add ~10 N x d_mlp x 4 bytes x 2 points (over 100 MB here)."""
    run = make_run(tmp_path / "run", small_corpus, "solu_ln", n_layers=1, d_mlp=2048)
    n_val = len(Corpus(small_corpus).tokens("val"))
    small, large = n_val // 10, n_val
    assert large * 2048 * 4 * 2 > 100e6
    code = ("import resource, sys; from solulab.neurons.collect import collect; "
            "collect(sys.argv[1], out=sys.argv[2], n_tokens=int(sys.argv[3]), progress=False); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")

    def peak_kib(n: int) -> int:
        out = subprocess.run([sys.executable, "-c", code, str(run), str(tmp_path / f"s{n}"),
                              str(n)], check=True, capture_output=True, text=True, timeout=300)
        return int(out.stdout.split()[-1])

    grown = peak_kib(large) - peak_kib(small)
    assert grown < 40_000, f"peak memory grew by {grown / 1024:.0f} MiB from N to 10 N"


def test_show_and_trace_print_the_examples_and_activations(collected):
    from typer.testing import CliRunner

    from solulab.cli import app
    from solulab.neurons.trace import trace

    run, store = collected
    runner = CliRunner()
    result = runner.invoke(app, ["neurons", "show", str(run), "--layer", "1", "--neuron", "4",
                                 "--limit", "3"], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    examples = store.examples(1, 4, limit=3)
    for e in examples:  # the value, then the window with the firing token marked
        assert f"{e.value:+9.3f}" in result.output
        marked = f"[[{e.tokens[e.fire_index]}]]".replace("\n", "⏎")
        assert marked in result.output
    assert "logit effects" in result.output

    text = "def f(x): return 1,000"
    tokens, acts, other = trace(run, text, layer=1, neuron=4)
    model = Transformer.from_pretrained(run)
    ids = torch.tensor([Corpus(store.meta["corpus"]).encode(text)])
    _, cache = model.run_with_cache(ids, [model.neuron_hook(1)])
    np.testing.assert_allclose(acts, cache[model.neuron_hook(1)][0, :, 4].detach().numpy(),
                               rtol=1e-5, atol=1e-6)  # the fused kernel against autograd's path
    assert "".join(tokens) == text
    result = runner.invoke(app, ["neurons", "trace", str(run), text, "--layer", "1",
                                 "--neuron", "4"], env={"NO_COLOR": "1"})
    assert result.exit_code == 0 and f"{acts[-1]:+10.4f}" in result.output

    result = runner.invoke(app, ["neurons", "show", str(run), "--layer", "9", "--neuron", "0"])
    assert result.exit_code == 2 and "layer 9 is not in this store" in result.output


@pytest.mark.parametrize("sure", [0.0, -9.0])  # about half the groups, or all, fall back
def test_sample_groups_their_key_ceiling_misses_keep_the_same_samples(
        small_corpus, tmp_path, monkeypatch, sure):
    from solulab.neurons import c_stats, stream

    monkeypatch.setattr(c_stats, "ready", lambda v: False)  # the ceiling is the PyTorch path's
    run = make_run(tmp_path / "run", small_corpus, "solu_ln", n_layers=1)
    kwargs = dict(n_tokens=12 * N_CTX, settings=StoreSettings(k=K, samples=SAMPLES),
                  batch_size=BATCH, progress=False)
    sure_enough = NeuronStore.open(collect(run, out=tmp_path / "sure", **kwargs))
    monkeypatch.setattr(stream, "SURE", sure)
    missed = NeuronStore.open(collect(run, out=tmp_path / "missed", **kwargs))
    _stores_equal(sure_enough, missed)


def test_the_c_pass_equals_the_pytorch_path(small_corpus, tmp_path, monkeypatch):
    from solulab.neurons import c_stats

    if not c_stats.ready(torch.zeros(1)):
        pytest.skip("no C compiler here: only the PyTorch path runs")
    run = make_run(tmp_path / "run", small_corpus, "solu_ln", n_layers=1)
    kwargs = dict(n_tokens=12 * N_CTX, settings=StoreSettings(k=K, samples=SAMPLES),
                  batch_size=BATCH, progress=False)
    native = NeuronStore.open(collect(run, out=tmp_path / "native", **kwargs))
    monkeypatch.setattr(c_stats, "ready", lambda v: False)
    plain = NeuronStore.open(collect(run, out=tmp_path / "plain", **kwargs))
    _stores_equal(native, plain)


def test_collect_says_when_the_split_is_smaller_than_asked(collected_runs, tmp_path):
    from typer.testing import CliRunner

    from solulab.cli import app

    result = CliRunner().invoke(app, ["neurons", "collect", str(collected_runs / "gelu"),
                                      "--tokens", "10000000", "--out", str(tmp_path / "s"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    collected = NeuronStore.open(tmp_path / "s").meta["n_tokens"]
    assert f"note: collected {collected:,} tokens, not 10,000,000" in result.output


def test_a_device_this_machine_lacks_is_one_clear_line(collected_runs):
    from typer.testing import CliRunner

    from solulab.cli import app

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(app, ["neurons", "collect", str(collected_runs / "gelu"),
                                      "--device", "cuda"])
    assert result.exit_code == 2 and "has no CUDA GPU" in result.output
    assert "Traceback" not in result.output
