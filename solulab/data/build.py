"""Build a corpus directory from text sources (``corpus`` opens one).

The build reads the sources three times, holding one document (or one chunk of documents per
encoding process) at a time: a scan that counts documents and settles the split, tokenizer
training on the train documents, and encoding. It works in the sibling directory
``.{out}.partial`` (``partial_dir``), renamed to ``out`` only when complete, so ``out`` never holds
a partial corpus. Encoding goes chunk by chunk (documents in reading order, about
``CHUNK_BYTES`` of text each), in worker processes; each finished chunk is written there
atomically, with the tokenizer and a progress record naming what the work depends on (sources,
a digest of every document's text, settings). Running a stopped build again resumes: the kept
tokenizer (training is deterministic) and finished chunks are reused; a record of other sources
or settings is cleared first. The chunks are then concatenated, split by split, into the shards,
so the corpus is the same byte for byte however often the build stopped and however many
processes encoded it.

Split rule: a document goes to ``val`` when ``blake2b(text as UTF-8, 8 bytes)`` read as a
big-endian integer over 2**64 is below ``val_fraction``, so duplicate texts share a split and the
split does not depend on file names or order. Two corrections keep both splits usable: if no
document lands in ``train``, the one with the largest hash moves there; then, if there are at least
two documents and none landed in ``val``, the one with the smallest hash moves there (ties broken
by reading order).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from solulab.corpus_defaults import VAL_FRACTION, VOCAB_SIZE
from solulab.data.corpus import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    SPLITS,
    CorpusError,
    Manifest,
    SplitManifest,
    is_corpus,
)
from solulab.data.shards import SHARD_TOKENS, ShardWriter, token_dtype
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
from solulab.io import atomic_write, fsync_dir, sha256_file
from solulab.runs import rundir

CHUNK_BYTES = 1 << 20  # UTF-8 bytes of text per chunk, the unit of encoding and of resuming
CHUNK_DOCS = 4096  # and at most this many documents
CHUNKS_DIR = "chunks"
PROGRESS_FILE = "progress.json"


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def split_hash(data: bytes) -> float:
    """A document's position in [0, 1), from its UTF-8 bytes."""
    return int.from_bytes(_digest(data), "big") / 2**64


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
          progress: bool) -> tuple[SourceStats, SplitPlan, str]:
    """The sources' counts, the split, and a digest of every document's text in order."""
    stats = SourceStats()
    content = hashlib.blake2b(digest_size=16)
    n_val = 0
    smallest: tuple[float, int] | None = None  # (hash, index) of the first-smallest hash
    largest: tuple[float, int] | None = None  # (hash, -index) of the first-largest hash
    docs = iter_documents(files, stats, max_bytes)
    for i, doc in enumerate(tqdm(docs, desc="reading", unit=" docs", disable=not progress)):
        digest = _digest(doc.data)
        content.update(digest)
        h = int.from_bytes(digest, "big") / 2**64
        n_val += h < val_fraction
        smallest = min(smallest or (h, i), (h, i))
        largest = max(largest or (h, -i), (h, -i))
    n = stats.documents
    if n == 0:
        return stats, SplitPlan(val_fraction, 0), content.hexdigest()
    assert smallest is not None and largest is not None
    forced_train = -largest[1] if n_val == n else None
    forced_val = smallest[1] if n_val == 0 and n >= 2 else None
    n_val += (forced_val is not None) - (forced_train is not None)
    return stats, SplitPlan(val_fraction, n - n_val, forced_train, forced_val), content.hexdigest()


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


def partial_dir(out: Path) -> Path:
    """Where the build of ``out`` keeps its unfinished work (the same for every run)."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


# -- the partial directory: progress record, tokenizer, chunks ----------------------------------


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


@contextmanager
def _locked(partial: Path, out: Path) -> Iterator[None]:
    """Hold ``partial`` for this build; another build of ``out`` running now is refused."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorpusError(f"another build of {out} is running ({partial} is in use); wait "
                              "for it to finish or stop it first") from None
        yield
    finally:
        os.close(fd)


