"""What a replication asks for and what it decided, without torch: the user's ``Request``, the
saved ``ReplicationPlan``, the sizes tried and the plan's cost. ``solulab.pipelines.replicate``
times the machine and runs the plan."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from solulab.errors import SolulabError
from solulab.training.config import TrainConfig

WIDTHS = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
ACTS = ("gelu", "solu_ln", "gelu_ln")
# Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models": about 20 training
# tokens per parameter is compute-optimal; fewer leaves a model undertrained for its size.
TOKENS_PER_PARAM = 20
SIZES_IN_FIT = 3  # the planned size and the two below it
OVERHEAD = 1.15  # evaluation, logging and checkpoints on top of the timed steps


def ladder(layers: int) -> list[str]:
    """The sizes ``replicate`` tries, smallest first: ``layers`` layers of growing width."""
    return [f"{layers}x{width}" for width in WIDTHS]


def plan_cost(seconds_per_token: dict[str, float], sizes: list[str], seeds: int) -> float:
    """Seconds per training token of a plan: every size once, the largest ``seeds`` times."""
    return sum(seconds_per_token[s] for s in sizes) + (seeds - 1) * seconds_per_token[sizes[-1]]


@dataclass(frozen=True)
class Request:
    """The user's side of a replication: what a re-run must repeat to continue."""

    corpus: Path
    budget_minutes: float
    acts: tuple[str, ...] = ACTS
    n_ctx: int = 256
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    neurons_per_model: int = 60
    collect_tokens: int = 262_144
    annotators: tuple[str, ...] = ("rater1", "rater2")
    layers: int = 2
    seeds: int = 3
    device: str | None = None

    def __post_init__(self) -> None:
        if not self.budget_minutes > 0:
            raise SolulabError(f"--budget-minutes must be > 0, got {self.budget_minutes}")
        if "gelu" not in self.acts or len(self.acts) < 2:
            raise SolulabError("--acts must include the gelu baseline and at least one other")
        for name in ("n_ctx", "batch_size", "neurons_per_model", "collect_tokens", "layers",
                     "seeds"):
            if getattr(self, name) < 1:
                raise SolulabError(f"{name} must be >= 1, got {getattr(self, name)}")


REQUEST_SETTINGS = tuple(f.name for f in fields(Request) if f.name not in ("corpus", "device"))


def plan_settings(request: Request) -> dict[str, Any]:
    """What a plan keeps of its request (sequences as JSON lists), to compare on a re-run."""
    settings = {name: getattr(request, name) for name in REQUEST_SETTINGS}
    return {"corpus": str(Path(request.corpus).resolve()),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}


@dataclass
class ReplicationPlan:
    """What ``replicate`` decided for a ``request``; saved (``to_json``) so that a re-run
    continues the same experiment. ``request.device`` is the device it was planned on."""

    request: Request
    sizes: list[str]
    tokens: int  # per model, the same for every model
    seconds_per_token: dict[str, float]  # per measured size, summed over the activations
    non_embedding_params: dict[str, int]
    threads: int
    undertrained: bool  # even the smallest size gets fewer than TOKENS_PER_PARAM tokens/param

    @property
    def largest(self) -> str:
        return self.sizes[-1]

    @property
    def seed_values(self) -> list[int]:
        return [self.request.seed + k for k in range(self.request.seeds)]

    def train_config(self) -> TrainConfig:
        r = self.request
        steps = max(1, self.tokens // (r.batch_size * r.n_ctx))
        return TrainConfig(tokens=self.tokens, batch_size=r.batch_size, lr=r.lr, seed=r.seed,
                           eval_every=max(1, steps // 10), checkpoint_every=max(1, steps // 5),
                           checkpoint_minutes=5.0, device=r.device)

    def predicted_minutes(self) -> float:
        return OVERHEAD * plan_cost(self.seconds_per_token, self.sizes, self.request.seeds) \
            * self.tokens / 60

    def to_json(self) -> dict[str, Any]:
        """One flat record: the request's settings beside what was decided."""
        decided = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "request"}
        return {**plan_settings(self.request), "device": self.request.device, **decided}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplicationPlan:
        """A plan from ``to_json``'s record; plans made before depth and seeds were settings
        had one of each."""
        old = {"layers": 1, "seeds": 1}
        settings = {name: data.get(name, old.get(name)) for name in REQUEST_SETTINGS}
        request = Request(corpus=Path(data["corpus"]), device=data["device"],
                          **{k: tuple(v) if isinstance(v, list) else v
                             for k, v in settings.items() if v is not None})
        return cls(request, **{f.name: data[f.name] for f in fields(cls) if f.name != "request"})


def read_plan_file(path: Path) -> ReplicationPlan:
    """A plan saved by an earlier replication (``--plan``), to redo it without re-timing."""
    try:
        return ReplicationPlan.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError, SolulabError) as e:
        raise SolulabError(f"{path} is not a replication plan ({e})") from None
