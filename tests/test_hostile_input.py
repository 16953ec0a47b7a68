"""Every route of both servers against hostile input: answers are 4xx, never 500; memory and
file descriptors stay bounded; other annotators are not disturbed."""

import os
import resource
import sqlite3
import threading
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import start_server, stop

from solulab.study.create import create_study
from solulab.web.app import study_app, viewer_app
from solulab.web.guard import MAX_BODY_BYTES

LOCAL = "http://127.0.0.1"
STRINGS = ["\x00", "a" * 300, "x" * 5000, "gelu/./.", "gelu/../gelu", "../../etc/passwd",
           "\ud800", "%", "loop", "loop/loop/loop/gelu", "selfloop", "NaN", "-1",
           "99999999999999999999999"]
BODIES = [b'{"label": "interpretable", "hypothesis": NaN}', b'{"consistent": Infinity}',
          b"NaN", b'{"label": "interpretable", "hypothesis": "\\ud800"}',
          b'{"label": "interpretable", "hypothesis": "a\\u0000b"}', b"\xff\xfe{",
          b"[" * 30_000 + b"]" * 30_000, b'{"label": "interpretable", "x": 1}',
          b'{"label": "interpretable", "hypothesis": "' + b"h" * 5000 + b'"}', b"", b"null"]


@pytest.fixture
def runs(collected_runs, tmp_path):
    """A runs directory with links to two runs, a link loop and a link to itself."""
    root = tmp_path / "runs"
    root.mkdir()
    for name in ("gelu", "solu_ln"):
        (root / name).symlink_to(collected_runs / name)
    (root / "loop").symlink_to(root)
    (root / "selfloop").symlink_to(root / "selfloop")
    return root


@pytest.fixture
def study(collected_runs, tmp_path):
    return create_study({"g": collected_runs / "gelu", "s": collected_runs / "solu_ln"},
                        tmp_path / "study.sqlite", 20, annotators=["ann", "bob"])


