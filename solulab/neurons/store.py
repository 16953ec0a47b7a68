"""The neuron store: what the collector found for every neuron, on disk, without the model.

Format: a directory of NumPy ``.npy`` arrays plus ``meta.json`` and a copy of the run's
``tokenizer.json``. NumPy arrays are memory-mapped on open, so reading one neuron of a store of
any size touches only that neuron's rows, needs no torch and no extra dependency, and loads
anywhere NumPy does; JSON keeps the metadata readable by eye. (Parquet would add row groups and
compression we do not need: every array here is dense and fixed-shape per neuron.)

Layout (``P`` is a point, ``mid`` or ``post``)::

    meta.json  summary.json  tokenizer.json
    layer_{l}/P.top.{values,positions,ids,acts[,other]}.npy      [d_mlp, k(, window)]
    layer_{l}/P.samples.{values,positions,ids,acts}.npy          [d_mlp, intervals, s(, window)]
    layer_{l}/P.interval_edges.npy                               [d_mlp, intervals + 1]
    layer_{l}/P.stats.npy   [d_mlp, 7]: max, min, mean, std, excess kurtosis, >0, >threshold
    layer_{l}/P.hist_counts.npy [d_mlp, bins]   layer_{l}/P.hist_width.npy [d_mlp]
    layer_{l}/logits.{top_ids,top_values,bottom_ids,bottom_values}.npy   [d_mlp, 20]

Windows hold ``window_before`` tokens before the firing token and ``window_after`` after it;
slots outside the sequence have token id -1. ``meta.json`` is written last and the directory is
renamed into place, so a store that opens is complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from solulab.errors import SolulabError
from solulab.io import atomic_write_json, replacing_directory
from solulab.runs import rundir

META_FILE = "meta.json"
SUMMARY_FILE = "summary.json"
STORE_VERSION = 1
HALF_HIST = 16  # the histogram grid is symmetric: bins -HALF_HIST..HALF_HIST-1 of hist_width


class StoreError(SolulabError):
    """A neuron store that is missing, incomplete, from another model, or asked out of range."""


@dataclass
class Example:
    token_ids: list[int]  # the context window
    tokens: list[str]  # each token's text, decoded one token at a time
    acts: np.ndarray  # [window] activation at the example's point on every token
    other_acts: np.ndarray | None  # [window] activations at the other point (*_ln only)
    fire_index: int  # index in the window of the token that fired
    value: float  # activation at fire_index
    position: int  # global index of the firing token in the split


@dataclass
class NeuronStats:
    max: float
    min: float
    mean: float
    std: float
    kurtosis: float  # excess kurtosis
    frac_positive: float
    frac_above: float
    threshold: float
    hist_edges: np.ndarray
    hist_counts: np.ndarray
    n_tokens: int


@dataclass
class LogitEffects:
    top_tokens: list[str]
    top_values: list[float]  # most increased, largest first
    bottom_tokens: list[str]
    bottom_values: list[float]  # most decreased, most negative first
    complete: bool  # a 1-layer model: this is the neuron's whole direct effect on the logits


def write_store(path: Path, meta: dict[str, Any], layers: dict[int, dict[str, np.ndarray]],
                tokenizer_file: Path) -> Path:
    """Write a store atomically: into a hidden sibling directory, then renamed over ``path``."""
    path = Path(path)
    with replacing_directory(path) as tmp:
        shutil.copyfile(tokenizer_file, tmp / rundir.TOKENIZER)
        for layer, arrays in layers.items():
            directory = tmp / f"layer_{layer}"
            directory.mkdir()
            for name, array in arrays.items():
                np.save(directory / f"{name}.npy", np.ascontiguousarray(array))
        atomic_write_json(tmp / SUMMARY_FILE, {"tokens": meta["n_tokens"],
                                               "layers": len(meta["layers"]),
                                               "d_mlp": meta["d_mlp"]})
        atomic_write_json(tmp / META_FILE, {"version": STORE_VERSION, **meta})
    return path


class NeuronStore:
    """Read access to a store; arrays are memory-mapped and read one neuron at a time."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = meta
        self.layers: list[int] = list(meta["layers"])
        self.d_mlp: int = meta["d_mlp"]
        self.points: tuple[str, ...] = tuple(meta["points"])
        self.main_point: str = meta["main_point"]
        self._arrays: dict[tuple[int, str], np.ndarray] = {}
        self._decoder = None

    @classmethod
    def open(cls, path: str | Path, model_sha256: str | None = None) -> NeuronStore:
        """Open a store; with ``model_sha256``, refuse one collected from another model."""
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise StoreError(f"{path} is not a neuron store (no {META_FILE}): collect one with "
                             "`solulab neurons collect RUN`")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{meta_path} is not valid JSON ({e}): collect the store again") from e
        if meta.get("version") != STORE_VERSION:
            raise StoreError(f"{path}: store version {meta.get('version')!r}, this solulab reads "
                             f"{STORE_VERSION}: collect the store again")
        if model_sha256 is not None and meta["model_sha256"] != model_sha256:
            raise StoreError(f"{path} was collected from another model than this run's "
                             "model.safetensors: collect it again")
        return cls(path, meta)

    # -- access -------------------------------------------------------------------------------
    def _check(self, layer: int, neuron: int, point: str | None) -> str:
        if layer not in self.layers:
            raise StoreError(f"layer {layer} is not in this store; it has layers {self.layers}")
        if not 0 <= neuron < self.d_mlp:
            raise StoreError(f"neuron {neuron} out of range 0..{self.d_mlp - 1}")
        point = point or self.main_point
        if point not in self.points:
            raise StoreError(f"point {point!r} is not in this store; it has {self.points}")
        return point

    def array(self, layer: int, name: str) -> np.ndarray:
        key = (layer, name)
        if key not in self._arrays:
            file = self.path / f"layer_{layer}" / f"{name}.npy"
            if not file.is_file():
                raise StoreError(f"{file} is missing: the store is incomplete, collect it again")
            self._arrays[key] = np.load(file, mmap_mode="r")
        return self._arrays[key]

    def decode(self, ids) -> list[str]:
        """Each token id's text on its own."""
        if self._decoder is None:
            from solulab.data.tokenizer import load_tokenizer

            self._decoder = load_tokenizer(self.path / rundir.TOKENIZER)
        return [self._decoder.decode([int(i)], skip_special_tokens=False) for i in ids]

    def _examples(self, layer: int, neuron: int, point: str, prefix: str,
                  index: tuple = ()) -> list[Example]:
        values = self.array(layer, f"{point}.{prefix}.values")[(neuron, *index)]
        positions = self.array(layer, f"{point}.{prefix}.positions")[(neuron, *index)]
        ids = self.array(layer, f"{point}.{prefix}.ids")[(neuron, *index)]
        acts = self.array(layer, f"{point}.{prefix}.acts")[(neuron, *index)]
        has_other = prefix == "top" and len(self.points) > 1
        other = self.array(layer, f"{point}.{prefix}.other")[neuron] if has_other else None
        before = self.meta["window_before"]
        examples = []
        for j in range(len(positions)):
            if positions[j] < 0:
                continue
            inside = ids[j] >= 0
            first = int(np.argmax(inside))
            window_ids = [int(t) for t in ids[j][inside]]
            examples.append(Example(
                window_ids, self.decode(window_ids), np.array(acts[j][inside]),
                None if other is None else np.array(other[j][inside]), before - first,
                float(values[j]), int(positions[j])))
        return examples

    def examples(self, layer: int, neuron: int, point: str | None = None,
                 limit: int | None = None) -> list[Example]:
        """The top examples, strongest first."""
        point = self._check(layer, neuron, point)
        return self._examples(layer, neuron, point, "top")[:limit]

    def interval_examples(self, layer: int, neuron: int, point: str | None = None
                          ) -> list[tuple[tuple[float, float], list[Example]]]:
        """Per activation interval (low to high), its uniformly sampled examples."""
        point = self._check(layer, neuron, point)
        edges = self.array(layer, f"{point}.interval_edges")[neuron]
        n = int(np.sum(~np.isnan(edges))) - 1
        return [((float(edges[i]), float(edges[i + 1])),
                 self._examples(layer, neuron, point, "samples", (i,))) for i in range(n)]

    def stats(self, layer: int, neuron: int, point: str | None = None) -> NeuronStats:
        point = self._check(layer, neuron, point)
        row = self.array(layer, f"{point}.stats")[neuron]
        counts = np.array(self.array(layer, f"{point}.hist_counts")[neuron])
        width = float(self.array(layer, f"{point}.hist_width")[neuron])
        filled = np.nonzero(counts)[0]
        lo, hi = (filled[0], filled[-1] + 1) if len(filled) else (HALF_HIST, HALF_HIST)
        edges = (np.arange(lo, hi + 1) - HALF_HIST) * width
        return NeuronStats(*(float(v) for v in row[:5]), float(row[5]), float(row[6]),
                           self.meta["threshold"], edges, counts[lo:hi], self.meta["n_tokens"])

    def logit_effects(self, layer: int, neuron: int) -> LogitEffects:
        self._check(layer, neuron, None)
        get = lambda name: self.array(layer, f"logits.{name}")[neuron]  # noqa: E731
        return LogitEffects(self.decode(get("top_ids")), [float(v) for v in get("top_values")],
                            self.decode(get("bottom_ids")),
                            [float(v) for v in get("bottom_values")],
                            bool(self.meta["logit_effects_complete"]))
