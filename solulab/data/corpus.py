"""Build a corpus directory from text sources, and open one for training.

A corpus directory holds ``tokenizer.json``, the token shards of the ``train`` and ``val`` splits
(see ``shards``) and ``manifest.json``, written last. Each document's tokens are followed by the
end-of-text id.

The build reads the sources three times, holding one document (or one encoding batch) at a time:
a scan that counts documents and settles the split, tokenizer training on the train documents,
and encoding. It happens in a temporary sibling directory that is renamed to ``out`` only when
complete, so ``out`` never holds a partial corpus.

Split rule: a document goes to ``val`` when ``blake2b(text as UTF-8, 8 bytes)`` read as a
big-endian integer over 2**64 is below ``val_fraction``, so duplicate texts share a split and the
split does not depend on file names or order. Two corrections keep both splits usable: if no
document lands in ``train``, the one with the largest hash moves there; then, if there are at least
two documents and none landed in ``val``, the one with the smallest hash moves there (ties broken
by reading order).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from solulab import rundir
from solulab.data.shards import SHARD_TOKENS, ShardInfo, ShardWriter, TokenArray, token_dtype
from solulab.data.sources import (
    SUPPORTED_SUFFIXES,
    Document,
    SourceError,
    SourceFiles,
    SourceStats,
    iter_documents,
    resolve_sources,
)
from solulab.data.tokenizer import (
    EOT_ID,
    EOT_TOKEN,
    MIN_VOCAB_SIZE,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from solulab.errors import SolulabError
from solulab.io import fsync_dir, sha256_file

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val")
ENCODE_BATCH_BYTES = 4 << 20  # UTF-8 bytes of text per encoding batch
ENCODE_BATCH_DOCS = 4096


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


# -- building ---------------------------------------------------------------------------------


def split_hash(data: bytes) -> float:
    """A document's position in [0, 1), from its UTF-8 bytes."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") / 2**64


@dataclass(frozen=True)
class SplitPlan:
    """Which split each document (by reading order) goes to; see the module docstring."""

    val_fraction: float
    train_documents: int
    forced_train: int | None = None
    forced_val: int | None = None

    def split(self, index: int, doc: Document) -> str:
        if index == self.forced_train:
            return "train"
        if index == self.forced_val or split_hash(doc.data) < self.val_fraction:
            return "val"
        return "train"


def _documents(files: SourceFiles, max_bytes: int | None,
               expected: SourceStats) -> Iterator[Document]:
    """Read the documents again, checking that they are the ones the scan counted."""
    stats = SourceStats()
    yield from iter_documents(files, stats, max_bytes)
    if stats != expected:
        raise CorpusError("the sources changed while the corpus was being built")


def _scan(files: SourceFiles, val_fraction: float, max_bytes: int | None,
          progress: bool) -> tuple[SourceStats, SplitPlan]:
    stats = SourceStats()
    n_val = 0
    smallest: tuple[float, int] | None = None  # (hash, index) of the first-smallest hash
    largest: tuple[float, int] | None = None  # (hash, -index) of the first-largest hash
    docs = iter_documents(files, stats, max_bytes)
    for i, doc in enumerate(tqdm(docs, desc="reading", unit=" docs", disable=not progress)):
        h = split_hash(doc.data)
        n_val += h < val_fraction
        smallest = min(smallest or (h, i), (h, i))
        largest = max(largest or (h, -i), (h, -i))
    n = stats.documents
    if n == 0:
        return stats, SplitPlan(val_fraction, 0)
    assert smallest is not None and largest is not None
    forced_train = -largest[1] if n_val == n else None
    forced_val = smallest[1] if n_val == 0 and n >= 2 else None
    n_val += (forced_val is not None) - (forced_train is not None)
    return stats, SplitPlan(val_fraction, n - n_val, forced_train, forced_val)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_out(out: Path) -> None:
    if is_corpus(out):
        raise CorpusError(f"{out} already holds a corpus; not overwriting it (use it as it is, "
                          "or choose another output directory)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CorpusError(f"{out} exists and is not an empty directory; choose another output "
                          "directory")


