"""The neuron viewer's routes: ``/`` (runs with a neuron store under ``--runs``),
``/run?run=R`` (the searchable table of its neurons), ``/compare?a=R&b=S`` (two runs side by
side), ``/neuron?run=R&layer=L&neuron=N&point=mid|post`` (shareable), ``/api/neurons`` (the table
as JSON, ``solulab.web.explorer``), ``POST /api/probe`` (your text, ``solulab.web.probe``), and
the JSON of every page: ``/api/runs``, ``/api/neuron`` and ``/api/compare``.

Only run names found by walking the runs directory are accepted, so no request string opens a
path of its own choosing or a store of its own; open stores are kept in a small LRU cache. A
store whose files cannot be read is a 409 that names the run (collect it again), never a 500.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from solulab.autointerp.run import load_explanations
from solulab.errors import SolulabError
from solulab.neurons.store import META_FILE, Example, NeuronStore
from solulab.runs import rundir
from solulab.stats import wilson_interval
from solulab.web import pages
from solulab.web.explorer import MAX_LIMIT, MAX_QUERY, NeuronTable, QueryError
from solulab.web.explorer import Query as Query_
from solulab.web.guard import read_json
from solulab.web.probe import MAX_CHARS, MAX_TOP, ProbeBusy, ProbeError, Prober

MAX_DEPTH = 8
MAX_MODELS = 2  # models kept loaded for probes


class ProbeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=MAX_CHARS)
    point: Literal["mid", "post"] | None = None
    top: int = Field(5, ge=1, le=MAX_TOP)
    layer: int | None = Field(None, ge=0, le=10_000)
    neuron: int | None = Field(None, ge=0, le=10_000_000)

MAX_DIRECTORIES = 100_000


def find_runs(root: Path) -> list[str]:
    """Run directories under ``root`` (itself included) that hold a neuron store, as relative
    names. Links are followed, each real directory visited once (a link loop ends), at most
    ``MAX_DEPTH`` deep and ``MAX_DIRECTORIES`` in all."""
    found, seen = [], set()
    stack = [(root, 0)]
    while stack and len(seen) < MAX_DIRECTORIES:
        path, depth = stack.pop()
        try:
            info = path.stat()
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            if (path / rundir.NEURONS / META_FILE).is_file():
                found.append(path)
            entries = list(os.scandir(path)) if depth < MAX_DEPTH else []
        except OSError:  # unreadable, vanished, a loop or a name too long: not a run
            continue
        stack.extend((Path(entry.path), depth + 1) for entry in entries if is_directory(entry))
    return sorted(str(p.relative_to(root)) if p != root else "." for p in found)


def is_directory(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


class RunIndex:
    """The runs under ``root``: names rescanned at most every ``rescan_seconds`` when an unknown
    one is asked for, and at most ``capacity`` stores open at once."""

    def __init__(self, root: Path, capacity: int = 8, rescan_seconds: float = 5.0):
        self.root, self.capacity, self.rescan_seconds = root.resolve(), capacity, rescan_seconds
        self.names, self.scanned_at = find_runs(self.root), time.monotonic()
        self.open: OrderedDict[str, NeuronStore] = OrderedDict()
        self.tables: dict[str, NeuronTable] = {}  # of the open stores
        self.probers: OrderedDict[str, Prober] = OrderedDict()  # models, at most 2 loaded
        self.lock = threading.Lock()  # requests are served from a thread pool

    def current_names(self) -> list[str]:
        """The run names, rescanned when the last scan is older than ``rescan_seconds``: a store
        collected while the viewer runs appears once its collection has finished."""
        with self.lock:
            self._rescan_if_stale()
            return self.names

    def _rescan_if_stale(self) -> None:
        if time.monotonic() - self.scanned_at > self.rescan_seconds:
            self.names, self.scanned_at = find_runs(self.root), time.monotonic()

    def store(self, name: str) -> NeuronStore:
        with self.lock:
            if name not in self.names:
                self._rescan_if_stale()
            if name not in self.names:
                raise HTTPException(404, "no run with a neuron store of that name")
            if name not in self.open:
                self.open[name] = NeuronStore.open(self.root / name / rundir.NEURONS)
                while len(self.open) > self.capacity:
                    self.tables.pop(self.open.popitem(last=False)[0], None)
            self.open.move_to_end(name)
            return self.open[name]

    def prober(self, name: str) -> Prober:
        """The run's model for probes, loaded on first use (the two most recent are kept)."""
        self.store(name)  # a known run
        with self.lock:
            if name not in self.probers:
                if not (self.root / name / rundir.WEIGHTS).is_file():
                    raise HTTPException(404, "this run has no model weights to probe")
                self.probers[name] = Prober(self.root / name)
                while len(self.probers) > MAX_MODELS:
                    self.probers.popitem(last=False)
            self.probers.move_to_end(name)
            return self.probers[name]

    def table(self, name: str) -> NeuronTable:
        """The run's neuron table, built on first use and kept while its store is open."""
        store = self.store(name)
        with self.lock:
            if name not in self.tables:
                self.tables[name] = NeuronTable(store)
            return self.tables[name]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def example_json(example: Example) -> dict:
    """One example as the neuron page shows it (NaN, outside the sequence, as null)."""
    return {"tokens": example.tokens, "acts": [_finite(a) for a in example.acts],
            "other_acts": None if example.other_acts is None else
            [_finite(a) for a in example.other_acts],
            "fire_index": example.fire_index, "value": _finite(example.value),
            "position": example.position}


