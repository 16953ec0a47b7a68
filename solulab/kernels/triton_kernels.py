"""The CUDA path: Triton kernels for ``solu``, ``solu_ln``, ``gelu_ln`` and ``exp_ln`` (blocked
forms included), forward and memory-saving backward, for float32 and bfloat16 inputs.

Each program of the forward owns one block of one row: it reads the block once, computes the
nonlinearity and, with an extra LayerNorm, its statistics and the normalised output, and writes
the output and the per-block statistics (softmax max and sum, LayerNorm mean and reciprocal std).
The backward keeps only the input and those statistics: each program recomputes its rows'
nonlinearity, applies the gradients written out in ``fused.py`` and accumulates the LayerNorm
gain and bias gradients over ``ROWS_PER_PROGRAM`` rows into one partial sum per program (summed
after, so no atomics). All arithmetic is float32; outputs take the input's dtype.

With ``TRITON_INTERPRET=1`` set before this module is imported, the same kernels run on the CPU
through Triton's interpreter, which is how the tests check them against the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from solulab.kernels.fused import Kind

NONLINEARITY_IDS = {"solu": 0, "exp": 1, "gelu": 2}
ROWS_PER_PROGRAM = 16
INV_SQRT2 = tl.constexpr(0.7071067811865476)  # compiled kernels read only constexpr globals
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _nonlinearity(x, mask, NONLINEARITY: tl.constexpr):
    """``(y, e, m, s)``: the output and, for the softmax and exp kinds, ``exp(x - m)``, the
    block's max and the sum of ``e`` (GELU: ``e = x``, ``m = 0``, ``s = 1``, unused)."""
    if NONLINEARITY == 2:
        y = 0.5 * x * (1.0 + tl.math.erf(x * INV_SQRT2))
        e = x
        m = tl.sum(x * 0.0, axis=0)
        s = m + 1.0
    else:
        m = tl.max(tl.where(mask, x, -float("inf")), axis=0)
        e = tl.where(mask, tl.exp(x - m), 0.0)
        if NONLINEARITY == 0:
            s = tl.sum(e, axis=0)
            y = x * e / s
        else:
            s = m * 0.0 + 1.0
            y = x * e
    return y, e, m, s


