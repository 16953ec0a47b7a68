"""Probing a run with your own text: which neurons fire most at each token, and one neuron's
activation at every token (``POST /api/probe``; the explorer's probe box and a neuron page's
"your text").

The model is loaded once per run and kept; one forward pass at a time per run (a lock), at most
``MAX_WAITING`` requests waiting for it and ``RATE`` probes a second (bursts of ``BURST``); beyond
either a probe is refused (the server's 429).
Text is limited to ``MAX_CHARS`` characters and ``MAX_TOKENS`` tokens, and runs in windows of
the model's context, each window on its own as the model was trained.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from solulab.core.model import Transformer
from solulab.data.tokenizer import load_tokenizer
from solulab.errors import SolulabError
from solulab.runs import rundir

MAX_CHARS = 4_000
MAX_TOKENS = 512
MAX_TOP = 20
MAX_WAITING = 8
RATE = 10.0  # probes per second per run, on average
BURST = 20  # and at most this many at once after a quiet spell


class ProbeError(SolulabError):
    """A probe that cannot be answered as asked (the server's 422)."""


class ProbeBusy(SolulabError):
    """Too many probes waiting for this run's model (the server's 429)."""


class Prober:
    """A run's model and tokenizer, loaded once, answering probes one at a time."""

    def __init__(self, run_dir: Path):
        self.model = Transformer.from_pretrained(run_dir).eval()
        self.tokenizer = load_tokenizer(Path(run_dir) / rundir.TOKENIZER)
        self.points = ("mid", "post") if self.model.blocks[0].mlp.hook_mid is not None \
            else ("post",)
        self.lock = threading.Lock()
        self.waiting = 0
        self.waiting_lock = threading.Lock()
        self.allowance, self.checked = float(BURST), time.monotonic()

    def _tokens(self, text: str) -> tuple[list[int], list[str]]:
        if not text or len(text) > MAX_CHARS:
            raise ProbeError(f"give 1 to {MAX_CHARS:,} characters of text")
        if "\x00" in text:
            raise ProbeError("text may not contain NUL")
        ids = self.tokenizer.encode(text).ids
        if not ids or len(ids) > MAX_TOKENS:
            raise ProbeError(f"the text makes {len(ids)} tokens: give 1 to {MAX_TOKENS}")
        return ids, [self.tokenizer.decode([i], skip_special_tokens=False) for i in ids]

    def _point(self, point: str | None) -> str:
        point = point or self.points[0]
        if point not in self.points:
            raise ProbeError(f"point must be one of {', '.join(self.points)}")
        return point

    @torch.no_grad()
    def activations(self, ids: list[int], point: str, layers: list[int]) -> torch.Tensor:
        """``[len(layers), tokens, d_mlp]`` activations at ``point``, window by window."""
        hooks = [f"blocks.{layer}.mlp.hook_{point}" for layer in layers]
        n_ctx, parts = self.model.cfg.n_ctx, []
        with self._turn():
            for start in range(0, len(ids), n_ctx):
                tokens = torch.tensor([ids[start:start + n_ctx]])
                cache = self.model.activations(tokens, hooks)
                parts.append(torch.stack([cache[h][0].float() for h in hooks]))
        return torch.cat(parts, dim=1)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the model for one request; ProbeBusy when too many already wait for it."""
        with self.waiting_lock:
            now = time.monotonic()
            self.allowance = min(BURST, self.allowance + (now - self.checked) * RATE)
            self.checked = now
            if self.waiting >= MAX_WAITING or self.allowance < 1:
                raise ProbeBusy("too many probes of this run at once: try again shortly")
            self.allowance -= 1
            self.waiting += 1
        try:
            with self.lock:
                yield
        finally:
            with self.waiting_lock:
                self.waiting -= 1

    def top_neurons(self, text: str, point: str | None = None, top: int = 5) -> dict:
        """Per token, the ``top`` neurons of any layer that fire most there."""
        if not 1 <= top <= MAX_TOP:
            raise ProbeError(f"top must be 1..{MAX_TOP}")
        point = self._point(point)
        ids, texts = self._tokens(text)
        layers = list(range(self.model.cfg.n_layers))
        acts = self.activations(ids, point, layers)  # [layers, tokens, d_mlp]
        d_mlp = acts.shape[-1]
        flat = acts.permute(1, 0, 2).reshape(len(ids), -1)
        values, index = torch.topk(flat, min(top, flat.shape[1]), dim=1)
        return {"point": point, "tokens": texts, "top": [
            [{"layer": int(i) // d_mlp, "neuron": int(i) % d_mlp, "act": round(float(v), 5)}
             for v, i in zip(row_values, row_index)]
            for row_values, row_index in zip(values.tolist(), index.tolist())]}

    def neuron(self, text: str, layer: int, neuron: int, point: str | None = None) -> dict:
        """One neuron's activation at every token of ``text``."""
        point = self._point(point)
        if not 0 <= layer < self.model.cfg.n_layers or not 0 <= neuron < self.model.cfg.d_mlp:
            raise ProbeError("no such layer or neuron in this model")
        ids, texts = self._tokens(text)
        acts = self.activations(ids, point, [layer])[0, :, neuron]
        return {"point": point, "tokens": texts, "acts": [round(float(a), 5) for a in acts]}
