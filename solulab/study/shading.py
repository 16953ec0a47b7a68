"""The shading functions behind a study's displays (``solulab.study.display`` names them):
each maps one item's activations (one array per snippet) to shades in [0, 1] rounded to two
decimals; ``display(name)`` gives the one a study chose."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from solulab.errors import SolulabError
from solulab.study.display import DESCRIPTIONS, RANK_FLOOR, RANK_SHARE, Display


def _rounded(shades: np.ndarray) -> np.ndarray:
    return np.round(np.clip(shades, 0.0, 1.0), 2)


def plain(acts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Activation over the item's largest (all 0 when none is positive)."""
    scale = max((float(np.max(a)) for a in acts if len(a)), default=0.0)
    if scale <= 0 or not math.isfinite(scale):
        return [np.zeros(len(a)) for a in acts]
    return [_rounded(np.nan_to_num(np.asarray(a, dtype=np.float64)) / scale) for a in acts]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1 (lowest) .. n (highest); tied values share the average of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def rank(acts: Sequence[np.ndarray], share: float = RANK_SHARE) -> list[np.ndarray]:
    """The item's top ``share`` of tokens by activation, shaded from ``RANK_FLOOR`` (the
    lowest of them) to 1 (the highest) by rank; tied activations share their average rank,
    and ties across the cut stay unshaded (an item whose tokens are all equal shows none)."""
    sizes = [len(a) for a in acts]
    flat = np.nan_to_num(np.concatenate([np.asarray(a, dtype=np.float64) for a in acts]
                                        or [np.zeros(0)]), nan=-np.inf)
    n = flat.size
    if n == 0:
        return [np.zeros(0) for _ in acts]
    shaded = max(1, math.ceil(share * n))
    ranks = average_ranks(flat)
    above = ranks - (n - shaded)  # 1 .. shaded for the shaded tokens, below 1 for the rest
    step = (1.0 - RANK_FLOOR) / (shaded - 1) if shaded > 1 else 0.0
    shades = np.where(above >= 1, 1.0 - (shaded - above) * step, 0.0)
    return np.split(_rounded(shades), np.cumsum(sizes)[:-1])


def display(name: str) -> Display:
    """The shading function called ``name``."""
    if name not in DESCRIPTIONS:
        raise SolulabError(f"unknown display {name!r}: choose one of {', '.join(DESCRIPTIONS)}")
    return {"rank": rank, "plain": plain}[name]
