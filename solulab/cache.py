"""Where solulab keeps what it builds once and reuses: corpora, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SOLULAB_CACHE``, else ``$XDG_CACHE_HOME/solulab``, else ``~/.cache/solulab``."""
    if "SOLULAB_CACHE" in os.environ:
        return Path(os.environ["SOLULAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "solulab"
