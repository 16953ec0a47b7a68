"""The web apps: viewer pages, the study API's answers to good and bad requests, finishing,
server-measured time and a killed server (concurrent annotators: test_hostile_input.py)."""

import re
import signal
import sqlite3
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import start_server

from solulab.neurons.store import NeuronStore
from solulab.study.create import create_study
from solulab.web.app import study_app, viewer_app

LOCAL = "http://127.0.0.1"


@pytest.fixture
def study(collected_runs, tmp_path):
    models = {"zyxgelu": collected_runs / "gelu", "zyxsolu": collected_runs / "solu_ln"}
    return create_study(models, tmp_path / "study.sqlite", 60, seed=1, annotators=["ann", "bob"])


@pytest.fixture
def viewer(collected_runs):
    return TestClient(viewer_app(collected_runs), base_url=LOCAL, raise_server_exceptions=False)


@pytest.fixture
def client(study):
    return TestClient(study_app(study.path), base_url=LOCAL, raise_server_exceptions=False)


def rate_everything(client, token, label="interpretable", hypothesis="the letter n"):
    for item in client.get(f"/api/study/{token}/items").json()["items"]:
        response = client.put(f"/api/study/{token}/ratings/{item['id']}",
                              json={"label": label, "hypothesis": hypothesis})
        assert response.status_code == 200


def test_viewer_lists_runs_and_shades_a_neuron_in_activation_order(viewer, collected_runs):
    assert "solu_ln" in viewer.get("/").text and "gelu" in viewer.get("/").text
    assert 'data-run="solu_ln"' in viewer.get("/run", params={"run": "solu_ln"}).text
    listed = viewer.get("/api/neurons", params={"run": "solu_ln", "limit": 500}).json()
    assert [n["neuron"] for n in listed["neurons"]] == list(range(64)) == [
        *range(listed["total"])]
    page = viewer.get("/neuron", params={"run": "solu_ln", "layer": 0, "neuron": 5}).text
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
    post = viewer.get("/neuron", params={"run": "solu_ln", "layer": 0, "neuron": 5,
                                         "point": "post"}).text
    assert f"{store.examples(0, 5, 'post')[0].value:+.3f}" in post


@pytest.mark.parametrize("params, status", [
    ({"run": "solu_ln", "layer": 0, "neuron": 64}, 404),
    ({"run": "solu_ln", "layer": 3, "neuron": 0}, 404),
    ({"run": "../../etc", "layer": 0, "neuron": 0}, 404),
    ({"run": "solu_ln", "layer": "x", "neuron": 0}, 422),
    ({"run": "gelu", "layer": 0, "neuron": 0, "point": "mid"}, 404),
])
def test_viewer_refuses_bad_requests_with_4xx(viewer, params, status):
    response = viewer.get("/neuron", params=params)
    assert response.status_code == status and response.json()["detail"]


