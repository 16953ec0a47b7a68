"""The byte-level BPE tokenizer: train it, save it, load it, and identify it by hash.

Every byte string has an encoding, and ``decode(encode(s)) == s`` for every string. The end-of-text
token ``<|endoftext|>`` has id 0 and only ever comes from the corpus builder, which appends it after
each document: text that happens to contain the string ``<|endoftext|>`` is encoded as ordinary
text. That setting (``encode_special_tokens``) is not stored in ``tokenizer.json``, so load the
file with ``load_tokenizer`` (other loaders would turn the literal string into id 0).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from solulab.io import sha256_file

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 0
MIN_VOCAB_SIZE = 257  # the 256 byte symbols and the end-of-text token


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.encode_special_tokens = True
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int, n_texts: int | None = None,
                    progress: bool = False) -> Tokenizer:
    """Learn merges from ``texts`` (streamed) up to ``vocab_size`` tokens, ``<|endoftext|>`` first.

    The result can be smaller than ``vocab_size`` when the texts run out of pairs to merge.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE}, got {vocab_size}")
    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress and sys.stderr.isatty(),  # off a terminal it prints blank lines
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=n_texts)
    assert tokenizer.token_to_id(EOT_TOKEN) == EOT_ID
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> str:
    """Write ``tokenizer.json``; returns its sha256, the tokenizer's identity."""
    tokenizer.save(str(path))
    return sha256_file(path)


def load_tokenizer(path: Path) -> Tokenizer:
    """Load ``tokenizer.json`` with the end-of-text string encoded as plain text."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    return tokenizer
