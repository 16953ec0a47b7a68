"""``ModelConfig``: the shape of a decoder LM, validated on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from solulab.core.activation_specs import ACTIVATIONS
from solulab.errors import SolulabError

CONFIG = "config.json"  # a model directory's two files
WEIGHTS = "model.safetensors"
POSITIONAL = ("rotary", "learned")


class ConfigError(SolulabError):
    """A configuration that cannot describe a model; the message says what to change."""


@dataclass
class ModelConfig:
    """Hyper-parameters of a GPT-style pre-LayerNorm decoder.

    ``d_head`` defaults to ``d_model // n_heads``, ``d_mlp`` to ``4 * d_model`` and
    ``rotary_dim`` to ``d_head``. ``init_std`` is the standard deviation of every weight matrix at
    initialisation; the two projections that write into the residual stream (attention output,
    ``W_out``) are scaled down by ``sqrt(2 * n_layers)``. ``init_seed`` fixes the initial
    weights: each parameter is drawn from its own generator seeded by the seed and the
    parameter's name, so models that differ only in ``act_fn`` start from identical weights for
    every parameter they share.
    """

    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int | None = None
    d_mlp: int | None = None
    n_ctx: int = 256
    d_vocab: int = 4096
    act_fn: str = "solu_ln"
    act_blocks: int = 1
    positional: str = "rotary"
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    tie_embeddings: bool = False
    unembed_bias: bool = True  # a bias on the logits (TransformerLens's b_U; nanoGPT has none)
    ln_eps: float = 1e-5
    init_std: float = 0.02
    init_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_ctx", "d_vocab", "act_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ConfigError(
                    f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads}): "
                    "change one of them or set d_head explicitly"
                )
            self.d_head = self.d_model // self.n_heads
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model
        for name in ("d_head", "d_mlp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.act_fn not in ACTIVATIONS:
            raise ConfigError(f"unknown act_fn {self.act_fn!r}; known: {', '.join(ACTIVATIONS)}")
        if self.d_mlp % self.act_blocks:
            raise ConfigError(
                f"d_mlp ({self.d_mlp}) is not divisible by act_blocks ({self.act_blocks}): "
                "blocked activations need equal slices"
            )
        if self.positional not in POSITIONAL:
            raise ConfigError(
                f"unknown positional {self.positional!r}; known: {', '.join(POSITIONAL)}"
            )
        if self.positional == "rotary":
            if self.rotary_dim is None:
                self.rotary_dim = self.d_head
            if not 0 < self.rotary_dim <= self.d_head or self.rotary_dim % 2:
                raise ConfigError(
                    f"rotary_dim ({self.rotary_dim}) must be even and in 1..d_head ({self.d_head})"
                )
        if not self.ln_eps >= 0:
            raise ConfigError(f"ln_eps must be >= 0, got {self.ln_eps!r}")
        if not self.init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {self.init_std!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields; ``unembed_bias`` only when off, so that the configs and run identities of
        models with the bias read as they did before the field existed."""
        data = dataclasses.asdict(self)
        if data["unembed_bias"]:
            del data["unembed_bias"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)
