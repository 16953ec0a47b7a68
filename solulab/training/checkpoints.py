"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint ``checkpoints/step_00000100.pt`` holds the weights, the optimizer state, the step
(which is also the data position: batches are a pure function of seed and step), the RNG states
and the run's identity (model config, tokenizer hash, data settings) so that a resume against
another config or tokenizer is refused. Files are written atomically; a file that cannot be read
(a write killed half-way leaves only a temporary file, but a disk can still corrupt one) is skipped
in favour of the previous checkpoint.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from solulab.errors import SolulabError
from solulab.io import atomic_write_bytes
from solulab.runs import rundir

_NAME = re.compile(r"^step_(\d{8})\.pt$")


class ResumeError(SolulabError):
    """A checkpoint that cannot continue this run; the message says which setting differs."""


@dataclass
class TrainState:
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    identity: dict[str, Any]
    rng: dict[str, Any]


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / rundir.CHECKPOINTS / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of complete-looking checkpoint files, oldest first."""
    directory = Path(run_dir) / rundir.CHECKPOINTS
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(run_dir: Path, state: TrainState, keep: int) -> Path:
    """Write ``state`` atomically, then delete all but the newest ``keep`` checkpoints."""
    buffer = io.BytesIO()
    torch.save(state.__dict__, buffer)
    path = checkpoint_path(run_dir, state.step)
    atomic_write_bytes(path, buffer.getvalue())
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run_dir: Path) -> TrainState | None:
    """The newest readable checkpoint of ``run_dir``, or None when there is none."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # a damaged file: fall back to the one before
            continue
        return TrainState(**data)
    return None


def check_identity(saved: dict[str, Any], current: dict[str, Any], source: Path) -> None:
    """Refuse to resume when the run's identity differs, naming every differing setting."""
    differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differing:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
                            for k in differing)
        raise ResumeError(f"cannot resume from {source}: {details}")
