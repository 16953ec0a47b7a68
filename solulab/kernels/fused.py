"""Fused SoLU-family activations with a memory-saving backward, in PyTorch ops.

One ``autograd.Function`` covers every kind in ``KINDS`` (a nonlinearity, with or without the
extra LayerNorm: ``solu``, ``solu_ln``, ``gelu_ln`` and ``exp_ln``) and their blocked forms. The
forward saves only the input and per-row(-block) statistics (softmax max and sum, LayerNorm mean
and reciprocal std); the backward recomputes the rest with hand-derived gradients, so autograd
keeps no intermediate ``[rows, d_mlp]`` tensors. Under ``torch.compile`` Inductor fuses each
direction into a few vectorised loops.

Gradients, per block of a row (``g`` the incoming gradient):

* SoLU ``y = x * s``, ``s = softmax(x)``: ``dx = g s (1 + x) - s * sum(g x s)``.
* ``y = x * exp(x - max(x))``: ``dx = g e (1 + x)``, and ``-sum(g y)`` shared by the maxima
  (as autograd splits a max's gradient between ties).
* LayerNorm ``o = w * yhat + b``, ``yhat = (y - mean) * rstd``:
  ``dy = rstd * (gh - mean(gh) - yhat * mean(gh * yhat))`` with ``gh = g * w``.
"""

from __future__ import annotations

import math

import torch

from solulab.numerics import at_least_float32

Kind = tuple[str, bool]  # (nonlinearity, has an extra LayerNorm)
KINDS: frozenset[Kind] = frozenset({("solu", False), ("solu", True), ("gelu", True),
                                    ("exp", True)})
_SQRT_2PI = math.sqrt(2 * math.pi)


def _nonlinearity(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``(y, statistics)`` for ``x`` ``[rows, blocks, width]`` in float32."""
    if kind == "gelu":
        return torch.nn.functional.gelu(x), ()
    m = x.amax(dim=-1, keepdim=True)
    e = torch.exp(x - m)
    if kind == "exp":
        return x * e, (m,)
    s = e.sum(dim=-1, keepdim=True)
    return x * (e / s), (m, s)


def _nonlinearity_backward(x, gy, kind, stats) -> torch.Tensor:
    if kind == "gelu":
        cdf = 0.5 * (1 + torch.erf(x * (1 / math.sqrt(2))))
        return gy * (cdf + x * torch.exp(-0.5 * x * x) / _SQRT_2PI)
    m = stats[0]
    e = torch.exp(x - m)
    if kind == "exp":
        ties = (x == m).to(x.dtype)
        through_max = -(gy * x * e).sum(dim=-1, keepdim=True) / ties.sum(dim=-1, keepdim=True)
        return gy * e * (1 + x) + ties * through_max
    sm = e / stats[1]
    gys = gy * sm
    return gys * (1 + x) - sm * (gys * x).sum(dim=-1, keepdim=True)


class FusedActivation(torch.autograd.Function):
    """``x [rows, d]`` -> activation; see the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, bias, kind: Kind, blocks: int, eps: float):
        nonlinearity, has_ln = kind
        rows, d = x.shape
        xb = at_least_float32(x.view(rows, blocks, d // blocks))
        y, stats = _nonlinearity(xb, nonlinearity)
        if has_ln:
            mean = y.mean(dim=-1, keepdim=True)
            centred = y - mean
            rstd = torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + eps)
            w, b = at_least_float32(weight), at_least_float32(bias)
            out = centred * rstd * w.view(blocks, -1) + b.view(blocks, -1)
            stats = (*stats, mean, rstd)
        else:
            out = y
        ctx.save_for_backward(x, weight, *stats)
        ctx.config = (kind, blocks)
        return out.reshape(rows, d).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, *stats = ctx.saved_tensors
        kind, blocks = ctx.config
        nonlinearity, has_ln = kind
        rows, d = x.shape
        xb = at_least_float32(x.view(rows, blocks, d // blocks))
        g = at_least_float32(grad_out.reshape(rows, blocks, d // blocks))
        grad_weight = grad_bias = None
        if has_ln:
            *stats, mean, rstd = stats
            y, _ = _nonlinearity(xb, nonlinearity)
            yhat = (y - mean) * rstd
            grad_weight = (g * yhat).sum(dim=0).reshape(d).to(weight.dtype)
            grad_bias = g.sum(dim=0).reshape(d).to(weight.dtype)
            gh = g * at_least_float32(weight).view(blocks, -1)
            g = rstd * (gh - gh.mean(dim=-1, keepdim=True)
                        - yhat * (gh * yhat).mean(dim=-1, keepdim=True))
        grad_x = _nonlinearity_backward(xb, g, nonlinearity, stats)
        return grad_x.reshape(rows, d).to(x.dtype), grad_weight, grad_bias, None, None, None


def fused_activation(x: torch.Tensor, kind: Kind, weight: torch.Tensor | None,
                     bias: torch.Tensor | None, blocks: int = 1, eps: float = 1e-5):
    """The fused activation of ``x [..., d]`` (eager PyTorch ops)."""
    shape = x.shape
    out = FusedActivation.apply(x.reshape(-1, shape[-1]), weight, bias, kind, blocks, eps)
    return out.view(shape)
