"""The study's displays and its blinding audit: the rank display against hand computations and
an independent ranking, an attacker who reads the shading of two models of different density,
and the audit against planted leaks."""

import random
import statistics

import numpy as np
import pytest
import scipy.stats
from fastapi.testclient import TestClient

import solulab.study.create as create
from solulab.study.audit import GROUPS, audit, audit_pair, item_features
from solulab.study.display import RANK_FLOOR
from solulab.study.shading import plain, rank
from solulab.web.app import study_app


def test_rank_display_shades_the_top_share_by_rank():
    # 5 tokens, 2 shaded: the largest (5) gets 1.0, the second (3) the floor.
    shades = rank([np.array([0.0, 1.0, 5.0]), np.array([2.0, 3.0])], share=0.4)
    assert [s.tolist() for s in shades] == [[0.0, 0.0, 1.0], [0.0, RANK_FLOOR]]
    # Equal activations across the cut stay unshaded: a dead neuron shows nothing.
    assert rank([np.zeros(10)], share=0.3)[0].tolist() == [0.0] * 10
    assert [s.tolist() for s in rank([np.array([]), np.array([1.0])])] == [[], [1.0]]


def test_rank_display_matches_an_independent_ranking():
    rng = np.random.default_rng(0)
    for trial in range(20):
        sizes = rng.integers(0, 30, size=rng.integers(1, 25))
        acts = [np.round(rng.normal(size=n), 1) for n in sizes]  # rounding makes ties
        flat = np.concatenate(acts)
        if not flat.size:
            continue
        share = float(rng.uniform(0.01, 0.5))
        shaded = int(np.ceil(share * flat.size))
        ranks = scipy.stats.rankdata(flat, method="average") - (flat.size - shaded)
        step = (1 - RANK_FLOOR) / (shaded - 1) if shaded > 1 else 0.0
        expected = [round(1 - (shaded - r) * step, 2) if r >= 1 else 0.0 for r in ranks]
        got = np.concatenate(rank(acts, share=share))
        assert got.tolist() == pytest.approx(expected, abs=1e-9)
        # As many shaded as the share asks whenever no tie crosses the cut.
        if len(np.unique(flat)) == flat.size:
            assert int(np.sum(got > 0)) == shaded


def test_plain_display_is_activation_over_the_largest():
    shades = plain([np.array([-1.0, 1.0, 5.0]), np.array([2.0, 3.333])])
    assert [s.tolist() for s in shades] == [[0.0, 0.2, 1.0], [0.4, 0.67]]
    assert plain([np.array([-1.0, -2.0])])[0].tolist() == [0.0, 0.0]


MODELS = {"zyxgelu": "gelu", "zyxsolu": "solu_ln"}


def attack(collected_runs, tmp_path, monkeypatch, display_name):
    """Create a 60 + 60 study with ``display_name``; an attacker holding only the link reads
    every item and its examples, and computes the audit's features from what it saw."""
    monkeypatch.setattr(create, "SECURE", random.Random(20261205))
    models = {name: collected_runs / run for name, run in MODELS.items()}
    study = create.create_study(models, tmp_path / f"{display_name}.sqlite", 60, seed=5,
                                annotators=["eve"], display_name=display_name)
    client = TestClient(study_app(study.path), base_url="http://127.0.0.1")
    api = f"/api/study/{study.tokens['eve']}"
    listing = client.get(f"{api}/items").json()
    assert listing["display"] == display_name
    items = {e["id"]: client.get(f"{api}/items/{e['id']}").json() for e in listing["items"]}
    for alias in items:
        client.put(f"{api}/ratings/{alias}", json={"label": "interpretable",
                                                   "hypothesis": alias})
    assert client.post(f"{api}/finish").status_code == 200
    checks = {g["hypothesis"]: g["checks"] for g in client.get(f"{api}/checks").json()["groups"]}
    features = {alias: item_features(item, checks[alias]) for alias, item in items.items()}
    import sqlite3

    truth = {alias: int(model == "zyxsolu") for alias, model in sqlite3.connect(study.path)
             .execute("SELECT o.alias, s.model FROM orders o JOIN secrets s ON "
                      "s.item_id = o.item_id")}
    return study, features, truth


