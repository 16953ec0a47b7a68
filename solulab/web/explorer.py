"""The neuron table of a run: every neuron's statistics, verdict and explanation in columns, for
the explorer's sortable, filterable, searchable listing (``GET /api/neurons``).

Built once per store from its arrays (layer by layer, no per-neuron Python over the examples) and
kept in memory: about 60 bytes and an explanation string per neuron, so a run of 100,000 neurons
holds a few megabytes. A query is NumPy over those columns: filters are masks, sorting uses an
order precomputed per column, text search runs over one joined string, and token search over an
index from token to the neurons whose top examples fire on it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from solulab.autointerp.run import load_explanations
from solulab.errors import SolulabError
from solulab.neurons.store import HALF_HIST, NeuronStore

NUMERIC = ("layer", "neuron", "max", "firing", "kurtosis", "interpretable", "auroc")
SORTABLE = (*NUMERIC, "explanation")
MAX_LIMIT = 500
MAX_QUERY = 200
SEARCHES = 256
STATS_MAX, STATS_KURTOSIS = 0, 4  # columns of P.stats.npy
FIRES_AT = 0.5  # of the neuron's largest activation, as the automated verdict reads "fires"


def half_max_share(store: NeuronStore, layer: int, point: str) -> np.ndarray:
    """Per neuron, the share of tokens whose activation reaches FIRES_AT of the neuron's largest,
    read from its histogram: the bins whose lower edge is at least that (so it can miss up to one
    bin's worth). A scale-free firing rate, where a fixed threshold says nothing about neurons
    whose activations are all small."""
    counts = np.asarray(store.array(layer, f"{point}.hist_counts"), dtype=np.float64)
    width = np.asarray(store.array(layer, f"{point}.hist_width"), dtype=np.float64)
    largest = np.asarray(store.array(layer, f"{point}.stats"))[:, STATS_MAX]
    lower = (np.arange(counts.shape[1]) - HALF_HIST)[None, :] * width[:, None]
    above = (counts * (lower >= FIRES_AT * largest[:, None])).sum(1)
    total = counts.sum(1)
    return np.where((total > 0) & (largest > 0), above / np.maximum(total, 1), 0.0)


class QueryError(SolulabError):
    """A query the table cannot answer as asked (the server's 422)."""


@dataclass(frozen=True)
class Query:
    q: str = ""  # in the explanation, case-insensitive
    token: str = ""  # a token the neuron's top examples fire on (exact, surrounding space ignored)
    layer: int | None = None
    interpretable: bool | None = None
    min_firing: float = 0.0
    max_firing: float = 1.0
    sort: str = "layer"
    order: str = "asc"
    limit: int = 50
    offset: int = 0

    def check(self) -> None:
        if self.sort not in SORTABLE:
            raise QueryError(f"sort must be one of {', '.join(SORTABLE)}")
        if self.order not in ("asc", "desc"):
            raise QueryError("order must be asc or desc")
        if not 1 <= self.limit <= MAX_LIMIT or self.offset < 0:
            raise QueryError(f"limit must be 1..{MAX_LIMIT} and offset at least 0")
        if len(self.q) > MAX_QUERY or len(self.token) > MAX_QUERY:
            raise QueryError(f"search text is limited to {MAX_QUERY} characters")
        if "\x00" in self.q or "\x00" in self.token:
            raise QueryError("search text may not contain NUL")
        if not (0 <= self.min_firing <= self.max_firing <= 1):
            raise QueryError("firing bounds must satisfy 0 <= min_firing <= max_firing <= 1")


class NeuronTable:
    """Columns over every neuron of a store's main point, in (layer, neuron) order."""

    def __init__(self, store: NeuronStore):
        point, layers = store.main_point, store.layers
        d = store.d_mlp
        stats = np.concatenate([np.asarray(store.array(layer, f"{point}.stats"))
                                for layer in layers])
        firing = np.concatenate([half_max_share(store, layer, point) for layer in layers])
        self.columns: dict[str, np.ndarray] = {
            "layer": np.repeat(np.asarray(layers, dtype=np.int32), d),
            "neuron": np.tile(np.arange(d, dtype=np.int32), len(layers)),
            "max": stats[:, STATS_MAX].astype(np.float32),
            "firing": firing.astype(np.float32),
            "kurtosis": stats[:, STATS_KURTOSIS].astype(np.float32),
        }
        verdicts = load_explanations(store.path)
        rows = len(self.columns["layer"])
        interpretable = np.full(rows, -1, dtype=np.int8)  # -1: not explained
        auroc = np.full(rows, np.nan, dtype=np.float32)
        self.explanations = [""] * rows
        position = {layer: i * d for i, layer in enumerate(layers)}
        for (layer, neuron), verdict in verdicts.items():
            if layer in position and 0 <= neuron < d:
                row = position[layer] + neuron
                interpretable[row] = bool(verdict["interpretable"])
                auroc[row] = verdict["auroc"] if verdict.get("auroc") is not None else np.nan
                self.explanations[row] = verdict.get("description") or ""
        self.columns["interpretable"] = interpretable
        self.columns["auroc"] = auroc
        self.run_meta = {"act_fn": store.meta["act_fn"], "layers": layers, "d_mlp": d,
                         "threshold": store.meta["threshold"], "rows": rows}
        self._orders = {(name, descending): self._order(name, descending)
                        for name in SORTABLE for descending in (False, True)}
        lowered = [e.lower() for e in self.explanations]
        self._text = "\n".join(lowered) + "\n"
        self._line_starts = np.cumsum([0] + [len(e) + 1 for e in lowered[:-1]])
        self._tokens = self._token_index(store, point)
        # Searches repeat (a user pages through one): the last SEARCHES of each kind are kept.
        self._explained_by = functools.lru_cache(SEARCHES)(self._explanation_rows)
        self._fires_on = functools.lru_cache(SEARCHES)(self._token_rows)

    def _order(self, name: str, descending: bool) -> np.ndarray:
        """Rows sorted by ``name``; ties by layer and neuron, missing values last."""
        rows = self.run_meta["rows"]
        if name == "explanation":
            keys = [e.lower() for e in self.explanations]
            present = sorted((i for i in range(rows) if keys[i]), key=keys.__getitem__,
                             reverse=descending)  # a stable sort keeps ties in row order
            return np.array(present + [i for i in range(rows) if not keys[i]], dtype=np.int64)
        values = self.columns[name].astype(np.float64)
        missing = np.isnan(values) | (values < 0 if name == "interpretable" else False)
        values = np.where(missing, 0.0, -values if descending else values)
        return np.lexsort((np.arange(rows), values, missing))

    @staticmethod
    def _token_index(store: NeuronStore, point: str) -> dict[str, np.ndarray]:
        """Token text (stripped) -> rows whose top examples fire on a token with that text."""
        before = store.meta["window_before"]
        fired, rows = [], []
        for i, layer in enumerate(store.layers):
            ids = np.asarray(store.array(layer, f"{point}.top.ids")[:, :, before])  # [d, k]
            fired.append(ids.reshape(-1))
            rows.append(np.repeat(np.arange(store.d_mlp) + i * store.d_mlp, ids.shape[1]))
        fired_ids, fired_rows = np.concatenate(fired), np.concatenate(rows)
        keep = fired_ids >= 0
        fired_ids, fired_rows = fired_ids[keep], fired_rows[keep]
        unique_ids, inverse = np.unique(fired_ids, return_inverse=True)
        texts = [t.strip() for t in store.decode(unique_ids)]
        index: dict[str, list[np.ndarray]] = {}
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(unique_ids) + 1))
        for j, text in enumerate(texts):
            index.setdefault(text, []).append(fired_rows[order[bounds[j]:bounds[j + 1]]])
        return {text: np.unique(np.concatenate(parts)) for text, parts in index.items()}

    def _matches(self, query: Query) -> np.ndarray | None:
        """Mask of the rows every filter of ``query`` keeps; None where it has no filter."""
        if (query.layer is None and query.interpretable is None and not query.q
                and not query.token and query.min_firing <= 0 and query.max_firing >= 1):
            return None
        mask = np.ones(self.run_meta["rows"], dtype=bool)
        if query.layer is not None:
            mask &= self.columns["layer"] == query.layer
        if query.interpretable is not None:
            mask &= self.columns["interpretable"] == int(query.interpretable)
        firing = self.columns["firing"]
        if query.min_firing > 0 or query.max_firing < 1:
            mask &= (firing >= query.min_firing) & (firing <= query.max_firing)
        if query.q:
            mask &= self._explained_by(query.q.lower())
        if query.token:
            mask &= self._fires_on(query.token.strip())
        return mask

    def _token_rows(self, token: str) -> np.ndarray:
        """Rows whose top examples fire on a token whose text is ``token``."""
        hits = np.zeros(self.run_meta["rows"], dtype=bool)
        hits[self._tokens.get(token, np.zeros(0, dtype=np.int64))] = True
        hits.flags.writeable = False
        return hits

    def _explanation_rows(self, text: str) -> np.ndarray:
        """Rows whose explanation contains ``text`` (lower case)."""
        found = np.zeros(self.run_meta["rows"], dtype=bool)
        if "\n" in text:
            found.flags.writeable = False
            return found
        starts, at = [], self._text.find(text)
        while at >= 0:
            starts.append(at)
            at = self._text.find(text, at + 1)
        if starts:
            found[np.searchsorted(self._line_starts, starts, side="right") - 1] = True
        found.flags.writeable = False
        return found

    def query(self, query: Query) -> dict:
        """``{"total", "neurons": [...]}``: the page of rows ``query`` asks for."""
        query.check()
        order = self._orders[(query.sort, query.order == "desc")]
        mask = self._matches(query)
        selected = order if mask is None else order[mask[order]]
        page = selected[query.offset:query.offset + query.limit]
        return {"total": int(len(selected)), "neurons": [self.row(int(i)) for i in page]}

    def layer_fractions(self) -> dict[int, tuple[int, int]]:
        """``{layer: (interpretable, explained)}`` by the automated verdict."""
        verdicts, layers = self.columns["interpretable"], self.columns["layer"]
        return {int(layer): (int((verdicts[layers == layer] == 1).sum()),
                             int((verdicts[layers == layer] >= 0).sum()))
                for layer in self.run_meta["layers"]}

    def row(self, i: int) -> dict:
        c = self.columns
        verdict = int(c["interpretable"][i])
        return {"layer": int(c["layer"][i]), "neuron": int(c["neuron"][i]),
                "max": _number(c["max"][i]), "firing": _number(c["firing"][i]),
                "kurtosis": _number(c["kurtosis"][i]),
                "interpretable": None if verdict < 0 else bool(verdict),
                "auroc": _number(c["auroc"][i]), "explanation": self.explanations[i]}


def _number(value) -> float | None:
    """A JSON number, or null where it is not finite."""
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None
