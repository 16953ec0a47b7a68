"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Each write goes to a temporary file in the target's directory, is flushed and fsynced, given the
permissions the user's umask asks for (a temporary file starts owner-only), then renamed over the
target; the directory is fsynced so the rename itself survives a crash. JSON is always valid:
NaN and infinities are written as null.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing_directory(path: Path) -> Iterator[Path]:
    """Build a directory that replaces ``path`` whole: yields a hidden sibling to fill, renamed
    over ``path`` when the block ends (the old one removed only once the new is in place), and
    removed instead when the block raises, leaving ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[BinaryIO], None], mode: int = FILE_MODE) -> None:
    """Call ``write(file)`` on a temporary file, then atomically rename it to ``path``, which
    has ``mode`` from its first moment (default: what the umask asks for)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    atomic_write(path, lambda f: f.write(data), mode)


def atomic_write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any, **kwargs) -> str:
    """Strict JSON: non-finite floats as null."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def atomic_write_png(figure: Any, path: Path, mode: int = FILE_MODE, dpi: int = 120) -> None:
    """A matplotlib ``figure`` as a PNG at ``path``, written atomically with ``mode``."""
    png = BytesIO()
    figure.savefig(png, format="png", dpi=dpi)
    atomic_write(path, lambda f: f.write(png.getvalue()), mode)


def atomic_write_json(path: Path, obj: Any, mode: int = FILE_MODE) -> None:
    atomic_write_text(path, json_text(obj, indent=2, sort_keys=True) + "\n", mode)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
