"""The web app: viewer pages, the study API's answers to good and bad requests, blinding,
concurrent annotators and a killed server."""

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from solulab.neurons.store import NeuronStore
from solulab.study.create import create_study
from solulab.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def study(collected_runs, tmp_path):
    models = {"zyxgelu": collected_runs / "gelu", "zyxsolu": collected_runs / "solu_ln"}
    return create_study(models, tmp_path / "study.sqlite", 60, seed=1, annotators=["ann", "bob"])


@pytest.fixture
def client(collected_runs, study):
    return TestClient(create_app(collected_runs, study.path), raise_server_exceptions=False)


def test_viewer_lists_runs_and_shades_a_neuron_in_activation_order(client, collected_runs):
    assert "solu_ln" in client.get("/").text and "gelu" in client.get("/").text
    assert 'href="/neuron?run=solu_ln&amp;layer=0&amp;neuron=5"' in client.get(
        "/run", params={"run": "solu_ln"}).text
    page = client.get("/neuron", params={"run": "solu_ln", "layer": 0, "neuron": 5}).text
    store = NeuronStore.open(collected_runs / "solu_ln" / "neurons")
    top = page.split('<div id=top>')[1].split("</div></div>")[0]
    values = [float(v) for v in re.findall(r'class="tok fire" data-act="([-0-9.e]+)"', top)]
    expected = [e.value for e in store.examples(0, 5)]
    assert values == pytest.approx(expected, abs=1e-4)
    assert values == sorted(values, reverse=True)
    first = store.examples(0, 5)[0]
    alpha = re.findall(r'class="tok fire" data-act="[^"]+" title="[^"]+" '
                       r'style="background: rgba\(255,0,0,([0-9.]+)\)"', top)[0]
    assert float(alpha) == pytest.approx(1.0) and first.value == max(expected)
    assert "pre-LayerNorm" in page and "post-LayerNorm" in page and "Logit effects" in page
    post = client.get("/neuron", params={"run": "solu_ln", "layer": 0, "neuron": 5,
                                         "point": "post"}).text
    assert f"{store.examples(0, 5, 'post')[0].value:+.3f}" in post


@pytest.mark.parametrize("params, status", [
    ({"run": "solu_ln", "layer": 0, "neuron": 64}, 404),
    ({"run": "solu_ln", "layer": 3, "neuron": 0}, 404),
    ({"run": "../../etc", "layer": 0, "neuron": 0}, 404),
    ({"run": "solu_ln", "layer": "x", "neuron": 0}, 422),
    ({"run": "gelu", "layer": 0, "neuron": 0, "point": "mid"}, 404),
])
def test_viewer_refuses_bad_requests_with_4xx(client, params, status):
    response = client.get("/neuron", params=params)
    assert response.status_code == status and response.json()["detail"]