def median_split_p(features, truth, name):
    """Two-sided binomial p of the attacker's guess: above the median -> SoLU."""
    median = statistics.median(f[name] for f in features.values())
    hits = sum(int(f[name] > median) == truth[a] for a, f in features.items())
    return scipy.stats.binomtest(hits, len(truth), 0.5).pvalue


def test_the_two_test_models_differ_in_density_as_real_ones_do(collected_runs, tmp_path,
                                                               monkeypatch):
    """The plain display shows GELU neurons firing on more of their snippets: the leak the
    default display must close, and which the audit must report."""
    study, features, truth = attack(collected_runs, tmp_path, monkeypatch, "plain")
    name = "non-firing tokens shaded above 0.3"
    gelu = np.mean([f[name] for a, f in features.items() if not truth[a]])
    solu = np.mean([f[name] for a, f in features.items() if truth[a]])
    assert gelu > solu and median_split_p(features, truth, name) < 1e-6
    result = audit(study.path)
    (pair,) = result["pairs"]
    assert result["display"] == "plain" and not pair["blind"]
    assert pair["best"]["accuracy"] > 0.75 and pair["best"]["p_corrected"] < 1e-6


def test_with_the_default_display_no_feature_tells_the_models_apart(collected_runs, tmp_path,
                                                                     monkeypatch):
    study, features, truth = attack(collected_runs, tmp_path, monkeypatch, "rank")
    assert len(truth) == 120
    for group, names in GROUPS.items():
        for name in names:
            p = median_split_p(features, truth, name)
            assert p > 0.05, f"{group}: {name} tells the models apart (p = {p:.3g})"
    (pair,) = audit(study.path)["pairs"]
    assert pair["blind"], pair["best"]


def planted_item(rng, shaded_neighbours: int, fire_token: str = " x") -> dict:
    """20 snippets of 25 tokens; the firing token fully shaded, ``shaded_neighbours`` of the
    others at 0.5."""
    snippets = []
    for _ in range(20):
        acts = [0.0] * 25
        acts[20] = 1.0
        for i in rng.sample([i for i in range(25) if i != 20], shaded_neighbours):
            acts[i] = 0.5
        snippets.append({"tokens": ["a"] * 20 + [fire_token] + ["b"] * 4, "acts": acts,
                         "fire": 20, "start": False})
    return {"snippets": snippets}


def test_the_audit_finds_a_planted_leak_and_no_leak_where_none_was_planted():
    rng = random.Random(0)
    checks = [{"tokens": ["a", "b"], "acts": [0.0, 0.0], "fire": 1, "start": False}] * 16
    same = [item_features(planted_item(rng, rng.choice([2, 3])), checks) for _ in range(120)]
    labels = [0] * 60 + [1] * 60
    fair = audit_pair(same, labels)
    assert fair["blind"] and fair["best"]["p_corrected"] > 0.05
    leaky = [item_features(planted_item(rng, rng.choice([2, 3]) + 2 * label), checks)
             for label in labels]
    leak = audit_pair(leaky, labels)
    assert not leak["blind"] and leak["best"]["accuracy"] > 0.9
    assert leak["best"]["classifier"].endswith(("shading", "shaded", "everything",
                                                "shaded above 0.3", "non-firing tokens"))
    # A leak through the firing token's class is found by the token-class features.
    tokens = [item_features(planted_item(rng, 2, " x" if label else "7"), checks)
              for label in labels]
    found = audit_pair(tokens, labels)
    by_name = {c["classifier"]: c["accuracy"] for c in found["classifiers"]}
    assert not found["blind"] and by_name["logistic regression on token classes"] > 0.9
    assert by_name["logistic regression on shading"] < 0.7
