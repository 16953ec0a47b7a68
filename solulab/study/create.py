"""``solulab study create``: sample neurons from each model and write a blinded study database.

Neurons are drawn at random from each model's store (the paper: 60 per model), stratified by
layer: every layer gives the same number of neurons (the remainder to layers drawn at random),
each drawn uniformly within its layer, so every layer is represented and none is
overrepresented; the layer is a secret like the rest. What an annotator is shown is copied
into the database and made the same shape for every model: exactly ``SNIPPETS`` top examples
(empty ones pad a short list), each cut to the same window around its firing token (the widest
every model's store holds), with shades in [0, 1] to two decimals from the study's display
(``solulab.study.display``: by default the same amount of shading for every neuron), so neither
the scale or density of a model's activations nor the store's layout says where a neuron came
from.

Every neuron gets the same number of section 6.4 examples, drawn in turn from every activation
interval of every point its model has (before and after the extra LayerNorm where there is
one), shuffled and unlabelled; a token drawn at both points is asked once and its label counts
for both. A model without the extra LayerNorm is asked about just as often, so whether and how
many examples appear says nothing about the model.

``--seed`` fixes which neurons are drawn (a fresh random seed by default, kept in the
database); the order and the ids each annotator sees always come from the operating system's
secure random source, so no one can recompute them. The database is built under a temporary
name and renamed into place only when complete.
"""

from __future__ import annotations

import os
import random
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from solulab.errors import SolulabError
from solulab.neurons.collect import open_store
from solulab.neurons.store import Example, NeuronStore
from solulab.runs import rundir
from solulab.study import db
from solulab.study.display import DEFAULT_DISPLAY, Display
from solulab.study.shading import display

SNIPPETS = 20
CHECKS_PER_NEURON = 16
SECURE = secrets.SystemRandom()


def new_id() -> str:
    """An opaque id from the secure source: 96 random bits as 24 hex digits."""
    return f"{SECURE.getrandbits(96):024x}"


@dataclass(frozen=True)
class StudyLinks:
    path: Path
    tokens: dict[str, str]  # annotator -> secret token

    def links(self, base_url: str) -> dict[str, str]:
        base = base_url.rstrip("/")
        return {name: f"{base}/study/{token}" for name, token in self.tokens.items()}


@dataclass(frozen=True)
class Window:
    """How many tokens to show before and after the firing token."""
    before: int
    after: int

    def bounds(self, example: Example) -> tuple[int, int]:
        return max(0, example.fire_index - self.before), example.fire_index + self.after + 1

    def snippet(self, example: Example | None, shades: np.ndarray | None = None) -> dict:
        """Tokens around the firing token with their ``shades`` (all 0 when None); ``start``
        says the model's context begins here."""
        if example is None:
            return {"tokens": [], "acts": [], "fire": -1, "start": False}
        start, end = self.bounds(example)
        tokens = example.tokens[start:end]
        acts = [0.0] * len(tokens) if shades is None else [float(a) for a in shades]
        return {"tokens": tokens, "acts": acts, "fire": example.fire_index - start,
                "start": example.fire_index < self.before}


def shared_window(stores: dict[str, NeuronStore]) -> Window:
    """The widest window that every store holds, so no model shows more context."""
    return Window(min(s.meta["window_before"] for s in stores.values()),
                  min(s.meta["window_after"] for s in stores.values()))


def item_payload(store: NeuronStore, layer: int, neuron: int, window: Window,
                 shade: Display) -> dict:
    """The top ``SNIPPETS`` examples in ``window``, shaded by ``shade`` over all the tokens
    shown; empty snippets pad a short list."""
    examples = store.examples(layer, neuron, limit=SNIPPETS)
    shown = [e.acts[slice(*window.bounds(e))] for e in examples]
    snippets = [window.snippet(e, s) for e, s in zip(examples, shade(shown))]
    return {"snippets": snippets + [window.snippet(None)] * (SNIPPETS - len(examples))}


def check_examples(store: NeuronStore, layer: int, neuron: int, rng: random.Random
                   ) -> list[tuple[Example, list[tuple[str, int, int]]]]:
    """Up to ``CHECKS_PER_NEURON`` distinct tokens, taken in turn from every (point, interval),
    each with every ``(point, interval index, interval count)`` it was drawn from; shuffled."""
    queues = []
    for point in store.points:
        intervals = store.interval_examples(layer, neuron, point)
        for index, (_, examples) in enumerate(intervals):
            queues.append((point, index, len(intervals), rng.sample(examples, len(examples))))
    drawn: dict[int, tuple[Example, list[tuple[str, int, int]]]] = {}
    while len(drawn) < CHECKS_PER_NEURON and any(q[3] for q in queues):
        for point, index, count, queue in queues:
            while queue:
                example = queue.pop()
                sources = drawn.setdefault(example.position, (example, []))[1]
                if point not in {s[0] for s in sources}:
                    sources.append((point, index, count))
                    break
            if len(drawn) == CHECKS_PER_NEURON:
                break
    picked = list(drawn.values())
    rng.shuffle(picked)
    return picked


