"""What a neuron store records and how it is collected: ``StoreSettings`` and the defaults of
``collect`` (light, so that the CLI reads them without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass

from solulab.errors import SolulabError

COLLECT_SPLIT = "val"
COLLECT_TOKENS = 200_000  # tokens streamed through the model
COLLECT_BATCH_SIZE = 16  # sequences per forward pass
AT_LEAST_ONE = "k, samples, n_intervals and batch_size must be at least 1"


@dataclass(frozen=True)
class StoreSettings:
    """Per neuron and point: the top ``k`` examples, each a window of ``window_before`` tokens
    before the firing one and ``window_after`` after, ``samples`` examples in each of
    ``n_intervals`` activation intervals, and the fraction of tokens above ``threshold``.
    The store's metadata lists the fields in this order."""

    k: int = 40
    window_before: int = 20
    window_after: int = 4
    samples: int = 5
    n_intervals: int = 8
    threshold: float = 0.5

    def __post_init__(self):
        if self.k < 1 or self.samples < 1 or self.n_intervals < 1:
            raise SolulabError(AT_LEAST_ONE)
        if self.window_before < 0 or self.window_after < 0:
            raise SolulabError("window sizes must be >= 0")
