"""Text documents from source files, in a fixed order, with a tally of what was read and skipped.

A source is a directory (walked recursively) or a file. Supported files:

* ``.txt .md .py``: the whole file is one document;
* ``.rst`` (and ``.rst.txt``, as Sphinx ships sources) and ``.html .htm``: one document each,
  markup removed (``solulab.data.markup``);
* ``.jsonl``, and compressed ``.jsonl.gz`` and ``.jsonl.zst``: one document per line, the line's
  JSON object's text field (blank lines ignored);
* ``.parquet`` (a directory of shards is a directory of these) and ``.arrow`` (the shards of a
  Hugging Face ``datasets`` directory saved with ``save_to_disk``): one document per row of the
  text column, read in batches.

The text field or column is ``text`` unless another is named (``--text-field``).

Order: sources in the order given; inside a directory, files sorted by relative path (POSIX form);
inside a ``.jsonl`` or ``.parquet`` file, row order. Names starting with ``.`` (``.git``,
``.venv``, dotfiles) and ``__pycache__`` directories are not walked. Files with another suffix
found in a directory are counted as ``skipped_unsupported`` (by suffix, so that a source of only
unsupported files can say what it held); naming one directly is an error.

Bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD (counted). A document that
is empty or only whitespace is skipped (``skipped_empty``, counted per file for whole-file formats
and per record for ``.jsonl``/``.parquet``). A text or ``.jsonl`` file with a NUL byte in its first
8 KiB is binary and skipped whole (``skipped_binary``).

The built-in source is the running interpreter's standard library: its ``.py`` files, leaving out
``site-packages`` and the ``test``/``tests``/``idle_test`` packages (test data there includes
deliberately malformed files, and several Linux distributions do not ship them, so leaving them out
keeps the corpus the same across installs of one Python version).
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from solulab.data.markup import html_to_text, rst_to_text
from solulab.errors import SolulabError

TEXT_SUFFIXES = frozenset({".txt", ".md", ".rst", ".py", ".html", ".htm"})
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
TABLE_SUFFIXES = frozenset({".parquet", ".arrow"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | TABLE_SUFFIXES | set(JSONL_SUFFIXES)
BINARY_SNIFF_BYTES = 8192
PARQUET_BATCH_ROWS = 1024
BUILTIN_EXCLUDED_DIRS = frozenset({"site-packages", "test", "tests", "idle_test"})

_ENCODED_REPLACEMENT_CHAR = "\ufffd".encode()
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class SourceError(SolulabError):
    """A source cannot be read as documents; the message names the path."""


@dataclass
class SourceStats:
    """What reading the sources found; ``bytes`` is the UTF-8 size of the documents kept."""

    documents: int = 0
    skipped_empty: int = 0
    skipped_binary: int = 0
    skipped_unsupported: int = 0
    files_with_replacements: int = 0
    replacement_chars: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Document:
    text: str
    data: bytes  # text encoded as UTF-8


@dataclass(frozen=True)
class SourceFiles:
    """The files to read, in reading order, and how many were passed over for their suffix."""

    files: tuple[Path, ...]
    skipped_unsupported: int
    labels: tuple[str, ...]  # how the manifest names the sources
    skipped_suffixes: tuple[tuple[str, int], ...] = ()  # the commonest suffixes passed over
    keep_markup: bool = False  # read .rst and .html verbatim
    text_field: str = "text"  # the field of .jsonl records and the column of tables

    def skipped_text(self) -> str:
        """``.png 40, .js 3`` for messages; empty when nothing was skipped."""
        return ", ".join(f"{suffix or '(none)'} {n}" for suffix, n in self.skipped_suffixes)


def builtin_stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def builtin_label() -> str:
    return "builtin:stdlib " + ".".join(map(str, sys.version_info[:3]))


def supported(path: Path, suffixes: frozenset[str] = SUPPORTED_SUFFIXES) -> bool:
    name = path.name.lower()
    return path.suffix.lower() in suffixes or (
        suffixes is SUPPORTED_SUFFIXES and name.endswith(JSONL_SUFFIXES))


def _walk(root: Path, suffixes: frozenset[str], excluded: frozenset[str]
          ) -> tuple[list[Path], Counter]:
    """Supported files under ``root`` sorted by relative path, and the other files' suffixes."""
    found: list[tuple[str, Path]] = []
    unsupported: Counter = Counter()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if not d.startswith(".") and d != "__pycache__" and d not in excluded]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if supported(path, suffixes):
                found.append((path.relative_to(root).as_posix(), path))
            else:
                unsupported[path.suffix.lower()] += 1
    found.sort()
    return [p for _, p in found], unsupported


def resolve_sources(sources: list[Path] | None, keep_markup: bool = False,
                    text_field: str = "text") -> SourceFiles:
    """List the files of ``sources`` (``None``: the built-in corpus); check that each exists.
    ``keep_markup`` reads ``.rst`` and ``.html`` files as they are; ``text_field`` names the
    field or column that holds each record's text."""
    if sources is None:
        files, unsupported = _walk(builtin_stdlib_dir(), frozenset({".py"}), BUILTIN_EXCLUDED_DIRS)
        return SourceFiles(tuple(files), sum(unsupported.values()), (builtin_label(),),
                           tuple(unsupported.most_common(5)))
    all_files: list[Path] = []
    unsupported: Counter = Counter()
    for source in map(Path, sources):
        if source.is_dir():
            files, skipped = _walk(source, SUPPORTED_SUFFIXES, frozenset())
            all_files += files
            unsupported += skipped
        elif source.is_file():
            if not supported(source):
                raise SourceError(f"unsupported source file {source}: expected one of "
                                  f"{' '.join(sorted(SUPPORTED_SUFFIXES))}")
            all_files.append(source)
        else:
            raise SourceError(f"source not found: {source}")
    return SourceFiles(tuple(all_files), sum(unsupported.values()),
                       tuple(str(Path(s)) for s in sources), tuple(unsupported.most_common(5)),
                       keep_markup, text_field)