def _read_record(partial: Path) -> dict | None:
    try:
        record = json.loads((partial / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(partial: Path, record: dict) -> None:
    atomic_write(partial / PROGRESS_FILE,
                 lambda f: f.write(json.dumps(record, indent=2, sort_keys=True).encode()))


def _empty(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _start(partial: Path, key: dict, progress: bool) -> dict:
    """The progress record of ``partial``: the one found if it was made with ``key`` (same
    sources, documents and settings), else a new one in the emptied directory."""
    record = _read_record(partial)
    if record is not None and record.get("key") == key:
        chunks = partial / CHUNKS_DIR
        for stale in chunks.glob(".*.tmp"):  # a chunk being written when the build stopped
            stale.unlink()
        done = len(list(chunks.glob("*.bin"))) if chunks.is_dir() else 0
        _say(progress, f"resuming the build kept in {partial}: {done} chunk(s) already encoded")
        return record
    if any(partial.iterdir()):
        old = record.get("key") if record else None
        differ = ([k for k in key if not isinstance(old, dict) or old.get(k) != key[k]]
                  or ["its progress record"])
        _say(progress, f"{partial} holds a partial build of other sources or settings (differs "
                       f"in: {', '.join(differ)}); starting clean")
        _empty(partial)
    record = {"key": key}
    _write_record(partial, record)
    return record


def _tokenizer(partial: Path, record: dict, train_texts: Callable[[], Iterator[str]],
               vocab_size: int, n_texts: int, progress: bool,
               given: Path | None) -> tuple[Tokenizer, str]:
    """The build's tokenizer and its sha256: the one kept in ``partial`` by an earlier run of
    this build (training is deterministic), else a new one (or a copy of ``given``) kept there."""
    path = partial / rundir.TOKENIZER
    if record.get("tokenizer_sha256") and path.is_file() \
            and sha256_file(path) == record["tokenizer_sha256"]:
        return load_tokenizer(path), record["tokenizer_sha256"]
    if given is None:
        tokenizer = train_tokenizer(train_texts(), vocab_size, n_texts=n_texts,
                                    progress=progress)
        tmp = path.with_name(f".{path.name}.tmp")
        save_tokenizer(tokenizer, tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    else:  # copied byte for byte: its hash is the identity a model's tokenizer is checked by
        tokenizer = load_given_tokenizer(given)
        atomic_write(path, lambda f: f.write(Path(given).read_bytes()))
    record["tokenizer_sha256"] = sha256_file(path)
    _write_record(partial, record)
    return tokenizer, record["tokenizer_sha256"]


def _chunks(docs: Iterator[Document], plan: SplitPlan) -> Iterator[dict[str, list[str]]]:
    """The documents' texts by split, in chunks of about ``CHUNK_BYTES`` or ``CHUNK_DOCS``
    documents; chunk boundaries depend only on the documents."""
    chunk: dict[str, list[str]] = {name: [] for name in SPLITS}
    n_bytes = n_docs = 0
    for i, doc in enumerate(docs):
        chunk[plan.split(i, doc)].append(doc.text)
        n_bytes += len(doc.data)
        n_docs += 1
        if n_bytes >= CHUNK_BYTES or n_docs >= CHUNK_DOCS:
            yield chunk
            chunk = {name: [] for name in SPLITS}
            n_bytes = n_docs = 0
    if n_docs:
        yield chunk


def chunk_name(index: int) -> str:
    return f"{index:06d}.bin"


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


def _encode_chunk(tokenizer: Tokenizer, path: Path, chunk: dict[str, list[str]],
                  dtype: str) -> None:
    """Write ``path`` atomically: the token counts of each split (little-endian uint64), then
    each split's tokens."""
    parts = [_encode_batch(tokenizer, chunk[name]).astype(dtype) if chunk[name]
             else np.empty(0, dtype) for name in SPLITS]

    def write(f: BinaryIO) -> None:
        f.write(np.array([len(p) for p in parts], dtype="<u8").tobytes())
        for part in parts:
            f.write(part.tobytes())

    atomic_write(path, write)


def _chunk_header(path: Path, dtype: np.dtype) -> list[int] | None:
    """The token counts of a whole chunk file, or ``None`` if it is missing or cut short."""
    header_bytes = 8 * len(SPLITS)
    try:
        with open(path, "rb") as f:
            counts = [int(n) for n in np.frombuffer(f.read(header_bytes), "<u8")]
            size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return None
    if len(counts) != len(SPLITS) or size != header_bytes + sum(counts) * dtype.itemsize:
        return None
    return counts


_worker_tokenizer: Tokenizer | None = None


def _start_worker(tokenizer_json: str) -> None:
    """In each encoding process: one thread, Ctrl-C left to the main process, exit with it."""
    global _worker_tokenizer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = Tokenizer.from_str(tokenizer_json)
    _worker_tokenizer.encode_special_tokens = True
    parent = multiprocessing.parent_process()
    if parent is not None:  # a killed build leaves no encoding processes behind
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()


def _encode_chunk_in_worker(path: Path, chunk: dict[str, list[str]], dtype: str) -> None:
    assert _worker_tokenizer is not None
    _encode_chunk(_worker_tokenizer, path, chunk, dtype)


class _Encoder:
    """Encodes chunks in this process (one worker) or in ``workers`` processes, keeping at most
    two chunks per process in flight; ``done`` is called with each chunk's document count."""

    def __init__(self, tokenizer: Tokenizer, workers: int, done: Callable[[int], None]):
        self.tokenizer, self.done = tokenizer, done
        self.pool: ProcessPoolExecutor | None = None
        self.pending: dict[Future, int] = {}
        self.limit = 2 * workers
        if workers > 1:
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(
                "spawn"), initializer=_start_worker, initargs=(tokenizer.to_str(),))

    def submit(self, path: Path, chunk: dict[str, list[str]], dtype: str) -> None:
        n_docs = sum(map(len, chunk.values()))
        if self.pool is None:
            _encode_chunk(self.tokenizer, path, chunk, dtype)
            self.done(n_docs)
            return
        while len(self.pending) >= self.limit:
            self._wait(FIRST_COMPLETED)
        self.pending[self.pool.submit(_encode_chunk_in_worker, path, chunk, dtype)] = n_docs

    def _wait(self, how: str) -> None:
        finished, _ = wait(self.pending, return_when=how)
        for future in finished:
            future.result()  # a worker's error is raised here
            self.done(self.pending.pop(future))

    def close(self) -> None:
        """Wait for every chunk submitted."""
        if self.pending:
            self._wait(ALL_COMPLETED)

    def __enter__(self) -> _Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:  # chunks being encoded are finished and kept; queued dropped
            self.pool.shutdown(wait=True, cancel_futures=True)


def _encode_chunks(chunks_dir: Path, tokenizer: Tokenizer, docs: Iterator[Document],
                   plan: SplitPlan, n_docs: int, workers: int,
                   progress: bool) -> tuple[int, dict[str, int]]:
    """Encode each chunk not already in ``chunks_dir``; returns the number of chunks and the
    documents of each split."""
    chunks_dir.mkdir(exist_ok=True)
    dtype = token_dtype(tokenizer.get_vocab_size())
    documents = dict.fromkeys(SPLITS, 0)
    n_chunks = 0
    with tqdm(total=n_docs, desc="encoding", unit=" docs", disable=not progress) as bar, \
            _Encoder(tokenizer, workers, bar.update) as encoder:
        for index, chunk in enumerate(_chunks(docs, plan)):
            n_chunks += 1
            for name in SPLITS:
                documents[name] += len(chunk[name])
            path = chunks_dir / chunk_name(index)
            if _chunk_header(path, dtype) is not None:  # finished by an earlier run
                bar.update(sum(map(len, chunk.values())))
            else:
                encoder.submit(path, chunk, dtype.str)
        encoder.close()
    return n_chunks, documents


def _assemble(partial: Path, n_chunks: int, vocab_size: int, shard_tokens: int,
              documents: dict[str, int]) -> dict[str, SplitManifest]:
    """Concatenate the chunks' tokens, split by split, into the shards."""
    for name in SPLITS:  # an earlier run's, stopped while assembling
        for stale in partial.glob(f"{name}_*.bin"):
            stale.unlink()
    dtype = token_dtype(vocab_size)
    header_bytes = 8 * len(SPLITS)
    with ExitStack() as stack:
        writers = {name: stack.enter_context(ShardWriter(partial, name, vocab_size,
                                                         shard_tokens)) for name in SPLITS}
        for index in range(n_chunks):
            path = partial / CHUNKS_DIR / chunk_name(index)
            counts = _chunk_header(path, dtype)
            if counts is None:
                raise CorpusError(f"chunk {path} is missing or damaged; run the build again")
            tokens = np.fromfile(path, dtype=dtype, offset=header_bytes)
            for name, start, n in zip(SPLITS, np.cumsum([0] + counts[:-1]), counts):
                writers[name].write(tokens[start:start + n])
        shards = {name: writer.close() for name, writer in writers.items()}
    return {name: SplitManifest(shards[name], sum(s.tokens for s in shards[name]), documents[name])
            for name in SPLITS}


def _build_into(partial: Path, record: dict, files: SourceFiles, stats: SourceStats,
                plan: SplitPlan, vocab_size: int, max_bytes: int | None, shard_tokens: int,
                progress: bool, given_tokenizer: Path | None, workers: int) -> Manifest:
    def train_texts() -> Iterator[str]:
        return (doc.text for i, doc in enumerate(_documents(files, max_bytes, stats))
                if plan.split(i, doc) == "train")

    tokenizer, sha = _tokenizer(partial, record, train_texts, vocab_size, plan.train_documents,
                                progress, given_tokenizer)
    vocab = tokenizer.get_vocab_size()
    n_chunks, documents = _encode_chunks(partial / CHUNKS_DIR, tokenizer,
                                         _documents(files, max_bytes, stats), plan,
                                         stats.documents, workers, progress)
    splits = _assemble(partial, n_chunks, vocab, shard_tokens, documents)
    return Manifest(
        format_version=FORMAT_VERSION, dtype=token_dtype(vocab).name, vocab_size=vocab,
        eot_id=EOT_ID, tokenizer_sha256=sha, splits=splits, sources=list(files.labels),
        counts=stats, settings=_settings(files, vocab_size, plan.val_fraction, max_bytes),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _settings(files: SourceFiles, vocab_size: int, val_fraction: float,
              max_bytes: int | None) -> dict[str, Any]:
    return dict(vocab_size=vocab_size, val_fraction=val_fraction, max_bytes=max_bytes,
                keep_markup=files.keep_markup, text_field=files.text_field)


def _build_key(files: SourceFiles, stats: SourceStats, content: str, settings: dict[str, Any],
               given_tokenizer: Path | None) -> dict:
    """What a partial build's chunks depend on; a run with another key starts clean."""
    key = dict(format_version=FORMAT_VERSION, sources=list(files.labels), counts=asdict(stats),
               content=content, settings=settings,
               tokenizer=None if given_tokenizer is None else sha256_file(given_tokenizer),
               chunks=[CHUNK_BYTES, CHUNK_DOCS])
    return json.loads(json.dumps(key))  # as read back from the progress record


def _finish(partial: Path, out: Path, manifest: Manifest) -> None:
    """Turn ``partial`` into the corpus ``out``: manifest written, working files removed, rename."""
    (partial / MANIFEST_FILE).write_text(manifest.to_json())
    shutil.rmtree(partial / CHUNKS_DIR)
    (partial / PROGRESS_FILE).unlink()
    for name in (rundir.TOKENIZER, MANIFEST_FILE):  # the shards were synced when written
        _fsync_file(partial / name)
    fsync_dir(partial)
    _check_out(out)
    os.replace(partial, out)


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


def build_corpus(out: Path, sources: list[Path] | None = None, vocab_size: int = VOCAB_SIZE,
                 val_fraction: float = VAL_FRACTION, max_bytes: int | None = None,
                 progress: bool = True, *, shard_tokens: int = SHARD_TOKENS,
                 tokenizer: Path | None = None, keep_markup: bool = False,
                 text_field: str = "text", workers: int = 1) -> Manifest:
    """Tokenize ``sources`` (default: the built-in corpus) into the new corpus directory ``out``,
    with a new BPE tokenizer of ``vocab_size`` or the given ``tokenizer`` file (a model's own).
    ``.rst`` and ``.html`` sources lose their markup unless ``keep_markup``; records' text is in
    ``text_field``. ``workers`` encoding processes (1: in this process, the tokenizer using
    every core) give the same corpus, byte for byte, whatever their number.

    A build that stops (killed, interrupted, or failing for another reason than its inputs)
    keeps its work in ``partial_dir(out)``; running it again with the same sources and settings
    resumes there. Raises ``CorpusError`` (and removes that work) for a missing or unreadable
    source, when no documents are found, and when ``out`` already holds a corpus or other files.
    """
    out = Path(out)
    if vocab_size < MIN_VOCAB_SIZE:
        raise CorpusError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes and "
                          f"end-of-text), got {vocab_size}")
    if not 0 < val_fraction < 1:
        raise CorpusError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if max_bytes is not None and max_bytes < 1:
        raise CorpusError(f"max_bytes must be positive, got {max_bytes}")
    if workers < 1:
        raise CorpusError(f"workers must be at least 1, got {workers}")
    _check_out(out)
    if tokenizer is not None:
        load_given_tokenizer(tokenizer)  # refuse a bad file before the scan
    try:
        files = resolve_sources(sources, keep_markup, text_field)
        stats, plan, content = _scan(files, val_fraction, max_bytes, progress)
        if stats.documents == 0:
            reasons = [f"{n} {what}" for n, what in (
                (stats.skipped_empty, "empty or whitespace only"),
                (stats.skipped_binary, "binary (a NUL byte in the first 8 KiB)")) if n]
            if files.skipped_suffixes:
                reasons.append(f"passed over for their suffix: {files.skipped_text()}; readable: "
                               f"{' '.join(sorted(SUPPORTED_SUFFIXES))}")
            why = f" ({'; '.join(reasons)})" if reasons else ""
            raise CorpusError(f"no documents found in {', '.join(files.labels)}{why}")
        key = _build_key(files, stats, content,
                         _settings(files, vocab_size, val_fraction, max_bytes), tokenizer)
        partial = partial_dir(out)
        partial.mkdir(parents=True, exist_ok=True)
        with _locked(partial, out):
            try:
                record = _start(partial, key, progress)
                manifest = _build_into(partial, record, files, stats, plan, vocab_size,
                                       max_bytes, shard_tokens, progress, tokenizer, workers)
                _finish(partial, out, manifest)
            except (CorpusError, SourceError):  # the inputs are at fault: nothing to resume
                shutil.rmtree(partial, ignore_errors=True)
                raise
    except SourceError as e:
        raise CorpusError(str(e)) from None
    fsync_dir(out.parent)
    return manifest