def stratified(rng: random.Random, by_layer: dict[int, list[tuple[int, int]]], n: int
               ) -> list[tuple[int, int]]:
    """``n`` (layer, neuron) pairs: ``n // layers`` uniformly from each layer, one more from
    each of ``n % layers`` layers drawn at random."""
    layers = sorted(by_layer)
    extra = set(rng.sample(layers, n % len(layers))) if n % len(layers) else set()
    return [pair for layer in layers
            for pair in rng.sample(by_layer[layer], n // len(layers) + (layer in extra))]


def _open_stores(models: dict[str, Path]) -> dict[str, NeuronStore]:
    if not models:
        raise SolulabError("give at least one --model NAME=RUN")
    return {name: open_store(run) for name, run in models.items()}


def _n_params(run: Path) -> int:
    return (rundir.read_record(run) or {}).get("n_params", 0)


def create_study(models: dict[str, str | Path], out: str | Path, neurons_per_model: int = 60,
                 seed: int | None = None, annotators: list[str] | None = None,
                 exclude: list[Path] = (), display_name: str = DEFAULT_DISPLAY,
                 layers: list[int] | None = None) -> StudyLinks:
    """Write a new study database at ``out``; returns each annotator's secret token. Neurons
    sampled by the studies in ``exclude`` are not drawn again (a fresh sample, e.g. held out);
    ``display_name`` chooses how tokens are shaded (``solulab.study.display``); ``layers``
    limits the draw to those layers of every model (default: all of them)."""
    out = Path(out)
    if out.exists():
        raise SolulabError(f"{out} exists: a study is created once (choose another --out)")
    shade = display(display_name)
    annotators = annotators or ["annotator"]
    if len(set(annotators)) != len(annotators) or not all(a.strip() for a in annotators):
        raise SolulabError(f"annotator names must be distinct and non-empty, got {annotators}")
    stores = _open_stores({name: Path(run) for name, run in models.items()})
    taken = set().union(*(_sampled(Path(study)) for study in exclude))
    candidates = {}
    for name, store in stores.items():
        run = str(store.path.parent.resolve())
        drawn = store.layers if layers is None else sorted(set(layers))
        absent = [layer for layer in drawn if layer not in store.layers]
        if absent or not drawn:
            raise SolulabError(f"model {name}: layer {absent[0] if absent else '(none)'} is not "
                               f"in its neuron store (it has layers {store.layers})")
        candidates[name] = {layer: [(layer, n) for n in range(store.d_mlp)
                                    if (run, layer, n) not in taken] for layer in drawn}
        share = -(-neurons_per_model // len(drawn))  # the most any layer must give
        short = [layer for layer, pairs in candidates[name].items() if len(pairs) < share]
        if short:
            raise SolulabError(f"model {name}: layer {short[0]} has "
                               f"{len(candidates[name][short[0]])} neurons in its store (not "
                               f"counting excluded ones), fewer than the {share} that "
                               f"--neurons-per-model {neurons_per_model} asks of each layer")
    seed = secrets.randbits(63) if seed is None else seed
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    try:
        tokens = _write_study(partial, stores, candidates, neurons_per_model, seed, annotators,
                              display_name, shade)
        try:
            os.link(partial, out)  # atomic, and refuses to replace a study made meanwhile
        except FileExistsError:
            raise SolulabError(f"{out} exists: a study is created once") from None
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{partial}{suffix}").unlink(missing_ok=True)
    return StudyLinks(out, tokens)


def _sampled(study: Path) -> set[tuple[str, int, int]]:
    conn = db.connect(study)
    try:
        return {(str(Path(run).resolve()), layer, neuron)
                for run, layer, neuron in db.sampled_neurons(conn)}
    finally:
        conn.close()


def _write_study(path: Path, stores: dict[str, NeuronStore],
                 candidates: dict[str, dict[int, list[tuple[int, int]]]], neurons_per_model: int,
                 seed: int, annotators: list[str], display_name: str, shade: Display
                 ) -> dict[str, str]:
    rng = random.Random(seed)
    window = shared_window(stores)
    conn = db.connect(path, create=True)
    tokens = {name: secrets.token_urlsafe(24) for name in annotators}
    item_ids, check_ids = [], []
    try:
        with db.Transaction(conn):
            db.add_settings(conn, {"seed": seed, "neurons_per_model": neurons_per_model,
                                   "display": display_name})
            for name, store in stores.items():
                run = store.path.parent
                db.add_model(conn, name, run, store.meta["act_fn"], _n_params(run))
                for layer, neuron in stratified(rng, candidates[name], neurons_per_model):
                    item_ids.append(new_id())
                    payload = item_payload(store, layer, neuron, window, shade)
                    db.add_item(conn, item_ids[-1], payload, name, run, layer, neuron)
                    for position, (example, sources) in enumerate(
                            check_examples(store, layer, neuron, rng)):
                        check_ids.append(new_id())
                        db.add_check(conn, check_ids[-1], item_ids[-1], position,
                                     window.snippet(example), sources)
            for name, token in tokens.items():
                order = SECURE.sample(item_ids, len(item_ids))
                db.add_annotator(conn, name, token, [(new_id(), item) for item in order],
                                 [(new_id(), check) for check in check_ids])
    finally:
        conn.close()
    return tokens
