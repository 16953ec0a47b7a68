"""Token shards: raw little-endian token ids in files of at most ``shard_tokens`` tokens each.

A split ``name`` is stored as ``name_000.bin``, ``name_001.bin``, ... (no file when it has no
tokens). Ids are ``uint16`` when the vocabulary fits (at most 65,536 tokens), else ``uint32``.
``TokenArray`` reads a split back as one sequence through memory maps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

SHARD_TOKENS = 2**26  # 128 MiB per shard at uint16
_WRITE_BUFFER_BYTES = 1 << 20


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest little-endian unsigned type that holds ids ``0 .. vocab_size - 1``."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:03d}.bin"


@dataclass
class ShardInfo:
    file: str  # name inside the corpus directory
    tokens: int


class ShardWriter:
    """Appends token ids to the shards of one split; ``close()`` lists what was written."""

    def __init__(self, directory: Path, split: str, vocab_size: int,
                 shard_tokens: int = SHARD_TOKENS):
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
        self.directory, self.split, self.vocab_size = Path(directory), split, vocab_size
        self.dtype = token_dtype(vocab_size)
        self.shard_tokens = shard_tokens
        self.shards: list[ShardInfo] = []
        self._file: BinaryIO | None = None
        self._count = 0  # tokens in the open shard

    def write(self, ids: np.ndarray) -> None:
        """Append ``ids`` ([n] ints in ``0 .. vocab_size - 1``), starting shards as needed."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got "
                             f"[{ids.min()}, {ids.max()}]")
        data = ids.astype(self.dtype, copy=False)
        pos = 0
        while pos < len(data):
            if self._file is None:
                path = self.directory / shard_name(self.split, len(self.shards))
                self._file = open(path, "wb", buffering=_WRITE_BUFFER_BYTES)
            piece = data[pos:pos + self.shard_tokens - self._count]
            self._file.write(piece.tobytes())
            self._count += len(piece)
            pos += len(piece)
            if self._count == self.shard_tokens:
                self._finish_shard()

    def _finish_shard(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.shards.append(ShardInfo(shard_name(self.split, len(self.shards)), self._count))
        self._file, self._count = None, 0

    def close(self) -> list[ShardInfo]:
        """Flush and fsync the last shard; returns every shard of the split."""
        if self._file is not None:
            self._finish_shard()
        return self.shards

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:  # left open by an error: close without recording it
            self._file.close()
            self._file = None


class TokenArray:
    """One split's tokens as a single read-only sequence over its shards.

    ``len(a)`` is the token count; ``a[i]`` is an int; ``a[i:j]`` is a new ``int64`` array, read
    from whichever shards the range spans. Only contiguous slices (step 1) are supported.
    """

    def __init__(self, parts: Sequence[np.ndarray]):
        self._parts = [p for p in parts if len(p)]
        lengths = np.array([len(p) for p in self._parts], dtype=np.int64)
        self._ends = np.cumsum(lengths)  # [n_parts] exclusive end of each part
        self._starts = self._ends - lengths
        self._len = int(self._ends[-1]) if len(self._parts) else 0

    @classmethod
    def from_files(cls, paths: Sequence[Path], dtype: np.dtype) -> TokenArray:
        """Memory-map the shard files ``paths`` (in order)."""
        return cls([np.memmap(p, dtype=dtype, mode="r") for p in paths])

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, key: int | slice) -> int | np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._len)
            if step != 1:
                raise ValueError("TokenArray supports contiguous slices only (step 1)")
            return self._read(start, stop)
        index = int(key)
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"token index {key} out of range for {self._len} tokens")
        part = int(np.searchsorted(self._ends, index, side="right"))
        return int(self._parts[part][index - self._starts[part]])

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``start .. stop - 1`` as int64 ([max(stop - start, 0)])."""
        if stop <= start:
            return np.empty(0, dtype=np.int64)
        pieces = []
        part = int(np.searchsorted(self._ends, start, side="right"))
        pos = start
        while pos < stop:
            offset = int(self._starts[part])
            end = min(stop, int(self._ends[part]))
            pieces.append(self._parts[part][pos - offset:end - offset])
            pos, part = end, part + 1
        return np.concatenate(pieces, dtype=np.int64)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        return self._read(0, self._len) if dtype is None else self._read(0, self._len).astype(dtype)
