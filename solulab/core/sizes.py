"""Model sizes, written one way everywhere: ``LxD`` is ``L`` layers of width ``D``.

Heads are 32 dimensions wide below width 256, 64 below 4096 and 128 from there; ``d_mlp`` is
``4 * D`` (``ModelConfig``'s default). ``LADDER`` is a ladder of sizes about 4x apart in
non-embedding parameters, as in the paper; non-embedding parameters are about
``12 * L * D**2``.
"""

from __future__ import annotations

import re

from solulab.core.config import ConfigError

LADDER = ("1x128", "2x192", "3x320", "4x576", "6x960", "12x1408", "16x2560", "24x4096")
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def head_width(d_model: int) -> int:
    """The width of one attention head for a model of width ``d_model``."""
    return 32 if d_model < 256 else 64 if d_model < 4096 else 128


def parse_size(size: str) -> dict[str, int]:
    """``n_layers``, ``d_model`` and ``n_heads`` of an ``LxD`` size such as ``2x192``."""
    match = _SIZE.match(size)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ConfigError(f"unknown size {size!r}: give LxD (layers x width), such as 1x128; "
                          f"the ladder: {', '.join(LADDER)}")
    n_layers, d_model = int(match.group(1)), int(match.group(2))
    width = head_width(d_model)
    if d_model % width:
        raise ConfigError(f"size {size!r}: the width must be a multiple of {width} "
                          f"(heads of {width})")
    return {"n_layers": n_layers, "d_model": d_model, "n_heads": d_model // width}
