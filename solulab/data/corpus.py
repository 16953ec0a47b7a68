"""Open a corpus directory for training (``build`` makes one from text sources).

A corpus directory holds ``tokenizer.json``, the token shards of the ``train`` and ``val`` splits
(see ``shards``) and ``manifest.json``, written last. Each document's tokens are followed by the
end-of-text id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from solulab.data.shards import ShardInfo, TokenArray
from solulab.data.sources import SourceStats
from solulab.data.tokenizer import load_tokenizer
from solulab.errors import SolulabError
from solulab.io import sha256_file
from solulab.runs import rundir

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val")


class CorpusError(SolulabError):
    """A corpus cannot be built or opened as asked; the message says why (a ``ValueError``)."""


@dataclass
class SplitManifest:
    shards: list[ShardInfo]
    tokens: int
    documents: int


@dataclass
class Manifest:
    """The contents of ``manifest.json``."""

    format_version: int
    dtype: str  # "uint16" or "uint32", little-endian
    vocab_size: int  # of the trained tokenizer (at most the requested size)
    eot_id: int
    tokenizer_sha256: str
    splits: dict[str, SplitManifest]
    sources: list[str]
    counts: SourceStats
    settings: dict[str, Any]  # the build's arguments: vocab_size, val_fraction, max_bytes
    created: str  # ISO 8601, UTC
    total_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.total_tokens = sum(s.tokens for s in self.splits.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{MANIFEST_FILE} is not JSON: {e}") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise CorpusError(f"unsupported corpus format version {version!r} in {MANIFEST_FILE} "
                              f"(this solulab reads version {FORMAT_VERSION})")
        try:
            data.pop("total_tokens", None)
            splits = {name: SplitManifest([ShardInfo(**s) for s in split.pop("shards")], **split)
                      for name, split in data.pop("splits").items()}
            return cls(splits=splits, counts=SourceStats(**data.pop("counts")), **data)
        except (AttributeError, KeyError, TypeError) as e:
            raise CorpusError(f"malformed {MANIFEST_FILE}: {e!r}") from None

    def summary(self) -> str:
        """Two lines for people: what the corpus holds and what reading the sources skipped."""
        c = self.counts
        splits = ", ".join(f"{name} {s.tokens:,} in {len(s.shards)} shard(s)"
                           for name, s in self.splits.items())
        return (f"{self.total_tokens:,} tokens ({splits}) from {c.documents:,} documents "
                f"({c.bytes:,} bytes); vocab {self.vocab_size} ({self.dtype})\n"
                f"skipped: {c.skipped_empty} empty, {c.skipped_binary} binary, "
                f"{c.skipped_unsupported} unsupported; {c.files_with_replacements} file(s) with "
                f"{c.replacement_chars} replaced undecodable byte sequence(s)")


def is_corpus(path: Path) -> bool:
    """Whether ``path`` is a directory with a readable corpus manifest."""
    manifest = Path(path) / MANIFEST_FILE
    if not manifest.is_file():
        return False
    try:
        Manifest.from_json(manifest.read_text())
    except CorpusError:
        return False
    return True


class Corpus:
    """An existing corpus directory; checks the tokenizer and every shard when opened."""

    def __init__(self, path: Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_FILE
        tokenizer_path = self.path / rundir.TOKENIZER
        if not manifest_path.is_file():
            raise CorpusError(f"{self.path} is not a corpus: no {MANIFEST_FILE} (build one with "
                              "`solulab corpus build`)")
        self.manifest = Manifest.from_json(manifest_path.read_text())
        if not tokenizer_path.is_file():
            raise CorpusError(f"corpus {self.path} has no {rundir.TOKENIZER}")
        if sha256_file(tokenizer_path) != self.manifest.tokenizer_sha256:
            raise CorpusError(f"{tokenizer_path} does not match the manifest's tokenizer_sha256")
        self.tokenizer: Tokenizer = load_tokenizer(tokenizer_path)
        self._tokens = {name: self._open_split(name) for name in self.manifest.splits}

    def _open_split(self, name: str) -> TokenArray:
        dtype = np.dtype(self.manifest.dtype).newbyteorder("<")
        paths = []
        for shard in self.manifest.splits[name].shards:
            path = self.path / shard.file
            expected = shard.tokens * dtype.itemsize
            size = path.stat().st_size if path.is_file() else None
            if size != expected:
                found = "missing" if size is None else f"{size:,} bytes"
                raise CorpusError(f"corpus shard {path} is {found}; the manifest expects "
                                  f"{expected:,} bytes: rebuild the corpus")
            paths.append(path)
        return TokenArray.from_files(paths, dtype)

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest.tokenizer_sha256

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    @property
    def eot_id(self) -> int:
        return self.manifest.eot_id

    def tokens(self, split: str) -> TokenArray:
        """All tokens of ``split`` ("train" or "val") as one read-only sequence."""
        if split not in self._tokens:
            raise CorpusError(f"unknown split {split!r}; this corpus has {', '.join(self._tokens)}")
        return self._tokens[split]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (a list or an array); end-of-text ids decode to ``<|endoftext|>``."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