def test_study_api_rates_revises_and_refuses(client, study):
    token = study.tokens["ann"]
    items = client.get(f"/api/study/{token}/items").json()
    assert items["total"] == 120 and items["done"] == 0 and items["finished"] is False
    first = items["items"][0]["id"]
    body = {"label": "interpretable", "hypothesis": "  digits "}
    assert client.put(f"/api/study/{token}/ratings/{first}", json=body).json()["revision"] == 1
    revised = {**body, "label": "not_interpretable"}
    assert client.put(f"/api/study/{token}/ratings/{first}", json=revised).json() == {
        "ok": True, "revision": 2}
    item = client.get(f"/api/study/{token}/items/{first}").json()
    assert item["label"] == "not_interpretable" and item["hypothesis"] == "digits"
    assert len(item["snippets"]) == 20

    assert client.get("/api/study/forged/items").status_code == 403
    assert client.get("/study/forged").status_code == 403
    assert client.put(f"/api/study/{token}/ratings/nope", json=body).status_code == 404
    for bad in ({"label": "maybe"}, {}, [1], {"label": "interpretable", "seconds": 5}):
        response = client.put(f"/api/study/{token}/ratings/{first}", json=bad)
        assert response.status_code == 422
    response = client.put(f"/api/study/{token}/ratings/{first}", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 422
    # Another annotator sees none of ann's ratings, and none of ann's ids are theirs.
    other = study.tokens["bob"]
    assert client.get(f"/api/study/{other}/items").json()["done"] == 0
    assert client.get(f"/api/study/{other}/items/{first}").status_code == 404


def test_time_per_rating_is_measured_by_the_server(client, study):
    token = study.tokens["ann"]
    first = client.get(f"/api/study/{token}/items").json()["items"][0]["id"]
    client.get(f"/api/study/{token}/items/{first}")
    time.sleep(0.6)
    rating = {"label": "interpretable", "hypothesis": "digits"}
    client.put(f"/api/study/{token}/ratings/{first}", json=rating)
    client.put(f"/api/study/{token}/ratings/{first}", json=rating)
    (seconds,) = sqlite3.connect(study.path).execute(
        "SELECT seconds FROM ratings WHERE annotator = 'ann'").fetchone()
    assert 0.6 <= seconds < 5  # the second rating, not shown again, adds nothing


def test_finishing_opens_the_checks_and_makes_ratings_final(client, study):
    token = study.tokens["bob"]
    assert client.get(f"/api/study/{token}/checks").json() == {"open": False, "groups": [],
                                                                "unlabelled": None}
    assert client.post(f"/api/study/{token}/finish").status_code == 409  # nothing rated yet
    rate_everything(client, token)
    assert client.get(f"/api/study/{token}/checks").json()["open"] is False
    first = client.get(f"/api/study/{token}/items").json()["items"][0]["id"]
    assert client.put(f"/api/study/{token}/ratings/{first}",
                      json={"label": "not_interpretable"}).status_code == 200  # still revisable
    client.put(f"/api/study/{token}/ratings/{first}", json={"label": "interpretable",
                                                            "hypothesis": "the letter n"})
    assert client.post(f"/api/study/{token}/finish").json() == {"ok": True}
    assert client.get(f"/api/study/{token}/items").json()["finished"] is True
    assert client.put(f"/api/study/{token}/ratings/{first}",
                      json={"label": "not_interpretable"}).status_code == 409
    groups = client.get(f"/api/study/{token}/checks").json()["groups"]
    assert len(groups) == 120  # one per neuron, whichever model it came from
    check = groups[0]["checks"][0]
    assert groups[0]["hypothesis"] == "the letter n" and set(check) == {
        "id", "tokens", "acts", "fire", "start", "consistent"}
    assert set(check["acts"]) == {0.0}  # no activation values that would reveal the point
    url = f"/api/study/{token}/checks/{check['id']}"
    total = sum(len(g["checks"]) for g in groups)
    assert client.get(f"/api/study/{token}/checks").json()["unlabelled"] == total
    assert client.put(url, json={"consistent": False}).json() == {"ok": True}
    assert client.get(f"/api/study/{token}/checks").json()["unlabelled"] == total - 1
    assert client.put(f"/api/study/{study.tokens['ann']}/checks/{check['id']}",
                      json={"consistent": True}).status_code == 404  # not ann's example
    assert client.put(url, json={"consistent": "perhaps"}).status_code == 422
    again = client.get(f"/api/study/{token}/checks").json()["groups"][0]["checks"][0]
    assert again["consistent"] is False


def test_the_study_server_serves_no_viewer_and_the_viewer_no_study(client, viewer, study):
    root = client.get("/")  # what this server is, and nothing of the viewer
    assert root.status_code == 200 and "link you were given" in root.text
    assert "neuron?" not in root.text and "run=" not in root.text
    for path in ("/run?run=solu_ln", "/neuron?run=solu_ln&layer=0&neuron=0", "/static/nothing"):
        assert client.get(path).status_code == 404
    token = study.tokens["ann"]
    assert viewer.get(f"/study/{token}").status_code == 404
    assert viewer.get(f"/api/study/{token}/items").status_code == 404


def test_serve_refuses_the_viewer_and_the_study_together(collected_runs, study):
    from typer.testing import CliRunner

    from solulab.cli import app

    result = CliRunner().invoke(app, ["serve", "--runs", str(collected_runs), "--study",
                                      str(study.path)])
    assert result.exit_code == 2 and "unblind" in result.output
    result = CliRunner().invoke(app, ["serve", "--study", str(study.path), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--allow-host" in result.output


def test_a_killed_server_keeps_every_acknowledged_rating(study):
    process, url = start_server("--study", str(study.path))
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
        "SELECT o.alias FROM ratings r JOIN orders o ON o.item_id = r.item_id AND "
        "o.annotator = r.annotator WHERE r.annotator = 'ann'")}
    assert len(acknowledged) == 25 and rows == set(acknowledged)


def test_serve_binds_loopback_by_default():
    import typer

    from solulab.cli import app

    serve = typer.main.get_command(app).commands["serve"]
    assert {p.name: p.default for p in serve.params}["host"] == "127.0.0.1"


def test_the_instructions_say_what_one_rule_is_and_what_the_checks_ask(client, study):
    page = client.get(f"/study/{study.tokens['ann']}").text
    assert "is not one rule" in page and "forms of one word" in page
    assert "Too broad" in page and "one token in five" in page
    assert "The strength is not shown (no shading)" in page
    assert "⟨start⟩" in page and "Finish" in page
