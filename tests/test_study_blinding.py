"""A scripted attacker holding only an annotator link tries to tell which model each item came
from, using every response the link can reach before and after finishing both phases. Each of
its guesses must be no better than chance (two-sided binomial test over 120 items)."""

import random
import statistics

import pytest
import scipy.stats
from fastapi.testclient import TestClient

import solulab.study.create as create
from solulab.web.app import study_app

MODELS = {"zyxgelu": "gelu", "zyxsolu": "solu_ln"}


@pytest.fixture
def attacked(collected_runs, tmp_path, monkeypatch):
    # A seeded stand-in for the secure source makes the test repeatable; the attacker never
    # sees it.
    monkeypatch.setattr(create, "SECURE", random.Random(20261125))
    models = {name: collected_runs / run for name, run in MODELS.items()}
    study = create.create_study(models, tmp_path / "study.sqlite", 60, annotators=["eve"])
    client = TestClient(study_app(study.path), base_url="http://127.0.0.1",
                        raise_server_exceptions=False)
    return study, client


def crawl(client, token):
    """Everything the link reaches, and per item the features an attacker can compute."""
    api = f"/api/study/{token}"
    seen = [client.get(f"/study/{token}").text, client.get("/static/study.js").text]
    root = client.get("/")  # the server says what it is, and nothing about the study
    assert root.status_code == 200 and "link you were given" in root.text
    seen.append(root.text)
    for path in ("/run", "/neuron", "/docs", "/openapi.json", "/api/study"):
        response = client.get(path)
        assert response.status_code == 404
        seen.append(response.text)
    listing = client.get(f"{api}/items").json()
    features = {}
    for position, entry in enumerate(listing["items"]):
        item = client.get(f"{api}/items/{entry['id']}").json()
        seen.append(str(item))
        snippets = [s for s in item["snippets"] if s["tokens"]]
        features[entry["id"]] = {"position": position, "alias": entry["id"],
                                 "snippets": len(snippets), "keys": len(item)}
        # The checks attack: each item's id as its hypothesis labels its example group.
        client.put(f"{api}/ratings/{entry['id']}",
                   json={"label": "interpretable", "hypothesis": entry["id"]})
    assert client.post(f"{api}/finish").status_code == 200
    groups = client.get(f"{api}/checks").json()["groups"]
    seen.append(str(groups))
    by_hypothesis = {g["hypothesis"]: g for g in groups}
    for alias, f in features.items():
        group = by_hypothesis.get(alias, {"checks": []})
        f["has_checks"] = int(alias in by_hypothesis)
        f["checks"] = len(group["checks"])
        f["shaded_checks"] = sum(any(c["acts"]) for c in group["checks"])
        for check in group["checks"]:
            assert client.put(f"{api}/checks/{check['id']}",
                              json={"consistent": True}).status_code == 200
    seen += [client.get(f"{api}/items").text, client.get(f"{api}/checks").text]
    return features, "\n".join(seen)


def guess_by_median(values: dict[str, float]) -> dict[str, int]:
    """Above the median -> 1; an attacker's split on one feature."""
    median = statistics.median(values.values())
    return {k: int(v > median) for k, v in values.items()}


def test_an_attacker_with_a_link_guesses_no_model_better_than_chance(attacked,
                                                                     collected_runs):
    study, client = attacked
    features, text = crawl(client, study.tokens["eve"])
    for secret in (*MODELS, *MODELS.values(), str(collected_runs), '"layer"', '"neuron"'):
        assert secret not in text
    truth = {}
    for alias, model in study_truth(study.path).items():
        truth[alias] = int(model == "zyxsolu")
    assert len(truth) == 120
    for feature in ("position", "alias", "snippets", "keys", "has_checks", "checks",
                    "shaded_checks"):
        values = {a: f[feature] if feature != "alias" else int(a, 16)
                  for a, f in features.items()}
        guess = guess_by_median(values)
        hits = sum(guess[a] == truth[a] for a in truth)
        p = scipy.stats.binomtest(hits, len(truth), 0.5).pvalue
        assert p > 0.05, f"{feature} tells the model apart: {hits}/120, p = {p:.3g}"


def study_truth(path):
    import sqlite3

    return dict(sqlite3.connect(path).execute(
        "SELECT o.alias, s.model FROM orders o JOIN secrets s ON s.item_id = o.item_id"))
