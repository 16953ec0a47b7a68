"""The run directory: its file names, and reading and writing its records (the one owner).

A run directory holds the model (``config.json``, ``model.safetensors``), its ``tokenizer.json``,
``run.json`` (how it was trained, its corpus, ``complete`` once finished), ``metrics.jsonl``,
``checkpoints/``, and what later stages add: ``evals.json``, ``neurons/`` (the neuron store),
``README.md`` (the model card) and ``trackers.json``.
Every file is written atomically (``solulab.io``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from solulab.core.config import CONFIG, WEIGHTS  # noqa: F401  (the model's files)
from solulab.io import atomic_write_json

TOKENIZER = "tokenizer.json"
RECORD = "run.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EVALS = "evals.json"
NEURONS = "neurons"
EXPLANATIONS = "autointerp.json"  # in NEURONS: the automated verdict of every neuron
CARD = "README.md"  # the model card (solulab.runs.model_card)
TRACKERS = "trackers.json"  # the experiment trackers and their run ids (solulab.runs.tracking)


def read_record(run: Path) -> dict[str, Any] | None:
    """``run.json``, or None where there is none or it is torn or foreign."""
    try:
        record = json.loads((Path(run) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(run: Path, record: dict[str, Any]) -> None:
    atomic_write_json(Path(run) / RECORD, record)


def is_complete(run: Path) -> bool:
    """A run whose record says it finished (written last, after its weights)."""
    record = read_record(run)
    return bool(record and record.get("complete"))


def trained_on(run: Path) -> Path | None:
    """The corpus directory the run was trained on, as its record says."""
    record = read_record(run)
    return Path(record["corpus"]) if record and record.get("corpus") else None


def copy_tokenizer(source: Path, run: Path) -> None:
    """Give ``run`` the tokenizer of ``source`` (a corpus or another run directory)."""
    shutil.copyfile(Path(source) / TOKENIZER, Path(run) / TOKENIZER)
