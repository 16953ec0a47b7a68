"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, offline unless told otherwise.

``--log tensorboard,wandb,mlflow`` (or ``SOLULAB_LOG``) picks them. Each writes inside the run
directory: ``RUN/tensorboard/`` (``tensorboard --logdir SWEEP`` shows every run of a sweep),
``RUN/wandb/`` in W&B's offline mode (``wandb sync`` uploads it; ``WANDB_MODE=online`` logs
live) and ``RUN/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``;
``MLFLOW_TRACKING_URI`` sends every run to one store or server instead).

``RUN/trackers.json`` records which trackers a run uses and their run ids, so that a resumed run
continues the same tracker runs, and so do the stages after training: evals and the neuron
summary (``log_to_run``). Only the process that writes the run directory logs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from solulab.errors import SolulabError
from solulab.io import atomic_write_json
from solulab.runs import rundir

TRACKERS = ("tensorboard", "wandb", "mlflow")  # each is also the name of its extra
ENV = "SOLULAB_LOG"
PROJECT = "solulab"  # the W&B project and the MLflow experiment, unless their env vars say


def parse_trackers(values: list[str] | str | None) -> tuple[str, ...]:
    """Tracker names from ``--log`` (repeatable, comma-separated) or, when not given, from
    ``$SOLULAB_LOG``; ``none`` or nothing means no tracker."""
    if values is None or values == []:
        values = os.environ.get(ENV, "")
    if isinstance(values, str):
        values = [values]
    names = [v.strip().lower() for value in values for v in value.split(",") if v.strip()]
    names = [n for n in names if n != "none"]
    unknown = sorted(set(names) - set(TRACKERS))
    if unknown:
        raise SolulabError(f"unknown tracker {', '.join(unknown)} for --log (or ${ENV}): choose "
                           f"from {', '.join(TRACKERS)} or none")
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise SolulabError(f"--log {name} needs the {name} extra: "
                               f"pip install 'solulab[{name}]'")
    return tuple(dict.fromkeys(names))


def flat_params(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested record as ``{"model.d_model": 128, ...}`` of numbers, strings and booleans."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = "none" if value is None else value
        else:
            out[name] = str(value)
    return out


class Tracker(Protocol):
    def hyperparameters(self, params: dict[str, Any]) -> None: ...

    def metrics(self, step: int, values: dict[str, float]) -> None: ...

    def close(self, finished: bool) -> None: ...


class TensorBoardTracker:
    def __init__(self, run_dir: Path, ids: dict[str, Any], resume_from: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run drops what was logged after the checkpoint it starts from.
        purge = None if resume_from is None else resume_from + 1
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge)

    def hyperparameters(self, params: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(params, {}):
            self.writer.file_writer.add_summary(summary)
        table = "\n".join(f"    {key} = {value}" for key, value in sorted(params.items()))
        self.writer.add_text("config", table)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, finished: bool) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, ids: dict[str, Any], resume_from: int | None):
        import wandb

        ids.setdefault("wandb", uuid.uuid4().hex[:12])
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            dir=str(run_dir), id=ids["wandb"], resume="allow", name=run_dir.name,
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            mode=os.environ.get("WANDB_MODE", "offline"),
            settings=wandb.Settings(silent=True, console="off"))

    def hyperparameters(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


class MlflowTracker:
    def __init__(self, run_dir: Path, ids: dict[str, Any], resume_from: int | None):
        from mlflow import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        local = uri is None
        if local:
            uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        if "mlflow" in ids:
            self.run_id = ids["mlflow"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            name, artifact_location=(run_dir / "mlflow-artifacts").resolve().as_uri()
            if local else None)
        self.run_id = ids["mlflow"] = self.client.create_run(
            experiment_id, run_name=run_dir.name).info.run_id

    def hyperparameters(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in logged]
        if new:
            self.client.log_batch(self.run_id, params=new)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(key, float(value), now, step) for key, value in values.items()])

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


class Trackers:
    """The trackers of one run directory, opened together; ``names`` empty: none."""

    def __init__(self, run_dir: Path, names: tuple[str, ...], resume_from: int | None = None):
        self.run_dir = Path(run_dir)
        path = self.run_dir / rundir.TRACKERS
        saved = json.loads(path.read_text()) if path.is_file() else {}
        self.ids: dict[str, Any] = saved.get("ids", {})
        self.names = tuple(dict.fromkeys([*saved.get("trackers", []), *names]))
        self.trackers = [CLASSES[name](self.run_dir, self.ids, resume_from)
                         for name in self.names]
        if self.names:
            atomic_write_json(path, {"trackers": list(self.names), "ids": self.ids})

    @classmethod
    def disabled(cls) -> Trackers:
        """No trackers (what every process but the one writing the run directory holds)."""
        trackers = cls.__new__(cls)
        trackers.names, trackers.trackers, trackers.ids = (), [], {}
        return trackers

    def hyperparameters(self, record: dict[str, Any]) -> None:
        params = flat_params(record)
        for tracker in self.trackers:
            tracker.hyperparameters(params)

    def metrics(self, step: int, values: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        for tracker in self.trackers:
            tracker.metrics(step, numbers)

    def close(self, finished: bool = True) -> None:
        for tracker in self.trackers:
            tracker.close(finished)
        self.trackers = []


def log_to_run(run_dir: str | Path, values: dict[str, float]) -> None:
    """Add ``values`` (evals, the neuron summary) at the run's last step to the trackers the run
    was trained with; nothing when it used none."""
    run_dir = Path(run_dir)
    if not (run_dir / rundir.TRACKERS).is_file():
        return
    record = rundir.read_record(run_dir) or {}
    trackers = Trackers(run_dir, ())
    trackers.metrics(int(record.get("total_steps") or 0), values)
    trackers.close()
