"""Log-likelihood of continuations: the one computation every offline task is scored with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from solulab.core.model import Transformer


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # sum over the continuation's tokens, in nats
    is_greedy: bool  # every continuation token is the model's argmax
    n_tokens: int


@torch.no_grad()
def score_token_continuations(
    model: Transformer, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 16
) -> list[ContinuationScore]:
    """Score ``(context ids, continuation ids)`` pairs. Contexts are left-truncated so that
    context + continuation fits ``n_ctx``; sequences are right-padded within a batch (causal
    attention makes padding after a sequence harmless)."""
    n_ctx = model.cfg.n_ctx
    device = next(model.parameters()).device
    model.eval()
    scores: list[ContinuationScore] = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        seqs, spans = [], []
        for context, continuation in batch:
            if not continuation:
                raise ValueError("a continuation must have at least one token")
            if len(continuation) >= n_ctx:
                raise ValueError(f"a continuation of {len(continuation)} tokens does not fit "
                                 f"n_ctx={n_ctx}")
            context = context[-(n_ctx - len(continuation)):] if context else []
            if not context:
                raise ValueError("a continuation needs at least one context token")
            seqs.append(context + continuation)
            spans.append((len(context), len(context) + len(continuation)))
        width = max(len(s) for s in seqs)
        tokens = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)] = torch.tensor(s)
        logprobs = torch.log_softmax(model(tokens.to(device)).float(), dim=-1)
        for i, (a, b) in enumerate(spans):
            targets = tokens[i, a:b].to(device)
            predicted = logprobs[i, a - 1:b - 1]  # position t predicts token t + 1
            chosen = predicted.gather(-1, targets[:, None]).squeeze(-1)
            scores.append(ContinuationScore(chosen.sum().item(),
                                            bool((predicted.argmax(-1) == targets).all()),
                                            b - a))
    return scores