@triton.jit
def _forward_kernel(x_ptr, w_ptr, b_ptr, out_ptr, stats_ptr, width, d, eps,
                    NONLINEARITY: tl.constexpr, HAS_LN: tl.constexpr, BLOCK: tl.constexpr):
    row, block = tl.program_id(0).to(tl.int64), tl.program_id(1)  # 64-bit offsets
    n_blocks = tl.num_programs(1)
    cols = tl.arange(0, BLOCK)
    mask = cols < width
    offset = row * d + block * width
    x = tl.load(x_ptr + offset + cols, mask=mask, other=0.0).to(tl.float32)
    y, e, m, s = _nonlinearity(x, mask, NONLINEARITY)
    stat = stats_ptr + (row * n_blocks + block) * 4
    tl.store(stat, m)
    tl.store(stat + 1, s)
    if HAS_LN:
        y = tl.where(mask, y, 0.0)
        mean = tl.sum(y, axis=0) / width
        centred = tl.where(mask, y - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / width + eps)
        w = tl.load(w_ptr + block * width + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + block * width + cols, mask=mask, other=0.0).to(tl.float32)
        y = centred * rstd * w + b
        tl.store(stat + 2, mean)
        tl.store(stat + 3, rstd)
    tl.store(out_ptr + offset + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(x_ptr, g_ptr, w_ptr, stats_ptr, dx_ptr, dw_ptr, db_ptr, rows, width, d,
                     NONLINEARITY: tl.constexpr, HAS_LN: tl.constexpr, BLOCK: tl.constexpr,
                     ROWS: tl.constexpr):
    group, block = tl.program_id(0).to(tl.int64), tl.program_id(1)
    n_blocks = tl.num_programs(1)
    cols = tl.arange(0, BLOCK)
    mask = cols < width
    if HAS_LN:
        w = tl.load(w_ptr + block * width + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    db = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(ROWS):
        row = group * ROWS + i
        if row < rows:
            offset = row * d + block * width
            x = tl.load(x_ptr + offset + cols, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + offset + cols, mask=mask, other=0.0).to(tl.float32)
            stat = stats_ptr + (row * n_blocks + block) * 4
            y, e, m, s = _nonlinearity(x, mask, NONLINEARITY)
            if HAS_LN:
                mean = tl.load(stat + 2)
                rstd = tl.load(stat + 3)
                yhat = tl.where(mask, (y - mean) * rstd, 0.0)
                dw += g * yhat
                db += g
                gh = g * w
                g = rstd * (gh - tl.sum(gh, axis=0) / width
                            - yhat * (tl.sum(gh * yhat, axis=0) / width))
                g = tl.where(mask, g, 0.0)
            if NONLINEARITY == 2:
                cdf = 0.5 * (1.0 + tl.math.erf(x * INV_SQRT2))
                dx = g * (cdf + x * tl.exp(-0.5 * x * x) * INV_SQRT_2PI)
            elif NONLINEARITY == 1:
                ties = tl.where(mask & (x == m), 1.0, 0.0)
                through_max = -tl.sum(g * x * e, axis=0) / tl.sum(ties, axis=0)
                dx = g * e * (1.0 + x) + ties * through_max
            else:
                sm = e / s
                gs = g * sm
                dx = gs * (1.0 + x) - sm * tl.sum(gs * x, axis=0)
            tl.store(dx_ptr + offset + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if HAS_LN:
        tl.store(dw_ptr + group * d + block * width + cols, dw, mask=mask)
        tl.store(db_ptr + group * d + block * width + cols, db, mask=mask)


class TritonActivation(torch.autograd.Function):
    """``x [rows, d]`` -> activation, in Triton kernels; saves ``x`` and per-block statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, kind: Kind, blocks: int, eps: float):
        nonlinearity, has_ln = kind
        x = x.contiguous()
        rows, d = x.shape
        width = d // blocks
        out = torch.empty_like(x)
        stats = torch.empty(rows, blocks, 4, device=x.device, dtype=torch.float32)
        w = weight.contiguous() if has_ln else x  # unused pointers when there is no LayerNorm
        b = bias.contiguous() if has_ln else x
        _forward_kernel[(rows, blocks)](
            x, w, b, out, stats, width, d, eps, NONLINEARITY=NONLINEARITY_IDS[nonlinearity],
            HAS_LN=has_ln, BLOCK=triton.next_power_of_2(width))
        ctx.save_for_backward(x, weight if has_ln else None, stats)
        ctx.config = (kind, blocks)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, stats = ctx.saved_tensors
        kind, blocks = ctx.config
        nonlinearity, has_ln = kind
        rows, d = x.shape
        width = d // blocks
        groups = triton.cdiv(rows, ROWS_PER_PROGRAM)
        grad_x = torch.empty_like(x)
        partial_w = torch.empty(groups if has_ln else 1, d, device=x.device, dtype=torch.float32)
        partial_b = torch.empty_like(partial_w)
        _backward_kernel[(groups, blocks)](
            x, grad_out.contiguous(), weight if has_ln else x, stats, grad_x, partial_w,
            partial_b, rows, width, d, NONLINEARITY=NONLINEARITY_IDS[nonlinearity],
            HAS_LN=has_ln, BLOCK=triton.next_power_of_2(width), ROWS=ROWS_PER_PROGRAM)
        grad_weight = grad_bias = None
        if has_ln:
            grad_weight = partial_w.sum(dim=0).to(weight.dtype)
            grad_bias = partial_b.sum(dim=0).to(weight.dtype)
        return grad_x, grad_weight, grad_bias, None, None, None


def triton_activation(x: torch.Tensor, kind: Kind, weight: torch.Tensor | None,
                      bias: torch.Tensor | None, blocks: int = 1, eps: float = 1e-5):
    """The activation of ``x [..., d]`` through the Triton kernels."""
    shape = x.shape
    out = TritonActivation.apply(x.reshape(-1, shape[-1]), weight, bias, kind, blocks, eps)
    return out.view(shape)
