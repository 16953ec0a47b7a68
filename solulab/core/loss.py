"""Next-token cross-entropy fused with the unembedding (what training calls; ``lm_loss`` in
``solulab.core.model`` is the same loss from logits).

``linear_cross_entropy`` computes ``cross_entropy(x @ W.T + b, targets)`` a block of rows at a
time, with its gradients, so the ``[tokens, d_vocab]`` logits, their log-softmax and its
gradient are never held whole: on a CPU each block stays in cache, on any device the loss costs
a block's memory instead of the logits' (three copies of them, at a large vocabulary the largest
tensors of a training step). The gradients are formed in the forward pass (the loss is a scalar:
backward only scales them), so the logits are not recomputed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # the target of a position with nothing to predict
# Logits per block: within a CPU's cache; on a GPU few blocks (each adds a pass over the
# weight's gradient), still a fraction of the logits of a large batch and vocabulary.
BLOCK_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 28}


def next_token_targets(tokens: torch.Tensor) -> torch.Tensor:
    """``[batch * pos]`` targets: position ``t`` predicts token ``t + 1``; the last position
    has none (``IGNORE``), so the logits need no slicing (which would copy them)."""
    return F.pad(tokens[:, 1:].long(), (0, 1), value=IGNORE).flatten()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, targets, block_rows, grad_enabled):
        compute = torch.promote_types(x.dtype, torch.float32)
        valid = targets != IGNORE
        count = valid.sum().clamp(min=1).to(compute)
        want_x, want_weight, want_bias = (w and grad_enabled for w in ctx.needs_input_grad[:3])
        grad_x = torch.empty_like(x) if want_x else None
        grad_weight = torch.zeros_like(weight, dtype=compute) if want_weight else None
        grad_bias = torch.zeros_like(bias, dtype=compute) if want_bias else None
        total = torch.zeros((), dtype=compute, device=x.device)
        autocast = torch.is_autocast_enabled(x.device.type)
        # In one precision without autocast, every block's logits go into one buffer: the
        # step allocates nothing of the logits' size per block.
        in_place = not autocast and x.dtype == weight.dtype == compute
        buffer = (torch.empty(min(block_rows, x.shape[0]), weight.shape[0], dtype=compute,
                              device=x.device) if in_place else None)
        for start in range(0, x.shape[0], block_rows):
            rows = slice(start, start + block_rows)
            x_rows, keep = x[rows], valid[rows]
            target = torch.where(keep, targets[rows], 0)  # ignored rows: any class, dropped below
            if in_place:
                logits = torch.mm(x_rows, weight.t(), out=buffer[:len(target)])
                if bias is not None:
                    logits.add_(bias)
            else:
                logits = F.linear(x_rows, weight, bias).to(compute)
            picked = logits.gather(1, target[:, None]).squeeze(1)
            row_max = logits.amax(dim=-1)
            probs = logits.sub_(row_max[:, None]).exp_()  # unnormalised, in place of the logits
            sums = probs.sum(dim=-1)
            total += torch.where(keep, row_max + sums.log() - picked, 0).sum()
            if not (want_x or want_weight or want_bias):
                continue
            grad = probs.div_(sums[:, None])  # the softmax, then the loss's gradient
            grad[torch.arange(len(target), device=x.device), target] -= 1
            grad.masked_fill_(~keep[:, None], 0).div_(count)
            if want_x and in_place:
                torch.mm(grad, weight, out=grad_x[rows])
            elif want_x:
                grad_x[rows] = (grad.to(weight.dtype) @ weight).to(x.dtype)
            if want_weight and autocast:  # the matrix product in the autocast precision
                grad_weight += grad.t() @ x_rows
            elif want_weight:
                grad_weight.addmm_(grad.t(), x_rows.to(compute))
            if want_bias:
                grad_bias += grad.sum(0)
        ctx.save_for_backward(grad_x, grad_weight, grad_bias)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():  # create_graph: the gradients here are constants
            raise RuntimeError("the fused loss has no second derivative: for double backward "
                               "use lm_loss(model(tokens), tokens)")
        grads = [None if g is None else (g * grad_loss).to(dtype)
                 for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
        return (*grads, None, None, None)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, block_rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``x [tokens, d] @ weight.T [d, vocab] + bias`` against
    ``targets [tokens]`` (``IGNORE`` counts for nothing; 0 if every target is ignored), in
    blocks of ``block_rows`` rows (default: sized to the device; one block when compiled, which
    would unroll the loop); float32 or wider arithmetic for the softmax. Gradients are formed
    only where autograd will ask for them, and only once (no double backward)."""
    if torch.compiler.is_compiling():
        block_rows = x.shape[0]
    elif block_rows is None:
        elements = BLOCK_ELEMENTS.get(x.device.type, BLOCK_ELEMENTS["cuda"])
        block_rows = max(1, elements // weight.shape[0])
    return _LinearCrossEntropy.apply(x, weight, bias, targets, block_rows,
                                     torch.is_grad_enabled())