def fraction_json(k: int, n: int) -> dict:
    low, high = wilson_interval(k, n) if n else (None, None)
    return {"interpretable": k, "explained": n, "fraction": k / n if n else None,
            "low": low, "high": high}


@contextmanager
def reading(run: str) -> Iterator[None]:
    """Arrays that do not parse (a damaged or truncated store) as a 409 naming the run."""
    try:
        yield
    except SolulabError:  # a bad layer, neuron or point: the app's 404
        raise
    except (ValueError, OSError, EOFError) as error:
        raise HTTPException(409, f"the neuron store of run {run!r} is damaged "
                            f"({type(error).__name__}): collect it again with "
                            "`solulab neurons collect`") from None


def viewer_router(runs: Path) -> APIRouter:
    index = RunIndex(runs)
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def runs_view():
        return pages.runs_page(index.current_names())

    @router.get("/run", response_class=HTMLResponse)
    def run_view(run: str):
        with reading(run):
            return pages.run_page(run, index.store(run), index.table(run))

    @router.get("/compare", response_class=HTMLResponse)
    def compare_view(a: str, b: str):
        with reading(a), reading(b):
            return pages.compare_page([a, b], [index.table(a), index.table(b)])

    @router.get("/api/runs")
    def runs_api():
        """The runs with a neuron store, as the runs page lists them."""
        return {"runs": index.current_names()}

    @router.get("/api/neuron")
    def neuron_api(run: str, layer: int, neuron: int, point: str | None = Query(None)):
        """Everything a neuron's page shows: statistics, verdict, top examples, examples across
        the activation range and logit effects."""
        with reading(run):
            store = index.store(run)
            point = point or store.main_point
            stats = store.stats(layer, neuron, point)  # validates layer, neuron and point
            effects = store.logit_effects(layer, neuron)
            return {
                "run": run, "layer": layer, "neuron": neuron, "point": point,
                "stats": {**{name: _finite(getattr(stats, name)) for name in (
                    "max", "min", "mean", "std", "kurtosis", "frac_positive", "frac_above",
                    "threshold")}, "n_tokens": stats.n_tokens,
                    "hist_edges": [_finite(e) for e in stats.hist_edges],
                    "hist_counts": stats.hist_counts.tolist()},
                "explanation": load_explanations(store.path).get((layer, neuron)),
                "top": [example_json(e) for e in store.examples(layer, neuron, point)],
                "intervals": [{"low": _finite(low), "high": _finite(high),
                               "examples": [example_json(e) for e in examples]}
                              for (low, high), examples in store.interval_examples(
                                  layer, neuron, point)],
                "logit_effects": {
                    "top": [[t, _finite(v)] for t, v in zip(effects.top_tokens,
                                                             effects.top_values)],
                    "bottom": [[t, _finite(v)] for t, v in zip(effects.bottom_tokens,
                                                                effects.bottom_values)],
                    "complete": effects.complete}}

    @router.get("/api/compare")
    def compare_api(a: str, b: str):
        """Two runs' interpretable fractions per layer, with Wilson 95% intervals."""
        out = {}
        for run in (a, b):
            with reading(run):
                fractions = index.table(run).layer_fractions()
            out[run] = {str(layer): fraction_json(k, n) for layer, (k, n) in fractions.items()}
        return {"runs": [a, b], "layers": out}

    @router.get("/api/neurons")
    def neurons_api(
        run: str, q: str = Query("", max_length=MAX_QUERY),
        token: str = Query("", max_length=MAX_QUERY), layer: int | None = None,
        interpretable: bool | None = None, min_firing: float = Query(0.0, ge=0, le=1),
        max_firing: float = Query(1.0, ge=0, le=1), sort: str = Query("layer", max_length=20),
        order: str = Query("asc", max_length=4), limit: int = Query(50, ge=1, le=MAX_LIMIT),
        offset: int = Query(0, ge=0, le=2**40)):
        """The run's neurons, filtered, searched, sorted and paged (``solulab.web.explorer``)."""
        with reading(run):
            table = index.table(run)
        query = Query_(q, token, layer, interpretable, min_firing, max_firing, sort, order,
                       limit, offset)
        try:
            return {"run": run, **table.query(query)}
        except QueryError as error:
            raise HTTPException(422, str(error)) from None

    @router.post("/api/probe")
    async def probe_api(run: str, request: Request):
        """Your text through the run's model: per token the neurons that fire most there, or,
        given ``layer`` and ``neuron``, that neuron's activation at every token."""
        body = await read_json(request, ProbeRequest)
        if (body.layer is None) != (body.neuron is None):
            raise HTTPException(422, "give both layer and neuron, or neither")
        try:
            prober = await run_in_threadpool(index.prober, run)
            if body.layer is None:
                return await run_in_threadpool(prober.top_neurons, body.text, body.point,
                                               body.top)
            return await run_in_threadpool(prober.neuron, body.text, body.layer, body.neuron,
                                           body.point)
        except ProbeError as error:
            raise HTTPException(422, str(error)) from None
        except ProbeBusy as error:
            raise HTTPException(429, str(error)) from None

    @router.get("/neuron", response_class=HTMLResponse)
    def neuron_view(run: str, layer: int, neuron: int, point: str | None = Query(None)):
        with reading(run):
            store = index.store(run)
            point = point or store.main_point
            store.stats(layer, neuron, point)  # validates layer, neuron and point
            other = random.Random(f"{run}:{layer}:{neuron}").randrange(store.d_mlp)
            explanation = load_explanations(store.path).get((layer, neuron))
            return pages.neuron_page(run, store, layer, neuron, point, other, explanation)

    return router
