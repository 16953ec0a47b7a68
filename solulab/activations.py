"""Every MLP activation of the paper, by name, written to be read.

An activation maps the MLP's pre-activations ``[..., d_mlp]`` to its neurons. It has up to two
parts, and the model hooks the value between them:

* a *nonlinearity* (GELU, ReLU, SoLU ``x * softmax(x)``, or ``x * exp(x)``), whose output is
  ``hook_mid``: for the SoLU models, the neurons the paper interprets;
* an optional *extra LayerNorm* over ``d_mlp`` (learnable gain and bias), whose output is
  ``hook_post``, what ``W_out`` reads.

Blocked forms (``blocks=B``) apply the softmax and the LayerNorm statistics to each of ``B`` equal
slices of ``d_mlp`` separately, as tensor-parallel models do (paper, section 4.4). Softmax and
LayerNorm statistics are computed in float32 whatever the input dtype.

``exp_ln`` and ``solu_ln`` compute the same function in exact arithmetic: LayerNorm is invariant
to scaling its input, and ``x * softmax(x)`` is ``x * exp(x)`` scaled by ``1 / sum(exp(x))``
(section 4.3). LayerNorm's epsilon breaks the invariance: ``LN(y) = (y - mean) / sqrt(var + eps)``
is scale-invariant only while ``var >> eps``. Where SoLU suppresses a whole row (a distributed
input), its output is tiny, ``eps`` dominates the variance, and the two differ; these are the
"different numerics" the paper mentions. ``exp_ln`` subtracts the row (block) maximum inside the
exponent so that large inputs cannot overflow; that is again only a rescaling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from solulab.parallel import local

# name -> (nonlinearity, has extra LayerNorm)
_SPECS = {
    "gelu": ("gelu", False),
    "relu": ("relu", False),
    "solu": ("solu", False),
    "solu_ln": ("solu", True),
    "gelu_ln": ("gelu", True),
    "exp_ln": ("exp", True),
}
ACTIVATIONS: tuple[str, ...] = tuple(_SPECS)
DEFAULT_LN_EPS = 1e-5


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """At least float32: half types are promoted, float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _split_blocks(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """``[..., d]`` -> ``[..., blocks, d // blocks]`` (a view)."""
    d = x.shape[-1]
    if blocks < 1 or d % blocks:
        raise ValueError(f"cannot split a last dimension of {d} into {blocks} equal blocks")
    return x.unflatten(-1, (blocks, d // blocks))


def solu(x: torch.Tensor, blocks: int = 1) -> torch.Tensor:
    """``x * softmax(x)``, the softmax over each of ``blocks`` slices of the last dim."""
    xb = at_least_float32(_split_blocks(x, blocks))
    return (xb * torch.softmax(xb, dim=-1)).to(x.dtype).flatten(-2)


def x_exp(x: torch.Tensor, blocks: int = 1) -> torch.Tensor:
    """``x * exp(x - max)``, the max taken per block: ``x * exp(x)`` up to a per-block scale."""
    xb = at_least_float32(_split_blocks(x, blocks))
    shifted = xb - xb.amax(dim=-1, keepdim=True)
    return (xb * torch.exp(shifted)).to(x.dtype).flatten(-2)


def gelu(x: torch.Tensor, blocks: int = 1) -> torch.Tensor:
    """GELU (exact, erf form); ``blocks`` is accepted for a uniform signature."""
    return F.gelu(x)


def relu(x: torch.Tensor, blocks: int = 1) -> torch.Tensor:
    """ReLU; ``blocks`` is accepted for a uniform signature."""
    return F.relu(x)


NONLINEARITIES = {"gelu": gelu, "relu": relu, "solu": solu, "exp": x_exp}


def blocked_layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    blocks: int = 1,
    eps: float = DEFAULT_LN_EPS,
) -> torch.Tensor:
    """LayerNorm whose mean and variance are taken over each of ``blocks`` slices of the last
    dim; the gain and bias (``[d]``) are applied over the whole dim. Statistics in float32."""
    xb = at_least_float32(_split_blocks(x, blocks))
    mean = xb.mean(dim=-1, keepdim=True)
    var = (xb - mean).pow(2).mean(dim=-1, keepdim=True)
    y = ((xb - mean) * torch.rsqrt(var + eps)).flatten(-2)
    if weight is not None:
        y = y * at_least_float32(weight)
    if bias is not None:
        y = y + at_least_float32(bias)
    return y.to(x.dtype)


def activation_spec(name: str) -> tuple[str, bool]:
    """``(nonlinearity name, has extra LayerNorm)`` for an activation name."""
    if name not in _SPECS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return _SPECS[name]


class ExtraLayerNorm(nn.Module):
    """The post-activation LayerNorm over ``d_mlp`` (blocked when ``blocks > 1``)."""

    def __init__(self, d_mlp: int, blocks: int = 1, eps: float = DEFAULT_LN_EPS):
        super().__init__()
        _split_blocks(torch.empty(d_mlp, device="meta"), blocks)  # validates divisibility
        self.blocks, self.eps = blocks, eps
        self.w = nn.Parameter(torch.ones(d_mlp))
        self.b = nn.Parameter(torch.zeros(d_mlp))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # under tensor parallelism the gain and bias are sharded: use this rank's slice
        return blocked_layer_norm(x, local(self.w), local(self.b), self.blocks, self.eps)


class Activation(nn.Module):
    """A named activation: ``nonlinearity`` then, for ``*_ln`` names, ``ln``.

    ``forward`` returns the whole activation; the model calls the two parts separately to hook
    the value between them.
    """

    def __init__(self, name: str, d_mlp: int, blocks: int = 1, eps: float = DEFAULT_LN_EPS):
        super().__init__()
        nonlinearity, has_ln = activation_spec(name)
        self.name, self.blocks = name, blocks
        self._nonlinearity = NONLINEARITIES[nonlinearity]
        self.ln = ExtraLayerNorm(d_mlp, blocks, eps) if has_ln else None

    @property
    def has_ln(self) -> bool:
        return self.ln is not None

    def nonlinearity(self, x: torch.Tensor) -> torch.Tensor:
        return self._nonlinearity(x, self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.nonlinearity(x)
        return self.ln(mid) if self.ln is not None else mid

    def extra_repr(self) -> str:
        return f"{self.name}, blocks={self.blocks}"