def _decode(data: bytes) -> tuple[str, int]:
    """UTF-8 text with invalid sequences replaced, and how many replacement chars were inserted."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        # A valid encoded U+FFFD in the input always decodes to itself, so the difference
        # is exactly the number of replacements.
        return text, text.count("\ufffd") - data.count(_ENCODED_REPLACEMENT_CHAR)


def _is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\x00" in f.read(BINARY_SNIFF_BYTES)


def _count_replacements(replaced: int, first_in_file: bool, stats: SourceStats) -> None:
    """Add ``replaced`` chars; the file is counted the first time it has any."""
    if replaced:
        stats.replacement_chars += replaced
        if first_in_file:
            stats.files_with_replacements += 1


def _read_text_file(path: Path, stats: SourceStats, keep_markup: bool) -> Iterator[str]:
    text, replaced = _decode(path.read_bytes())
    _count_replacements(replaced, True, stats)
    name = path.name.lower()
    if keep_markup:
        pass
    elif name.endswith((".html", ".htm")):
        text = html_to_text(text)
    elif name.endswith((".rst", ".rst.txt")):
        text = rst_to_text(text)
    yield text


def _lines(path: Path) -> Iterator[bytes]:
    """The lines of a file, decompressed by its suffix (``.gz``, ``.zst``)."""
    try:
        with pa.input_stream(str(path), compression="detect") as stream, \
                io.BufferedReader(stream) as f:
            yield from f
    except (pa.ArrowException, OSError, EOFError) as e:
        raise SourceError(f"cannot read {path}: {e} (a damaged or truncated file?)") from None


def _read_jsonl(path: Path, stats: SourceStats, field: str) -> Iterator[str]:
    file_had_replacements = False
    for line_no, raw in enumerate(_lines(path), start=1):
        line, replaced = _decode(raw)
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(f"{path}:{line_no}: not a JSON object ({e.msg})") from None
        text = record.get(field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise SourceError(f"{path}:{line_no}: expected a JSON object with a string "
                              f"{field!r} field (choose another with --text-field)")
        # JSON escapes can spell unpaired surrogates, which are not text.
        text, surrogates = _LONE_SURROGATE.subn("\ufffd", text)
        _count_replacements(replaced + surrogates, not file_had_replacements, stats)
        file_had_replacements |= replaced + surrogates > 0
        yield text


def _check_column(path: Path, schema: pa.Schema, field: str) -> int:
    index = schema.get_field_index(field)
    if index < 0:
        raise SourceError(f"{path} has no {field!r} column (it has {', '.join(schema.names)}; "
                          "choose one with --text-field)")
    column_type = schema.field(index).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise SourceError(f"column {field!r} of {path} holds {column_type}, not strings")
    return index


def _read_table(path: Path, stats: SourceStats, field: str) -> Iterator[str | None]:
    """Rows of a parquet file, or of an Arrow IPC file or stream (``datasets`` shards)."""
    try:
        if path.suffix.lower() == ".parquet":
            pf = pq.ParquetFile(path)
            _check_column(path, pf.schema_arrow, field)
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[field]):
                yield from batch.column(0).to_pylist()
            return
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                source.seek(0)
                file_reader = pa.ipc.open_file(source)
                reader = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
                _check_column(path, file_reader.schema, field)
            else:
                _check_column(path, reader.schema, field)
            for batch in reader:
                yield from batch.column(batch.schema.get_field_index(field)).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise SourceError(f"cannot read {path} as {path.suffix.lstrip('.')}: {e}") from None


def iter_documents(files: SourceFiles, stats: SourceStats,
                   max_bytes: int | None = None) -> Iterator[Document]:
    """The documents of ``files`` in order, tallied into ``stats`` (which starts from zero).

    With ``max_bytes``, reading stops once the documents total at least that many UTF-8 bytes;
    documents are never cut, so the last one may carry the total past ``max_bytes``.
    """
    stats.skipped_unsupported = files.skipped_unsupported
    for path in files.files:
        suffix, name = path.suffix.lower(), path.name.lower()
        try:
            if suffix not in TABLE_SUFFIXES | {".gz", ".zst"} and _is_binary(path):
                stats.skipped_binary += 1
                continue
            if name.endswith(JSONL_SUFFIXES):
                texts: Iterator[str | None] = _read_jsonl(path, stats, files.text_field)
            elif suffix in TABLE_SUFFIXES:
                texts = _read_table(path, stats, files.text_field)
            else:
                texts = _read_text_file(path, stats, files.keep_markup)
            for text in texts:
                if text is None or not text.strip():
                    stats.skipped_empty += 1
                    continue
                data = text.encode("utf-8")
                stats.documents += 1
                stats.bytes += len(data)
                yield Document(text, data)
                if max_bytes is not None and stats.bytes >= max_bytes:
                    return
        except OSError as e:
            raise SourceError(f"cannot read {path}: {e.strerror or e}") from None
