import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from solulab.autointerp.agreement import auto_labels
from solulab.errors import SolulabError
from solulab.pipelines.replicate import (
    PLAN_FILE,
    TOKENS_PER_PARAM,
    ReplicationPlan,
    Request,
    ladder,
    load_plan,
    replicate,
)
from solulab.study import db

SETTINGS = ["--n-ctx", "32", "--batch-size", "8", "--collect-tokens", "2048",
            "--neurons-per-model", "12", "--annotators", "ann,bob", "--layers", "2",
            "--seeds", "2", "--acts", "gelu,solu_ln"]
ACTS = ("gelu", "solu_ln")


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "solulab.cli", "replicate", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _largest(out, plan) -> dict[int, dict[str, object]]:
    """{seed: {act: run}} of the largest size, where replicate keeps them."""
    roots = {0: out / "sweep", 1: out / "seeds" / "seed1"}
    return {seed: {act: root / plan["sizes"][-1] / act for act in ACTS}
            for seed, root in roots.items()}


def _complete_runs(out):
    plan = json.loads((out / PLAN_FILE).read_text())
    runs = [out / "sweep" / size / act for size in plan["sizes"] for act in plan["acts"]]
    runs += [run for by_act in _largest(out, plan).values() for run in by_act.values()]
    for run in runs:
        assert json.loads((run / "run.json").read_text())["complete"]
    return plan


def _rate_and_finish(study) -> dict[tuple[str, int], list[int]]:
    """Both annotators rate every neuron (interpretable when its id's last digit is even) and
    finish; returns {(act, layer): [interpretable, rated]} by hand."""
    conn = db.connect(study)
    counts: dict[tuple[str, int], list[int]] = {}
    rows = conn.execute("SELECT o.annotator, o.item_id, m.act_fn, s.layer FROM orders o "
                        "JOIN secrets s ON s.item_id = o.item_id "
                        "JOIN models m ON m.name = s.model").fetchall()
    with db.Transaction(conn):
        for annotator, item, act, layer in rows:
            yes = int(item[-1], 16) % 2 == 0
            conn.execute("INSERT INTO ratings (annotator, item_id, label, hypothesis, seconds) "
                         "VALUES (?, ?, ?, 'x', 1)", (annotator, item,
                                                      "interpretable" if yes else
                                                      "not_interpretable"))
            cell = counts.setdefault((act, layer), [0, 0])
            cell[0] += yes
            cell[1] += 1
        conn.execute("UPDATE annotators SET finished_at = datetime('now')")
    conn.close()
    return counts


