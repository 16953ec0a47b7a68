"""Experiment trackers read back with each tracker's own reader: a run interrupted once and
resumed logs one loss curve, equal to its metrics.jsonl, into one tracker run; evals and the
neuron summary land in the same run; a missing extra is a one-line error naming it."""

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from solulab import ModelConfig
from solulab.errors import TrainingInterrupted
from solulab.runs import tracking
from solulab.training.config import TrainConfig
from solulab.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
STEPS = 6


def train_interrupted_then_resumed(corpus: Path, out: Path, trackers: tuple[str, ...]) -> list:
    """Train STEPS steps logging to ``trackers``: stopped by SIGINT after step 3, then resumed
    (without naming the trackers again); returns metrics.jsonl's records."""
    model = ModelConfig(n_layers=1, d_model=32, n_heads=2, n_ctx=32, d_vocab=512, act_fn="solu_ln")
    cfg = TrainConfig(steps=STEPS, batch_size=4, log_every=1, eval_every=3, eval_sequences=4,
                      checkpoint_every=100, device="cpu", log=trackers)

    def stop_after_three(step, record):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        Trainer(model, cfg, corpus, out, progress=False, callbacks=[stop_after_three]).run()
    Trainer(model, TrainConfig(**{**vars(cfg), "log": ()}), corpus, out, resume=True,
            progress=False).run()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def curve(records: list, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in records if key in r]


def assert_same_curve(logged: list[tuple[int, float]], records: list, key: str) -> None:
    """The same steps, and the same values up to a tracker's float32."""
    expected = curve(records, key)
    assert [step for step, _ in logged] == [step for step, _ in expected], key
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6), key


def test_tensorboard_holds_the_runs_curves_once_across_a_resume(small_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = train_interrupted_then_resumed(small_corpus, tmp_path / "run", ("tensorboard",))
    tracking.log_to_run(tmp_path / "run", {"eval/cloze_accuracy": 0.25})
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    for key in ("loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "tflops"):
        assert_same_curve([(e.step, e.value) for e in events.Scalars(key)], records, key)
    assert [e.step for e in events.Scalars("loss")] == list(range(1, STEPS + 1))
    assert [(e.step, e.value) for e in events.Scalars("eval/cloze_accuracy")] == [(STEPS, 0.25)]
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "model.act_fn = solu_ln" in config and f"train.steps = {STEPS}" in config


def wandb_records(path: Path) -> list:
    """Every record of a W&B transaction log (``run-ID.wandb``): 32 KiB blocks of chunks, each
    a 7-byte header (CRC32, length, type: 1 full, 2 first, 3 middle, 4 last) and a protobuf
    ``Record``, after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2

    data, block, records, pending = path.read_bytes(), 32768, [], b""
    assert data[:4] == b":W&B"
    offset = 7
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if kind == 0:
            break
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_holds_the_loss_curve_in_one_run_across_a_resume(small_corpus, tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    records = train_interrupted_then_resumed(small_corpus, out, ("wandb",))
    run_id = json.loads((out / "trackers.json").read_text())["ids"]["wandb"]
    logs = sorted((out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(logs) == 2  # the first part and the resumed part, one run id: one run once synced
    loss, config = [], {}
    for log in logs:
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in record.history.item}
                if "loss" in items:
                    loss.append((items["_step"], items["loss"]))
            elif kind == "config":
                config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                               for i in record.config.update})
    assert_same_curve(loss, records, "loss")
    assert config["model.act_fn"] == "solu_ln" and config["train.steps"] == STEPS


def test_mlflow_local_store_holds_the_curves_in_one_run_and_the_neuron_summary(
        small_corpus, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    out = tmp_path / "run"
    records = train_interrupted_then_resumed(small_corpus, out, ("mlflow",))
    tracking.log_to_run(out, {"neurons/layer0_interpretable": 0.5})
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    for key in ("loss", "val_loss", "lr"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert_same_curve(logged, records, key)
    summary = client.get_metric_history(run_id, "neurons/layer0_interpretable")
    assert [(m.step, m.value) for m in summary] == [(STEPS, 0.5)]
    assert runs[0].data.params["model.d_model"] == "32"


def test_tracker_names_are_checked_and_a_missing_extra_is_named(monkeypatch):
    monkeypatch.setenv(tracking.ENV, "tensorboard, none")
    assert tracking.parse_trackers(None) == tracking.parse_trackers(["tensorboard"])
    monkeypatch.setenv(tracking.ENV, "")
    assert tracking.parse_trackers(None) == ()
    with pytest.raises(tracking.SolulabError, match="unknown tracker neptune"):
        tracking.parse_trackers(["tensorboard,neptune"])
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name == "wandb" else object())
    with pytest.raises(tracking.SolulabError, match=r"pip install 'solulab\[wandb\]'"):
        tracking.parse_trackers(["wandb"])


@pytest.mark.parametrize("command", [
    ["train", "--act", "gelu", "--size", "1x128", "--steps", "2"],
    ["sweep", "--sizes", "1x32", "--steps", "2"],
    ["replicate", "--budget-minutes", "1"],
])
def test_every_training_command_refuses_an_unknown_tracker_in_one_line(small_corpus, tmp_path,
                                                                        command):
    result = subprocess.run(
        [sys.executable, "-m", "solulab.cli", *command, "--corpus", str(small_corpus), "--out",
         str(tmp_path / "run"), "--log", "neptune"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "unknown tracker neptune" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
