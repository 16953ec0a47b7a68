"""How a study shades the tokens it shows: the choice of display, and nothing else.

``rank`` (the default) shades the top ``RANK_SHARE`` of the tokens an item shows, ranked by the
neuron's activation among those tokens: the strongest darkest, the rest unshaded. Every item of
every model then shows the same number of shaded tokens at the same shades, so how much of a
snippet is shaded cannot say whether the neuron came from a dense model (GELU: weak activations
everywhere) or a sparse one (SoLU). ``plain`` is the paper's Figure 3: each token shaded by its
activation over the item's largest, which shows that density to anyone who looks.

The shading itself is in ``solulab.study.shading`` (``shading.display(name)`` gives the
function); this module only names the choice, so that the command line lists it without loading
numpy. ``solulab study report``'s blinding audit
measures what each display leaks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

RANK_SHARE = 0.10  # 50 of the 500 tokens of 20 snippets of 25: the 20 firings and 30 more
RANK_FLOOR = 0.2  # the faintest shaded token, so that every shaded token can be seen

Display = Callable[["Sequence[np.ndarray]"], "list[np.ndarray]"]

DEFAULT_DISPLAY = "rank"
DESCRIPTIONS = {
    "rank": f"the top {RANK_SHARE:.0%} of each neuron's shown tokens by activation shaded by "
            "rank (every neuron shows as much shading)",
    "plain": "every token shaded by its activation over the neuron's largest (the paper's "
             "Figure 3; shows how dense a neuron is)",
}

