import json
import signal
import subprocess
import sys
import time

import pytest

from solulab.errors import SolulabError
from solulab.replicate import (
    LADDER,
    PLAN_FILE,
    TOKENS_PER_PARAM,
    ReplicationPlan,
    Request,
    load_plan,
    replicate,
)
from solulab.study import db

SETTINGS = ["--n-ctx", "32", "--batch-size", "8", "--collect-tokens", "2048",
            "--neurons-per-model", "12", "--annotators", "ann"]


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "solulab.cli", "replicate", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _complete_runs(out):
    plan = json.loads((out / PLAN_FILE).read_text())
    for size in plan["sizes"]:
        for act in plan["acts"]:
            record = json.loads((out / "sweep" / size / act / "run.json").read_text())
            assert record["complete"]
    return plan


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
    # The plan: sizes from the ladder, the largest with the two below it, all on equal tokens.
    top = LADDER.index(plan["sizes"][-1])
    assert plan["sizes"] == list(LADDER[max(0, top - 2):top + 1])
    assert plan["undertrained"] or (
        plan["tokens"] >= TOKENS_PER_PARAM * plan["non_embedding_params"][plan["sizes"][-1]])
    results = (out / "results.md").read_text()
    assert "size-equivalent multiplier" in results and "Not rated yet" in results
    numbers = json.loads((out / "results.json").read_text())
    assert set(numbers["automated"]) == {"gelu", "solu_ln", "gelu_ln"}
    assert (out / "annotator-links.txt").stat().st_mode & 0o077 == 0
    conn = db.connect(out / "study.sqlite")
    try:
        assert sorted(m["name"] for m in db.models(conn)) == ["gelu", "gelu_ln", "solu_ln"]
    finally:
        conn.close()
    # A third run changes no trained weight and no study.
    kept = [out / "study.sqlite", *sorted((out / "sweep").glob("*/*/model.safetensors"))]
    before = [p.stat().st_mtime_ns for p in kept]
    third = _cli(*args)
    assert third.communicate(timeout=200)[0] and third.returncode == 0
    assert [p.stat().st_mtime_ns for p in kept] == before


def test_a_replication_continues_only_with_its_own_settings(small_corpus, tmp_path):
    request = Request(small_corpus, 1.0)
    plan = ReplicationPlan(
        corpus=str(small_corpus.resolve()), budget_minutes=1.0, sizes=["1x32"],
        acts=list(request.acts), tokens=1000, seconds_per_token={"1x32": 1e-5},
        non_embedding_params={"1x32": 12_000}, device="cpu", threads=1, n_ctx=256,
        batch_size=16, lr=1e-3, seed=0, neurons_per_model=60, collect_tokens=262_144,
        annotators=["rater1", "rater2"], undertrained=True)
    (tmp_path / PLAN_FILE).write_text(json.dumps(plan.__dict__))
    assert load_plan(tmp_path, request) == plan
    with pytest.raises(SolulabError, match="budget_minutes: 1.0 -> 2.0"):
        load_plan(tmp_path, Request(small_corpus, 2.0))
    with pytest.raises(SolulabError, match="gelu baseline"):
        Request(small_corpus, 1.0, acts=("solu_ln", "gelu_ln"))
    with pytest.raises(SolulabError, match="budget"):
        replicate(Request(small_corpus, 0.0), tmp_path / "x")