def _encode_batch(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """The documents' ids, each followed by the end-of-text id ([sum of lengths + len(texts)])."""
    encodings = tokenizer.encode_batch_fast(texts)
    out = np.empty(sum(len(e.ids) + 1 for e in encodings), dtype=np.int64)
    pos = 0
    for e in encodings:
        n = len(e.ids)
        out[pos:pos + n] = e.ids
        out[pos + n] = EOT_ID
        pos += n + 1
    return out


def _write_tokens(directory: Path, tokenizer: Tokenizer, docs: Iterator[Document],
                  plan: SplitPlan, n_docs: int, shard_tokens: int,
                  progress: bool) -> dict[str, SplitManifest]:
    vocab_size = tokenizer.get_vocab_size()
    pending: dict[str, list[str]] = {name: [] for name in SPLITS}
    documents = dict.fromkeys(SPLITS, 0)
    pending_bytes = 0
    with ExitStack() as stack:
        writers = {name: stack.enter_context(ShardWriter(directory, name, vocab_size,
                                                         shard_tokens)) for name in SPLITS}
        bar = stack.enter_context(tqdm(total=n_docs, desc="encoding", unit=" docs",
                                       disable=not progress))

        def flush() -> None:
            bar.update(sum(map(len, pending.values())))
            for name, texts in pending.items():
                if texts:
                    writers[name].write(_encode_batch(tokenizer, texts))
                    texts.clear()

        for i, doc in enumerate(docs):
            name = plan.split(i, doc)
            pending[name].append(doc.text)
            documents[name] += 1
            pending_bytes += len(doc.data)
            if (pending_bytes >= ENCODE_BATCH_BYTES
                    or sum(map(len, pending.values())) >= ENCODE_BATCH_DOCS):
                flush()
                pending_bytes = 0
        flush()
        shards = {name: writer.close() for name, writer in writers.items()}
    return {name: SplitManifest(shards[name], sum(s.tokens for s in shards[name]), documents[name])
            for name in SPLITS}


def _build_into(tmp: Path, files: SourceFiles, stats: SourceStats, plan: SplitPlan,
                vocab_size: int, max_bytes: int | None, shard_tokens: int,
                progress: bool, given_tokenizer: Path | None) -> Manifest:
    if given_tokenizer is None:
        train_docs = (doc.text for i, doc in enumerate(_documents(files, max_bytes, stats))
                      if plan.split(i, doc) == "train")
        tokenizer = train_tokenizer(train_docs, vocab_size, n_texts=plan.train_documents,
                                    progress=progress)
        sha = save_tokenizer(tokenizer, tmp / rundir.TOKENIZER)
    else:  # copied byte for byte: its hash is the identity a model's tokenizer is checked by
        tokenizer = load_given_tokenizer(given_tokenizer)
        shutil.copyfile(given_tokenizer, tmp / rundir.TOKENIZER)
        sha = sha256_file(tmp / rundir.TOKENIZER)
    splits = _write_tokens(tmp, tokenizer, _documents(files, max_bytes, stats), plan,
                           stats.documents, shard_tokens, progress)
    vocab = tokenizer.get_vocab_size()
    return Manifest(
        format_version=FORMAT_VERSION, dtype=token_dtype(vocab).name, vocab_size=vocab,
        eot_id=EOT_ID, tokenizer_sha256=sha, splits=splits, sources=list(files.labels),
        counts=stats, settings=dict(vocab_size=vocab_size, val_fraction=plan.val_fraction,
                                    max_bytes=max_bytes, keep_markup=files.keep_markup,
                                    text_field=files.text_field),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def load_given_tokenizer(path: Path) -> Tokenizer:
    """An existing ``tokenizer.json`` (a model's own), whose end-of-text token must be id 0."""
    try:
        tokenizer = load_tokenizer(Path(path))
    except Exception as e:  # tokenizers raises plain Exceptions for unreadable files
        raise CorpusError(f"{path}: not a readable tokenizer.json ({e})") from None
    if tokenizer.token_to_id(EOT_TOKEN) != EOT_ID:
        raise CorpusError(f"{path}: its end-of-text token {EOT_TOKEN!r} must have id {EOT_ID} "
                          "to separate documents")
    return tokenizer


def build_corpus(out: Path, sources: list[Path] | None = None, vocab_size: int = 4096,
                 val_fraction: float = 0.05, max_bytes: int | None = None,
                 progress: bool = True, *, shard_tokens: int = SHARD_TOKENS,
                 tokenizer: Path | None = None, keep_markup: bool = False,
                 text_field: str = "text") -> Manifest:
    """Tokenize ``sources`` (default: the built-in corpus) into the new corpus directory ``out``,
    with a new BPE tokenizer of ``vocab_size`` or the given ``tokenizer`` file (a model's own).
    ``.rst`` and ``.html`` sources lose their markup unless ``keep_markup``; records' text is in
    ``text_field``.

    Raises ``CorpusError`` for a missing or unreadable source, when no documents are found, and
    when ``out`` already holds a corpus or other files.
    """
    out = Path(out)
    if vocab_size < MIN_VOCAB_SIZE:
        raise CorpusError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes and "
                          f"end-of-text), got {vocab_size}")
    if not 0 < val_fraction < 1:
        raise CorpusError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if max_bytes is not None and max_bytes < 1:
        raise CorpusError(f"max_bytes must be positive, got {max_bytes}")
    _check_out(out)
    if tokenizer is not None:
        load_given_tokenizer(tokenizer)  # refuse a bad file before the scan
    try:
        files = resolve_sources(sources, keep_markup, text_field)
        stats, plan = _scan(files, val_fraction, max_bytes, progress)
        if stats.documents == 0:
            skipped = (f" (passed over for their suffix: {files.skipped_text()}; readable: "
                       f"{' '.join(sorted(SUPPORTED_SUFFIXES))})" if files.skipped_suffixes else "")
            raise CorpusError(f"no documents found in {', '.join(files.labels)}{skipped}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            manifest = _build_into(tmp, files, stats, plan, vocab_size, max_bytes, shard_tokens,
                                   progress, tokenizer)
            (tmp / MANIFEST_FILE).write_text(manifest.to_json())
            for name in (rundir.TOKENIZER, MANIFEST_FILE):  # the shards were synced when written
                _fsync_file(tmp / name)
            fsync_dir(tmp)
            _check_out(out)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except SourceError as e:
        raise CorpusError(str(e)) from None
    fsync_dir(out.parent)
    return manifest
