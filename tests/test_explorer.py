"""The explorer's neuron table against a slow reference over the store, and its API's answers to
hostile input."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from solulab.neurons.store import NeuronStore
from solulab.web.app import viewer_app
from solulab.web.explorer import NeuronTable, Query, QueryError

WORDS = ["def", "the token 'self'", "digits", "Indentation", "", "closing brackets", "İstanbul"]


@pytest.fixture(scope="module")
def explained(collected_runs, tmp_path_factory) -> Path:
    """A copy of the solu_ln run whose store has verdicts for all but every fifth neuron."""
    root = tmp_path_factory.mktemp("explorer")
    run = root / "solu_ln"
    shutil.copytree(collected_runs / "solu_ln", run)
    store = NeuronStore.open(run / "neurons")
    rng = np.random.default_rng(0)
    neurons = {}
    for n in range(store.d_mlp):
        if n % 5 == 4:
            continue
        neurons[f"0:{n}"] = {"description": WORDS[n % len(WORDS)] + f" #{n % 3}",
                             "interpretable": bool(n % 2), "auroc": float(rng.uniform(0.4, 1))}
    (run / "neurons" / "autointerp.json").write_text(json.dumps({"meta": {}, "neurons": neurons}))
    return run


def reference(store: NeuronStore, verdicts: dict, query: Query) -> list[tuple[int, int]]:
    """The same query, one neuron at a time in plain Python."""
    rows = []
    for layer in store.layers:
        for n in range(store.d_mlp):
            s = store.stats(layer, n)
            v = verdicts.get(f"{layer}:{n}")
            lower = s.hist_edges[:-1]  # the filled bins' lower edges
            half = s.hist_counts[lower >= 0.5 * s.max].sum() / s.hist_counts.sum()
            row = {"layer": layer, "neuron": n, "max": np.float32(s.max),
                   "firing": np.float32(half if s.max > 0 else 0.0),
                   "kurtosis": np.float32(s.kurtosis),
                   "interpretable": None if v is None else int(v["interpretable"]),
                   "auroc": None if v is None else np.float32(v["auroc"]),
                   "explanation": "" if v is None else v["description"]}
            if query.layer is not None and layer != query.layer:
                continue
            if query.interpretable is not None and row["interpretable"] != query.interpretable:
                continue
            if not query.min_firing <= row["firing"] <= query.max_firing:
                continue
            if query.q and query.q.lower() not in row["explanation"].lower():
                continue
            if query.token:
                top = store.examples(layer, n)
                if not any(e.tokens[e.fire_index].strip() == query.token for e in top):
                    continue
            rows.append(row)
    key = query.sort
    missing = [r for r in rows if r[key] in (None, "") or
               (isinstance(r[key], float) and np.isnan(r[key]))]
    present = [r for r in rows if r not in missing]
    value = (lambda r: r[key].lower()) if key == "explanation" else (lambda r: float(r[key]))
    present.sort(key=value, reverse=query.order == "desc")  # stable: ties in (layer, neuron)
    ordered = present + missing
    return [(r["layer"], r["neuron"]) for r in ordered][query.offset:query.offset + query.limit]


@pytest.mark.parametrize("query", [
    Query(),
    Query(sort="max", order="desc", limit=10),
    Query(sort="kurtosis", order="asc", limit=7, offset=3),
    Query(sort="auroc", order="desc", limit=64),
    Query(sort="interpretable", order="desc", limit=64),
    Query(sort="explanation", order="asc", limit=64),
    Query(sort="explanation", order="desc", limit=64),
    Query(interpretable=True, sort="firing", order="desc"),
    Query(interpretable=False, min_firing=0.0, max_firing=0.5),
    Query(q="TOKEN 'self'"),
    Query(q="istanbul"),
    Query(q="#2", sort="neuron", order="desc", limit=5),
    Query(q="nothing like this"),
])
def test_queries_equal_a_slow_reference(explained, query):
    store = NeuronStore.open(explained / "neurons")
    verdicts = json.loads((explained / "neurons" / "autointerp.json").read_text())["neurons"]
    result = NeuronTable(store).query(query)
    assert [(n["layer"], n["neuron"]) for n in result["neurons"]] == reference(store, verdicts,
                                                                                query)


def test_token_search_finds_the_neurons_whose_top_examples_fire_on_it(explained):
    store = NeuronStore.open(explained / "neurons")
    table = NeuronTable(store)
    fired = [e.tokens[e.fire_index].strip() for e in store.examples(0, 3)]
    token = max(set(fired), key=fired.count)
    query = Query(token=token, limit=500)
    result = table.query(query)
    assert (0, 3) in [(n["layer"], n["neuron"]) for n in result["neurons"]]
    assert [(n["layer"], n["neuron"]) for n in result["neurons"]] == reference(store, {}, query)
    assert table.query(Query(token="no such token at all"))["total"] == 0


@pytest.mark.parametrize("bad", [Query(sort="max; drop"), Query(order="up"), Query(limit=0),
                                 Query(limit=10_000), Query(offset=-1), Query(q="x" * 201),
                                 Query(q="a\x00b"), Query(min_firing=0.9, max_firing=0.1)])
def test_bad_queries_are_refused_by_name(explained, bad):
    with pytest.raises(QueryError):
        NeuronTable(NeuronStore.open(explained / "neurons")).query(bad)


def test_the_api_answers_json_and_hostile_input_is_a_4xx(explained):
    with TestClient(viewer_app(explained.parent), base_url="http://127.0.0.1") as c:
        ok = c.get("/api/neurons", params={"run": "solu_ln", "sort": "max", "order": "desc",
                                           "limit": 3})
        assert ok.status_code == 200
        body = ok.json()
        assert body["total"] == 64 and len(body["neurons"]) == 3
        assert set(body["neurons"][0]) == {"layer", "neuron", "max", "firing", "kurtosis",
                                           "interpretable", "auroc", "explanation"}
        page = c.get("/run", params={"run": "solu_ln"})
        assert page.status_code == 200 and "explorer.js" in page.text
        assert c.get("/static/explorer.js").status_code == 200
        hostile = [{"run": "solu_ln", "q": "x" * 60_000}, {"run": "solu_ln", "q": "\x00"},
                   {"run": "solu_ln", "limit": -5}, {"run": "solu_ln", "limit": 10**12},
                   {"run": "solu_ln", "offset": -1}, {"run": "solu_ln", "offset": 10**30},
                   {"run": "solu_ln", "sort": "__class__"}, {"run": "solu_ln", "layer": "x"},
                   {"run": "../../etc"}, {"run": "solu_ln", "min_firing": "nan"},
                   {"run": "solu_ln", "max_firing": 2}, {"run": "solu_ln", "interpretable": "?"},
                   {}]
        for params in hostile:
            response = c.get("/api/neurons", params=params)
            assert 400 <= response.status_code < 500, (params, response.status_code)
        raw = c.get("/api/neurons?run=solu_ln&q=%FF%FE")  # bad UTF-8
        assert raw.status_code < 500


def test_the_comparison_states_each_layers_fraction_with_its_interval(explained):
    from solulab.stats import wilson_interval

    verdicts = json.loads((explained / "neurons" / "autointerp.json").read_text())["neurons"]
    k, n = sum(v["interpretable"] for v in verdicts.values()), len(verdicts)
    low, high = wilson_interval(k, n)
    with TestClient(viewer_app(explained.parent), base_url="http://127.0.0.1") as client:
        page = client.get("/compare", params={"a": "solu_ln", "b": "solu_ln"})
        assert page.status_code == 200
        assert page.text.count(f"{k} of {n} ({k / n:.1%}; {low:.1%} to {high:.1%})") == 2
        assert client.get("/compare", params={"a": "solu_ln", "b": "nope"}).status_code == 404
        assert client.get("/compare", params={"a": "solu_ln"}).status_code == 422


def test_a_store_collected_while_the_viewer_runs_appears_when_finished(explained, small_corpus,
                                                                       tmp_path):
    from test_neurons import make_run

    from solulab.neurons.collect import collect

    root = tmp_path / "runs"
    shutil.copytree(explained, root / "solu_ln")
    with TestClient(viewer_app(root), base_url="http://127.0.0.1") as client:
        assert "solu_ln" in client.get("/").text
        run = make_run(root / "fresh", small_corpus, "gelu", n_layers=1)  # weights, no store
        (run / ".neurons.partial-0000").mkdir()  # what a collection writes into first
        (run / ".neurons.partial-0000" / "meta.json").write_text("{")
        assert client.get("/api/neurons", params={"run": "solu_ln", "limit": 1}).status_code \
            == 200
        assert client.get("/api/neurons", params={"run": "fresh"}).status_code == 404
        collect(run, n_tokens=512, progress=False)
        time.sleep(5.1)  # the root page rescans once its last scan is 5 s old
        assert "fresh" in client.get("/").text
        listed = client.get("/api/neurons", params={"run": "fresh", "limit": 1})
        assert listed.status_code == 200 and listed.json()["total"] == 48


def test_every_page_has_its_json(explained):
    store = NeuronStore.open(explained / "neurons")
    with TestClient(viewer_app(explained.parent), base_url="http://127.0.0.1") as client:
        assert client.get("/api/runs").json() == {"runs": ["solu_ln"]}
        neuron = client.get("/api/neuron", params={"run": "solu_ln", "layer": 0, "neuron": 3})
        assert neuron.status_code == 200
        body, top = neuron.json(), store.examples(0, 3)
        assert [e["value"] for e in body["top"]] == pytest.approx([e.value for e in top])
        assert body["top"][0]["tokens"] == top[0].tokens
        assert body["stats"]["max"] == pytest.approx(store.stats(0, 3).max)
        assert body["explanation"]["description"] == WORDS[3] + " #0"
        assert len(body["intervals"]) == len(store.interval_examples(0, 3))
        assert body["logit_effects"]["top"][0][0] == store.logit_effects(0, 3).top_tokens[0]
        pair = client.get("/api/compare", params={"a": "solu_ln", "b": "solu_ln"}).json()
        verdicts = json.loads((explained / "neurons" / "autointerp.json").read_text())["neurons"]
        assert pair["layers"]["solu_ln"]["0"]["explained"] == len(verdicts)
        for params in ({"run": "solu_ln", "layer": 9, "neuron": 0},
                       {"run": "solu_ln", "layer": 0, "neuron": 10**9},
                       {"run": "solu_ln", "layer": 0, "neuron": 0, "point": "x"},
                       {"run": "solu_ln", "layer": "a", "neuron": 0}, {"run": "no"}):
            assert 400 <= client.get("/api/neuron", params=params).status_code < 500
