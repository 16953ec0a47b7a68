"""How a study shades the tokens it shows: the choice of display, and nothing else.

``rank`` (the default) shades the top ``RANK_SHARE`` of the tokens an item shows, ranked by the
neuron's activation among those tokens: the strongest darkest, the rest unshaded. Every item of
every model then shows the same number of shaded tokens at the same shades, so how much of a
snippet is shaded cannot say whether the neuron came from a dense model (GELU: weak activations
everywhere) or a sparse one (SoLU). ``plain`` is the paper's Figure 3: each token shaded by its
activation over the item's largest, which shows that density to anyone who looks.

A display maps one item's activations (one array per snippet) to shades in [0, 1] rounded to
two decimals; ``solulab study report``'s blinding audit measures what each one leaks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from solulab.errors import SolulabError

RANK_SHARE = 0.10  # 50 of the 500 tokens of 20 snippets of 25: the 20 firings and 30 more
RANK_FLOOR = 0.2  # the faintest shaded token, so that every shaded token can be seen

Display = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


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


DISPLAYS: dict[str, Display] = {"rank": rank, "plain": plain}
DEFAULT_DISPLAY = "rank"
DESCRIPTIONS = {
    "rank": f"the top {RANK_SHARE:.0%} of each neuron's shown tokens by activation shaded by "
            "rank (every neuron shows as much shading)",
    "plain": "every token shaded by its activation over the neuron's largest (the paper's "
             "Figure 3; shows how dense a neuron is)",
}


def display(name: str) -> Display:
    if name not in DISPLAYS:
        raise SolulabError(f"unknown display {name!r}: choose one of {', '.join(DISPLAYS)}")
    return DISPLAYS[name]
