"""Probing a run with your own text, against the model run by hand, and the probe route's
answers to hostile input."""

import threading
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from solulab.core.model import Transformer
from solulab.data.tokenizer import load_tokenizer
from solulab.web import probe
from solulab.web.app import viewer_app

TEXT = "def f(x):\n    return x + 1  # the same text, twice: " * 3


def by_hand(run, text: str, point: str) -> torch.Tensor:
    """``[layers, tokens, d_mlp]``: the model over ``text`` in windows of n_ctx, one hook each."""
    model = Transformer.from_pretrained(run).eval()
    ids = load_tokenizer(run / "tokenizer.json").encode(text).ids
    n_ctx, layers = model.cfg.n_ctx, range(model.cfg.n_layers)
    windows = []
    with torch.no_grad():
        for start in range(0, len(ids), n_ctx):
            _, cache = model.run_with_cache(torch.tensor([ids[start:start + n_ctx]]))
            windows.append(torch.stack([cache[f"blocks.{layer}.mlp.hook_{point}"][0]
                                        for layer in layers]))
    return torch.cat(windows, dim=1)


@pytest.mark.parametrize("act, point", [("solu_ln", "mid"), ("solu_ln", "post"),
                                        ("gelu", "post")])
def test_top_neurons_and_one_neuron_equal_the_model_run_by_hand(collected_runs, act, point):
    run = collected_runs / act
    prober = probe.Prober(run)
    acts = by_hand(run, TEXT, point)
    assert acts.shape[1] > prober.model.cfg.n_ctx  # several windows
    result = prober.top_neurons(TEXT, point, top=3)
    assert len(result["tokens"]) == acts.shape[1] and result["point"] == point
    for t, top in enumerate(result["top"]):
        values, index = torch.topk(acts[:, t, :].reshape(-1), 3)
        assert [(n["layer"], n["neuron"]) for n in top] == [
            (int(i) // acts.shape[2], int(i) % acts.shape[2]) for i in index]
        assert [n["act"] for n in top] == pytest.approx(values.tolist(), abs=1e-4)
    one = prober.neuron(TEXT, 0, 7, point)
    assert one["acts"] == pytest.approx(acts[0, :, 7].tolist(), abs=1e-4)


def test_the_probe_route_answers_and_refuses_by_name(collected_runs, monkeypatch):
    with TestClient(viewer_app(collected_runs), base_url="http://127.0.0.1") as client:
        def post(body, run="solu_ln", **kwargs):
            return client.post("/api/probe", params={"run": run}, json=body, **kwargs)

        ok = post({"text": "for i in range(3):", "top": 2})
        assert ok.status_code == 200 and all(len(t) == 2 for t in ok.json()["top"])
        assert post({"text": "x", "layer": 0, "neuron": 3, "point": "post"}).json()["point"] \
            == "post"
        refused = [({"text": ""}, 422), ({"text": "x" * 5000}, 422), ({"text": "a\x00b"}, 422),
                   ({"text": "x", "point": "pre"}, 422), ({"text": "x", "layer": 0}, 422),
                   ({"text": "x", "layer": 0, "neuron": 10**6}, 422),
                   ({"text": "x", "top": 0}, 422), ({"text": "x", "top": 10**9}, 422),
                   ({"text": "x", "extra": 1}, 422), ({"text": ["x"]}, 422), ({}, 422)]
        for body, status in refused:
            assert post(body).status_code == status, body
        assert post({"text": "x"}, run="nope").status_code == 404
        assert post({"text": "x"}, run="../gelu").status_code == 404
        raw = client.post("/api/probe?run=solu_ln", content=b'{"text": "\xff\xfe"}',
                          headers={"content-type": "application/json"})
        assert raw.status_code == 422
        huge = client.post("/api/probe?run=solu_ln", content=b"x" * 200_000)
        assert huge.status_code == 413
        many = post({"text": "x, " * (probe.MAX_CHARS // 3)})  # few characters, many tokens
        assert many.status_code == 422 and "tokens" in many.json()["detail"]
        monkeypatch.setattr(probe, "MAX_WAITING", 0)  # every turn is taken
        assert post({"text": "x"}).status_code == 429


def test_probes_of_one_run_take_turns_with_the_model(collected_runs):
    prober = probe.Prober(collected_runs / "gelu")
    results, errors = [], []

    def ask():
        try:
            results.append(prober.neuron(TEXT, 0, 1))
        except probe.ProbeBusy as busy:
            errors.append(busy)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) + len(errors) == 6 and results
    assert all(r == results[0] for r in results) and prober.waiting == 0


def test_probes_beyond_the_rate_are_refused_until_it_recovers(collected_runs, monkeypatch):
    monkeypatch.setattr(probe, "BURST", 3)
    monkeypatch.setattr(probe, "RATE", 20.0)
    clock = [1000.0]  # a clock the test moves, so that a slow machine refills nothing
    monkeypatch.setattr(probe, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    prober = probe.Prober(collected_runs / "gelu")
    for _ in range(3):
        prober.neuron("x", 0, 1)
    with pytest.raises(probe.ProbeBusy):
        prober.neuron("x", 0, 1)
    clock[0] += 0.1  # two probes' worth at 20 a second
    prober.neuron("x", 0, 1)
