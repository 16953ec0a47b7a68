"""A hostile local user and a careless or hostile annotator: who can read the study's key, what
ratings count, and what the servers say about damaged stores, aborted uploads and bidi text."""

import asyncio
import logging
import os
import shutil
import stat

import pytest
from fastapi.testclient import TestClient

from solulab.study.create import create_study
from solulab.study.db import connect
from solulab.study.report import summarise, write_report
from solulab.visible import visible
from solulab.web.app import study_app, viewer_app
from solulab.web.pages import shade_tokens

LOCAL = "http://127.0.0.1"


@pytest.fixture
def open_umask():
    """The most permissive umask a user could have."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.fixture
def study(collected_runs, tmp_path):
    models = {"zyxgelu": collected_runs / "gelu", "zyxsolu": collected_runs / "solu_ln"}
    return create_study(models, tmp_path / "study.sqlite", 8, seed=1, annotators=["ann", "bob"])


@pytest.fixture
def client(study):
    return TestClient(study_app(study.path), base_url=LOCAL, raise_server_exceptions=False)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_study_its_journals_and_its_report_are_owner_only_whatever_the_umask(
        collected_runs, tmp_path, open_umask):
    links = create_study({"a": collected_runs / "gelu", "b": collected_runs / "solu_ln"},
                         tmp_path / "study.sqlite", 4, annotators=["ann"])
    assert mode(links.path) == 0o600
    client = TestClient(study_app(links.path), base_url=LOCAL)
    api = f"/api/study/{links.tokens['ann']}"
    conn = connect(links.path)  # held open, so the journal files stay while we look
    for item in client.get(f"{api}/items").json()["items"]:
        client.get(f"{api}/items/{item['id']}")
        client.put(f"{api}/ratings/{item['id']}", json={"label": "not_interpretable"})
    journals = [p for p in tmp_path.iterdir() if p.name.startswith("study.sqlite-")]
    assert {p.name for p in journals} >= {"study.sqlite-wal", "study.sqlite-shm"}
    assert all(mode(p) == 0o600 for p in journals)
    conn.close()
    out, _ = write_report(links.path, tmp_path / "report", unfinished=True)
    assert mode(out) == 0o700
    assert sorted(p.name for p in out.iterdir()) == ["checks.csv", "fig4.png", "ratings.csv",
                                                     "summary.json"]
    assert all(mode(p) == 0o600 for p in out.iterdir())


def test_an_older_study_readable_by_others_is_made_owner_only_when_opened(study):
    os.chmod(study.path, 0o644)
    connect(study.path).close()
    assert mode(study.path) == 0o600


def test_interpretable_needs_a_hypothesis(client, study):
    api = f"/api/study/{study.tokens['ann']}"
    alias = client.get(f"{api}/items").json()["items"][0]["id"]
    for hypothesis in ("", "   \n "):
        response = client.put(f"{api}/ratings/{alias}", json={"label": "interpretable",
                                                              "hypothesis": hypothesis})
        assert response.status_code == 422 and "hypothesis" in str(response.json()["detail"])
    assert client.put(f"{api}/ratings/{alias}", json={"label": "not_interpretable"}
                      ).status_code == 200
    assert client.put(f"{api}/ratings/{alias}", json={"label": "interpretable",
                                                      "hypothesis": "digits"}).status_code == 200


def rate_all(client, token, open_items: bool, finish: bool) -> list[str]:
    api = f"/api/study/{token}"
    aliases = [i["id"] for i in client.get(f"{api}/items").json()["items"]]
    for alias in aliases:
        if open_items:
            client.get(f"{api}/items/{alias}")
        assert client.put(f"{api}/ratings/{alias}", json={"label": "not_interpretable"}
                          ).status_code == 200
    if finish:
        assert client.post(f"{api}/finish").status_code == 200
    return aliases


def test_the_report_flags_unopened_items_and_leaves_out_unfinished_annotators(client, study):
    rate_all(client, study.tokens["ann"], open_items=False, finish=True)
    rate_all(client, study.tokens["bob"], open_items=True, finish=False)
    summary = summarise(study.path)
    assert summary["unfinished_annotators"] == ["bob"]
    assert {r["annotator"] for r in summary["ratings"]} == {"ann"}
    assert sum(m["rated"] for m in summary["models"].values()) == 16
    assert len(summary["unopened"]) == 16 and all(not r["opened"] for r in summary["ratings"])
    counted = summarise(study.path, unfinished=True)
    assert sum(m["rated"] for m in counted["models"].values()) == 32
    bob = [r for r in counted["ratings"] if r["annotator"] == "bob"]
    assert all(r["opened"] for r in bob) and len(counted["unopened"]) == 16


def test_a_study_report_of_a_file_that_is_no_study_creates_nothing(tmp_path):
    from solulab.errors import SolulabError

    other = tmp_path / "manifest.json"
    other.write_text('{"not": "a study"}')
    with pytest.raises(SolulabError, match="not a solulab study"):
        write_report(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


@pytest.fixture
def damaged_runs(collected_runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(collected_runs / "solu_ln", root / "broken")
    return root


def test_a_damaged_store_is_a_4xx_that_names_the_run_and_no_path(damaged_runs):
    viewer = TestClient(viewer_app(damaged_runs), base_url=LOCAL, raise_server_exceptions=False)
    layer = damaged_runs / "broken" / "neurons" / "layer_0"
    (layer / "mid.stats.npy").write_bytes(b"\x93NUMPY garbage")
    response = viewer.get("/neuron", params={"run": "broken", "layer": 0, "neuron": 1})
    assert response.status_code == 409 and "'broken'" in response.json()["detail"]
    (layer / "mid.stats.npy").unlink()
    for path, params in (("/neuron", {"run": "broken", "layer": 0, "neuron": 1}),
                         ("/run", {"run": "broken"})):
        response = viewer.get(path, params=params)
        assert 400 <= response.status_code < 500
        assert str(damaged_runs.resolve()) not in response.text
        assert str(damaged_runs) not in response.text


def test_an_aborted_upload_is_one_log_line_without_the_token(client, study, caplog):
    token = study.tokens["ann"]
    alias = client.get(f"/api/study/{token}/items").json()["items"][0]["id"]
    app = study_app(study.path)
    messages = iter([{"type": "http.request", "body": b'{"label": "inter', "more_body": True},
                     {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "PUT", "scheme": "http", "path": f"/api/study/{token}/ratings/{alias}",
             "raw_path": f"/api/study/{token}/ratings/{alias}".encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"40"),
                                          (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    with caplog.at_level(logging.DEBUG):
        asyncio.run(app(scope, receive, send))
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].exc_info is None
    assert "disconnected" in records[0].getMessage() and token not in caplog.text
    assert sent[0]["status"] == 400


def test_bidi_controls_are_drawn_never_obeyed():
    assert visible("a\u202eb\u2067c\u200f") == "a⟦U+202E⟧b⟦U+2067⟧c⟦U+200F⟧"
    import numpy as np

    html = shade_tokens(["x", "\u202edef", "\u2066y"], np.array([0.1, 0.5, 1.0]), 1.0, 2)
    assert "\u202e" not in html and "\u2066" not in html
    assert "⟦U+202E⟧def" in html and "⟦U+2066⟧y" in html
