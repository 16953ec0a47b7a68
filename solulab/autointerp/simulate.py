"""Simulation: predict a neuron's activations from its explanation alone; the correlation of the
prediction with the real activations scores the explanation.

The default simulator is the rule itself: 1 where it holds, 0 elsewhere. ``LMSimulator`` asks a
local causal language model instead. Its prompt states the explanation, then lists the held-out
tokens one per line as ``token<TAB>digit``; at each tab the model's next-token distribution over
the digits 0-9 gives the predicted activation as an expected value. Every token of a window is
scored in one forward pass (the digits in the prompt are placeholders the prediction at a tab
cannot see: attention is causal). The model is a solulab run directory or a Hugging Face model
directory on disk, loaded with ``local_files_only``: nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from solulab.autointerp.explain import HeldOut
from solulab.autointerp.rules import Rule
from solulab.errors import SolulabError

DIGITS = "0123456789"


class Simulator(Protocol):
    name: str

    def simulate(self, rule: Rule, held_out: HeldOut) -> np.ndarray:
        """Predicted activations of the first ``len(result)`` held-out tokens."""


class RuleSimulator:
    """The rule as its own simulation."""

    name = "rule"

    def simulate(self, rule: Rule, held_out: HeldOut) -> np.ndarray:
        return held_out.predict(rule).astype(float)


class LocalLM:
    """A causal LM on disk: ``encode`` text to ids, ``logits`` of right-padded id lists."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        config = self.path / "config.json"
        if not config.is_file():
            raise SolulabError(f"{self.path} is not a model directory (no config.json)")
        if "model_type" in json.loads(config.read_text()):
            self._load_hugging_face()
        else:
            self._load_solulab()

    def _load_solulab(self) -> None:
        from solulab.core.model import Transformer
        from solulab.data.tokenizer import load_tokenizer

        tokenizer_file = self.path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise SolulabError(f"{self.path} has no tokenizer.json to write prompts with")
        tokenizer = load_tokenizer(tokenizer_file)
        self.model = Transformer.from_pretrained(self.path).eval()
        self.n_ctx = self.model.cfg.n_ctx
        self.encode = lambda text: tokenizer.encode(text).ids
        self._forward = self.model

    def _load_hugging_face(self) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise SolulabError("a Hugging Face simulator needs transformers: "
                               "pip install transformers") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(self.path,
                                                              local_files_only=True).eval()
        except (OSError, ValueError) as e:
            raise SolulabError(f"cannot load {self.path} as a Hugging Face causal LM: {e}") \
                from None
        config = self.model.config
        self.n_ctx = next((getattr(config, k) for k in ("max_position_embeddings", "n_positions")
                           if getattr(config, k, None)), 1024)
        self.encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
        self._forward = lambda ids: self.model(input_ids=ids).logits

    @torch.no_grad()
    def logits(self, sequences: list[list[int]]) -> torch.Tensor:
        """``[batch, longest, vocab]`` float32 logits of right-padded sequences."""
        longest = max(len(s) for s in sequences)
        ids = torch.zeros(len(sequences), longest, dtype=torch.long)
        for row, s in enumerate(sequences):
            ids[row, :len(s)] = torch.tensor(s)
        return self._forward(ids).float()


def escape(token: str) -> str:
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


class LMSimulator:
    """Activations predicted by a local LM from the explanation, over ``tokens`` held-out tokens.
    """

    def __init__(self, lm: LocalLM, tokens: int = 256, batch_size: int = 16):
        if tokens < 2:
            raise SolulabError(f"simulate at least 2 tokens, got {tokens}")
        self.lm, self.tokens, self.batch_size = lm, tokens, batch_size
        self.name = str(lm.path)
        self.digit_ids = []
        for digit in DIGITS:
            ids = lm.encode(digit)
            if len(ids) != 1:
                raise SolulabError(f"{lm.path}'s tokenizer does not encode {digit!r} as one "
                                   "token: it cannot answer in digits")
            self.digit_ids.append(ids[0])
        self.newline = lm.encode("\n")

    def prompts(self, description: str, tokens: list[str]) -> list[tuple[list[int], list[int]]]:
        """``(ids, read positions)`` windows, each within the LM's context, covering ``tokens``
        in order; the prediction for a token is read at the tab after it."""
        header = self.lm.encode(f"Neuron firing on {description}.\nEach token, a tab, and the "
                                f"neuron's activation from 0 (none) to 9:\n")
        windows: list[tuple[list[int], list[int]]] = []
        ids, reads = list(header), []
        for token in tokens:
            line = self.lm.encode(escape(token) + "\t")
            if len(header) + len(line) + 1 + len(self.newline) > self.lm.n_ctx:
                raise SolulabError(f"{self.lm.path}'s context of {self.lm.n_ctx} tokens is too "
                                   "short for the simulation prompt")
            if len(ids) + len(line) + 1 + len(self.newline) > self.lm.n_ctx:
                windows.append((ids, reads))
                ids, reads = list(header), []
            ids += line
            reads.append(len(ids) - 1)
            ids += [self.digit_ids[0], *self.newline]
        windows.append((ids, reads))
        return windows

    def expected_digits(self, logits: torch.Tensor) -> np.ndarray:
        """``[..., vocab]`` logits -> the expected digit under the distribution over digits."""
        probs = torch.softmax(logits[..., self.digit_ids], dim=-1)
        return (probs @ torch.arange(10, dtype=probs.dtype)).numpy()

    def simulate(self, rule: Rule, held_out: HeldOut) -> np.ndarray:
        windows = self.prompts(rule.description, held_out.tokens[:self.tokens])
        predictions = []
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            logits = self.lm.logits([ids for ids, _ in batch])
            for row, (_, reads) in enumerate(batch):
                predictions.append(self.expected_digits(logits[row, reads]))
        return np.concatenate(predictions)


def make_simulator(spec: str | None, tokens: int = 256) -> Simulator:
    """``None`` or ``"rule"``: the rule; otherwise a directory holding a local causal LM."""
    if spec in (None, "rule"):
        return RuleSimulator()
    return LMSimulator(LocalLM(spec), tokens)