def test_replicate_end_to_end_interrupted_and_resumed(small_corpus, tmp_path):
    out = tmp_path / "rep"
    args = ["--corpus", str(small_corpus), "--out", str(out), "--budget-minutes", "0.6",
            *SETTINGS]
    first = _cli(*args)
    deadline = time.monotonic() + 120
    checkpoints = out / "sweep"
    while not list(checkpoints.glob("*/*/checkpoints/*")) and time.monotonic() < deadline:
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.2)
    plan_before = (out / PLAN_FILE).read_text()
    first.send_signal(signal.SIGINT)
    log = first.communicate(timeout=120)[0]
    assert first.returncode == 130, log
    assert not (out / "results.md").exists()

    second = _cli(*args)
    log = second.communicate(timeout=400)[0]
    assert second.returncode == 0, log
    assert "continuing the plan" in log and (out / PLAN_FILE).read_text() == plan_before
    plan = _complete_runs(out)
    # The plan: 2-layer sizes, the largest with the two below it, all on equal tokens, and a
    # second seed of the largest.
    sizes = ladder(2)
    top = sizes.index(plan["sizes"][-1])
    assert plan["sizes"] == sizes[max(0, top - 2):top + 1]
    assert (plan["layers"], plan["seeds"]) == (2, 2)
    assert plan["undertrained"] or (
        plan["tokens"] >= TOKENS_PER_PARAM * plan["non_embedding_params"][plan["sizes"][-1]])
    results = (out / "results.md").read_text()
    assert "size-equivalent multiplier" in results and "Not rated yet" in results
    assert f"## Blinded study, 12 neurons per activation of {plan['sizes'][-1]}" in results
    assert "Across seeds: 2 seeds" in results and "by layer" in results
    assert "planned for 0.6 minutes" in results and "under \"Across seeds\"" in results
    numbers = json.loads((out / "results.json").read_text())
    assert set(numbers["automated"]) == set(ACTS)
    assert (out / "annotator-links.txt").stat().st_mode & 0o077 == 0
    # Per-layer fractions and the seed spread, by hand from the runs themselves.
    largest = _largest(out, plan)
    for seed, by_act in largest.items():
        for act, run in by_act.items():
            verdicts = auto_labels(run)
            for layer in (0, 1):
                mine = [v for (lay, _), v in verdicts.items() if lay == layer]
                assert numbers["layer_fractions"][act][str(layer)][str(seed)] == \
                    pytest.approx(sum(mine) / len(mine))
            loss = json.loads((run / "run.json").read_text())["val_loss"]
            assert numbers["losses"][act][str(seed)] == pytest.approx(loss)
    for act in ACTS:
        assert numbers["automated"][act]["neurons"] == sum(
            len(auto_labels(by_act[act])) for by_act in largest.values())
    gelu = [numbers["losses"]["gelu"][s] for s in ("0", "1")]
    assert f"{sum(gelu) / 2:.4f} ± {abs(gelu[0] - gelu[1]) / 2 ** 0.5:.4f}" in results
    # The study: 6 neurons of each seed's model, 3 from each layer.
    conn = db.connect(out / "study.sqlite")
    try:
        assert sorted(m["name"] for m in db.models(conn)) == [
            "gelu-seed0", "gelu-seed1", "solu_ln-seed0", "solu_ln-seed1"]
        per_layer = conn.execute("SELECT model, layer, COUNT(*) FROM secrets "
                                 "GROUP BY model, layer").fetchall()
        assert sorted(n for _, _, n in per_layer) == [3] * 8
    finally:
        conn.close()
    counts = _rate_and_finish(out / "study.sqlite")
    # A third run changes no trained weight and no study, and adds the blinded figures.
    kept = [*sorted(out.glob("**/model.safetensors"))]
    before = [p.stat().st_mtime_ns for p in kept]
    third = _cli(*args)
    assert third.communicate(timeout=200)[0] and third.returncode == 0
    assert [p.stat().st_mtime_ns for p in kept] == before
    numbers = json.loads((out / "results.json").read_text())
    for row in numbers["blinded_layers"]:
        assert [row["interpretable"], row["rated"]] == counts[(row["act_fn"], row["layer"])]
    assert {(r["act_fn"], r["layer"]) for r in numbers["program_vs_raters_layers"]} == \
        set(counts)
    results = (out / "results.md").read_text()
    assert "By layer (every rater pooled" in results and "fig4_layers.png" in results


def test_a_replication_continues_only_with_its_own_settings(small_corpus, tmp_path):
    request = Request(small_corpus, 1.0)
    plan = ReplicationPlan(replace(request, corpus=small_corpus.resolve(), device="cpu"),
                           sizes=["1x32"], tokens=1000, seconds_per_token={"1x32": 1e-5},
                           non_embedding_params={"1x32": 12_000}, threads=1, undertrained=True)
    record = plan.to_json()
    assert record == {"corpus": str(small_corpus.resolve()), "budget_minutes": 1.0,
                      "acts": ["gelu", "solu_ln", "gelu_ln"], "n_ctx": 256, "batch_size": 16,
                      "lr": 1e-3, "seed": 0, "neurons_per_model": 60, "collect_tokens": 262_144,
                      "annotators": ["rater1", "rater2"], "layers": 2, "seeds": 3,
                      "device": "cpu", "sizes": ["1x32"], "tokens": 1000,
                      "seconds_per_token": {"1x32": 1e-5}, "non_embedding_params": {"1x32": 12_000},
                      "threads": 1, "undertrained": True}
    (tmp_path / PLAN_FILE).write_text(json.dumps(record))
    assert load_plan(tmp_path, request) == plan
    with pytest.raises(SolulabError, match="budget_minutes: 1.0 -> 2.0"):
        load_plan(tmp_path, Request(small_corpus, 2.0))
    with pytest.raises(SolulabError, match="gelu baseline"):
        Request(small_corpus, 1.0, acts=("solu_ln", "gelu_ln"))
    with pytest.raises(SolulabError, match="budget"):
        replicate(Request(small_corpus, 0.0), tmp_path / "x")
    with pytest.raises(SolulabError, match="seeds must be >= 1"):
        Request(small_corpus, 1.0, seeds=0)


def test_plans_made_before_depth_and_seeds_read_as_one_layer_one_seed():
    from pathlib import Path

    from solulab.pipelines.replicate_plan import read_plan_file

    saved = Path(__file__).parent.parent / "docs" / "replication" / "code" / "replicate.json"
    plan = read_plan_file(saved)
    assert (plan.request.layers, plan.request.seeds) == (1, 1)
    assert plan.sizes == ["1x32", "1x64", "1x128"] and plan.request.budget_minutes == 60.0
    saved_record = json.loads(saved.read_text())
    assert plan.to_json() == {**saved_record, "corpus": str(Path("code-corpus").resolve()),
                              "layers": 1, "seeds": 1}
