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

from solulab import kernels
from solulab.core.activation_specs import ACTIVATIONS, DEFAULT_LN_EPS, REGISTRY, ActivationSpec
from solulab.core.hooks import HookPoint
from solulab.numerics import at_least_float32, local, split_blocks

FUSED: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.kind in kernels.KINDS)


def solu(x: torch.Tensor, blocks: int = 1) -> torch.Tensor:
    """``x * softmax(x)``, the softmax over each of ``blocks`` slices of the last dim."""
    xb = at_least_float32(split_blocks(x, blocks))
    return (xb * torch.softmax(xb, dim=-1)).to(x.dtype).flatten(-2)


def x_exp(x: torch.Tensor, blocks: int = 1) -> torch.Tensor:
    """``x * exp(x - max)``, the max taken per block: ``x * exp(x)`` up to a per-block scale."""
    xb = at_least_float32(split_blocks(x, blocks))
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
    xb = at_least_float32(split_blocks(x, blocks))
    mean = xb.mean(dim=-1, keepdim=True)
    var = (xb - mean).pow(2).mean(dim=-1, keepdim=True)
    y = ((xb - mean) * torch.rsqrt(var + eps)).flatten(-2)
    if weight is not None:
        y = y * at_least_float32(weight)
    if bias is not None:
        y = y + at_least_float32(bias)
    return y.to(x.dtype)


def activation_spec(name: str) -> ActivationSpec:
    """The registry entry of an activation name."""
    if name not in REGISTRY:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return REGISTRY[name]


class ExtraLayerNorm(nn.Module):
    """The post-activation LayerNorm over ``d_mlp`` (blocked when ``blocks > 1``)."""

    def __init__(self, d_mlp: int, blocks: int = 1, eps: float = DEFAULT_LN_EPS):
        super().__init__()
        split_blocks(torch.empty(d_mlp, device="meta"), blocks)  # validates divisibility
        self.blocks, self.eps = blocks, eps
        self.w = nn.Parameter(torch.ones(d_mlp))
        self.b = nn.Parameter(torch.zeros(d_mlp))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # under tensor parallelism the gain and bias are sharded: use this rank's slice
        return blocked_layer_norm(x, local(self.w), local(self.b), self.blocks, self.eps)


class Activation(nn.Module):
    """A named activation: ``nonlinearity`` then, for ``*_ln`` names, ``ln``; ``hook_mid``
    sees the value between them (the neuron the paper interprets).

    ``forward`` runs the fastest backend for the input (``kernels``); ``reference`` is the same
    function in readable PyTorch, which the kernels are tested against.
    """

    def __init__(self, name: str, d_mlp: int, blocks: int = 1, eps: float = DEFAULT_LN_EPS):
        super().__init__()
        self.spec = activation_spec(name)
        self.name, self.blocks = name, blocks
        self._nonlinearity = NONLINEARITIES[self.spec.nonlinearity]
        self.ln = ExtraLayerNorm(d_mlp, blocks, eps) if self.spec.has_ln else None
        self.hook_mid = HookPoint() if self.spec.has_ln else None

    @property
    def has_ln(self) -> bool:
        return self.ln is not None

    def nonlinearity(self, x: torch.Tensor) -> torch.Tensor:
        return self._nonlinearity(x, self.blocks)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.nonlinearity(x)
        return self.ln(mid) if self.ln is not None else mid

    def kernel_arguments(self) -> tuple:
        """What a kernel needs of this activation: numbers and this rank's tensors."""
        if self.ln is None:
            return self.spec.kind, None, None, self.blocks, 0.0
        return self.spec.kind, local(self.ln.w), local(self.ln.b), self.blocks, self.ln.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., d_mlp]`` -> the neurons ``W_out`` reads."""
        if self.hook_mid is None or not self.hook_mid.active:
            fast = kernels.activation(x, *self.kernel_arguments())
            return self.reference(x) if fast is None else fast  # a kernel stores no middle
        assert self.ln is not None  # hook_mid exists only with the extra LayerNorm
        if self.hook_mid.records_only:  # run_with_cache: both values in one pass if possible
            both = kernels.activation_with_mid(x, *self.kernel_arguments())
            if both is None:
                middle = self.nonlinearity(x)
                both = middle, self.ln(middle)
            mid, post = both
            self.hook_mid(mid)
            return post
        return self.ln(self.hook_mid(self.nonlinearity(x)))

    def extra_repr(self) -> str:
        return f"{self.name}, blocks={self.blocks}"