def test_study_api_rates_revises_and_refuses(client, study):
    token = study.tokens["ann"]
    items = client.get(f"/api/study/{token}/items").json()
    assert items["total"] == 120 and items["done"] == 0
    first = items["items"][0]["id"]
    body = {"label": "interpretable", "hypothesis": "digits", "seconds": 12.5}
    assert client.put(f"/api/study/{token}/ratings/{first}", json=body).json()["revision"] == 1
    revised = {**body, "label": "not_interpretable", "seconds": 3}
    assert client.put(f"/api/study/{token}/ratings/{first}", json=revised).json() == {
        "ok": True, "revision": 2}
    item = client.get(f"/api/study/{token}/items/{first}").json()
    assert item["label"] == "not_interpretable" and len(item["snippets"]) == 20
    row = sqlite3.connect(study.path).execute(
        "SELECT label, seconds, revision FROM ratings WHERE annotator='ann'").fetchall()
    assert row == [("not_interpretable", 15.5, 2)]

    assert client.get("/api/study/forged/items").status_code == 403
    assert client.get("/study/forged").status_code == 403
    assert client.put(f"/api/study/{token}/ratings/nope", json=body).status_code == 404
    for bad in ({"label": "maybe"}, {"label": "interpretable", "seconds": -1}, {}, [1]):
        response = client.put(f"/api/study/{token}/ratings/{first}", json=bad)
        assert response.status_code == 422
    response = client.put(f"/api/study/{token}/ratings/{first}", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 422
    # Another annotator sees none of ann's ratings and cannot write them.
    other = study.tokens["bob"]
    assert client.get(f"/api/study/{other}/items").json()["done"] == 0


def test_checks_open_after_every_item_is_rated(client, study):
    token = study.tokens["bob"]
    assert client.get(f"/api/study/{token}/checks").json() == {"open": False, "groups": []}
    for item in client.get(f"/api/study/{token}/items").json()["items"]:
        client.put(f"/api/study/{token}/ratings/{item['id']}",
                   json={"label": "interpretable", "hypothesis": "the letter n"})
    groups = client.get(f"/api/study/{token}/checks").json()["groups"]
    assert len(groups) == 60  # one per solu_ln neuron; gelu has no LayerNorm to compare
    check = groups[0]["checks"][0]
    assert groups[0]["hypothesis"] == "the letter n" and set(check) == {
        "id", "tokens", "acts", "fire", "consistent"}
    assert set(check["acts"]) == {0.0}  # no activation values that would reveal the point
    url = f"/api/study/{token}/checks/{check['id']}"
    assert client.put(url, json={"consistent": False}).json() == {"ok": True}
    assert client.put(f"/api/study/{study.tokens['ann']}/checks/{check['id']}",
                      json={"consistent": True}).status_code == 404  # ann has not rated it
    assert client.put(url, json={"consistent": "perhaps"}).status_code == 422


def test_responses_reveal_no_model_layer_or_neuron(client, study, collected_runs):
    token = study.tokens["ann"]
    conn = sqlite3.connect(study.path)
    secrets = dict(conn.execute("SELECT item_id, model FROM secrets"))
    seen = [client.get(f"/study/{token}").text, client.get("/static/study.js").text,
            client.get(f"/api/study/{token}/items").text]
    keys = {}
    for item_id, model in secrets.items():
        response = client.get(f"/api/study/{token}/items/{item_id}")
        seen.append(response.text)
        keys.setdefault(model, set()).add(tuple(sorted(response.json())))
    assert keys["zyxgelu"] == keys["zyxsolu"]  # the same fields for both models
    text = "\n".join(seen)
    for secret in ("zyx", "gelu", "solu", str(collected_runs), '"layer"', '"neuron"'):
        assert secret not in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(runs: Path, study: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "solulab.cli", "serve", "--runs", str(runs), "--study",
         str(study), "--port", str(port)], env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def test_twenty_concurrent_annotators_lose_and_duplicate_nothing(collected_runs, tmp_path):
    names = [f"a{i:02d}" for i in range(20)]
    study = create_study({"g": collected_runs / "gelu", "s": collected_runs / "solu_ln"},
                         tmp_path / "many.sqlite", 30, seed=2, annotators=names)
    process, url = start_server(collected_runs, study.path)
    errors = []

    def annotate(name: str) -> None:
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                token = study.tokens[name]
                for item in http.get(f"/api/study/{token}/items").json()["items"]:
                    r = http.put(f"/api/study/{token}/ratings/{item['id']}",
                                 json={"label": "interpretable", "hypothesis": name})
                    r.raise_for_status()
        except Exception as e:  # collected and reported below
            errors.append(repr(e))

    try:
        threads = [threading.Thread(target=annotate, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not errors
    conn = sqlite3.connect(study.path)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT annotator || item_id), MAX(revision) "
                        "FROM ratings").fetchone() == (20 * 60, 20 * 60, 1)
    assert conn.execute("SELECT COUNT(*) FROM ratings WHERE hypothesis != annotator"
                        ).fetchone() == (0,)


def test_a_killed_server_keeps_every_acknowledged_rating(collected_runs, study):
    process, url = start_server(collected_runs, study.path)
    token = study.tokens["ann"]
    acknowledged = []
    try:
        items = httpx.get(f"{url}/api/study/{token}/items").json()["items"]
        for item in items[:25]:
            r = httpx.put(f"{url}/api/study/{token}/ratings/{item['id']}",
                          json={"label": "not_interpretable"})
            if r.status_code == 200:
                acknowledged.append(item["id"])
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    rows = {i for (i,) in sqlite3.connect(study.path).execute(
        "SELECT item_id FROM ratings WHERE annotator = 'ann'")}
    assert len(acknowledged) == 25 and rows == set(acknowledged)


def test_serve_binds_loopback_by_default():
    import typer

    from solulab.cli import app

    serve = typer.main.get_command(app).commands["serve"]
    assert {p.name: p.default for p in serve.params}["host"] == "127.0.0.1"