def q(text: str) -> str:
    """Percent-encoded as a client may send it, lone surrogates and all."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_every_viewer_route_answers_hostile_strings_with_4xx(runs):
    client = TestClient(viewer_app(runs), base_url=LOCAL, raise_server_exceptions=False)
    assert client.get("/").status_code == 200 and "solu_ln" in client.get("/").text
    for s in STRINGS:
        for url in (f"/run?run={q(s)}", f"/neuron?run={q(s)}&layer=0&neuron=0",
                    f"/neuron?run=gelu&layer={q(s)}&neuron=0",
                    f"/neuron?run=gelu&layer=0&neuron={q(s)}",
                    f"/neuron?run=gelu&layer=0&neuron=0&point={q(s)}", f"/static/{q(s)}"):
            status = client.get(url).status_code
            assert 400 <= status < 500, (url, status)


def test_distinct_run_strings_open_no_new_stores(runs):
    app = viewer_app(runs)
    client = TestClient(app, base_url=LOCAL, raise_server_exceptions=False)
    client.get("/run", params={"run": "gelu"})
    fds, rss = open_fds(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(1200):
        spelling = "gelu" + "/." * (i % 40) + "/" * (i // 40)
        assert client.get(f"/run?run={q(spelling)}").status_code in (200, 404)
    assert open_fds() <= fds + 2
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert growth_mib < 100


def test_every_study_route_answers_hostile_input_with_4xx(study):
    client = TestClient(study_app(study.path), base_url=LOCAL, raise_server_exceptions=False)
    token = study.tokens["ann"]
    alias = client.get(f"/api/study/{token}/items").json()["items"][0]["id"]
    for s in STRINGS:
        for method, path in (("GET", f"/study/{q(s)}"), ("GET", f"/api/study/{q(s)}/items"),
                             ("GET", f"/api/study/{token}/items/{q(s)}"),
                             ("PUT", f"/api/study/{token}/ratings/{q(s)}"),
                             ("PUT", f"/api/study/{token}/checks/{q(s)}"),
                             ("POST", f"/api/study/{q(s)}/finish")):
            body = b'{"label": "interpretable"}' if method == "PUT" else None
            status = client.request(method, path, content=body).status_code
            assert 400 <= status < 500, (method, path, status)
    for body in BODIES:
        for path in (f"/api/study/{token}/ratings/{alias}", f"/api/study/{token}/checks/{alias}"):
            response = client.put(path, content=body,
                                  headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (path, body[:40], response.status_code)
            # Without a valid token, the body is never looked at.
            forged = client.put(path.replace(token, "forged"), content=body,
                                headers={"content-type": "application/json"})
            assert forged.status_code == 403
    assert client.get(f"/api/study/{token}/items").json()["done"] == 0


def test_big_bodies_are_refused_unread_and_errors_echo_no_input(study):
    client = TestClient(study_app(study.path), base_url=LOCAL, raise_server_exceptions=False)
    token = study.tokens["ann"]
    alias = client.get(f"/api/study/{token}/items").json()["items"][0]["id"]
    url = f"/api/study/{token}/ratings/{alias}"
    huge = b'{"label": "' + b"x" * 5_000_000 + b'"}'
    response = client.put(url, content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and len(response.content) < 200

    def chunks():
        for _ in range(100):
            yield b"x" * (MAX_BODY_BYTES // 50)

    response = client.put(url, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    response = client.put(url, json={"label": "SECRETWORD" * 100})
    assert response.status_code == 422 and "SECRETWORD" not in response.text


def test_other_hosts_are_refused_and_security_headers_are_sent(study, runs):
    for app in (study_app(study.path), viewer_app(runs)):
        client = TestClient(app, base_url=LOCAL, raise_server_exceptions=False)
        assert client.get("/static/style.css", headers={"host": "evil.test"}).status_code == 400
        assert client.get("/static/style.css",
                          headers={"host": "localhost:8000"}).status_code == 200
        headers = client.get("/static/style.css").headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert "default-src 'self'" in headers["content-security-policy"]


def test_hostile_clients_change_nothing_for_twenty_annotators(collected_runs, tmp_path):
    names = [f"a{i:02d}" for i in range(20)]
    study = create_study({"g": collected_runs / "gelu", "s": collected_runs / "solu_ln"},
                         tmp_path / "many.sqlite", 15, annotators=names)
    process, url = start_server("--study", str(study.path))
    errors, stop_hostile = [], threading.Event()

    def annotate(name: str) -> None:
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                token = study.tokens[name]
                for item in http.get(f"/api/study/{token}/items").json()["items"]:
                    http.get(f"/api/study/{token}/items/{item['id']}").raise_for_status()
                    http.put(f"/api/study/{token}/ratings/{item['id']}",
                             json={"label": "interpretable", "hypothesis": name}
                             ).raise_for_status()
        except Exception as e:  # collected and reported below
            errors.append(repr(e))

    def attack() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop_hostile.is_set():
                for body in BODIES:
                    r = http.put(f"/api/study/{study.tokens['a00']}/ratings/nope", content=body)
                    if r.status_code >= 500:
                        errors.append(f"hostile request got {r.status_code}")
                http.get("/api/study/forged/items")

    try:
        hostile = [threading.Thread(target=attack) for _ in range(2)]
        threads = [threading.Thread(target=annotate, args=(n,)) for n in names]
        for t in hostile + threads:
            t.start()
        for t in threads:
            t.join()
        stop_hostile.set()
        for t in hostile:
            t.join()
    finally:
        stop(process)
    assert not errors
    conn = sqlite3.connect(study.path)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT annotator || item_id), MAX(revision) "
                        "FROM ratings").fetchone() == (20 * 30, 20 * 30, 1)
    assert conn.execute("SELECT COUNT(*) FROM ratings WHERE hypothesis != annotator"
                        ).fetchone() == (0,)


def test_a_bad_regular_expression_is_one_line_not_a_traceback(collected_runs):
    from typer.testing import CliRunner

    from solulab.cli import app

    result = CliRunner().invoke(app, ["regex", str(collected_runs / "gelu"), "--pattern", "("])
    assert result.exit_code == 2 and "bad regular expression '('" in result.output
    assert "Traceback" not in result.output and "layer" not in result.output
