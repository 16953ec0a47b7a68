"""``solulab study create``: sample neurons from each model and write a blinded study database.

Neurons are drawn uniformly at random from all (layer, neuron) pairs of each model's store (the
paper: 60 per model). What an annotator is shown is copied into the database and made the same
shape for every model: exactly ``SNIPPETS`` top examples (empty ones pad a short list), each cut
to the same window around its firing token, with activations divided by the largest shown and
rounded to two decimals, so neither the scale of a model's activations nor the store's layout
says where a neuron came from. For models with an extra LayerNorm, the section 6.4 examples are
drawn from every activation interval before and after the LayerNorm, shuffled and unlabelled.
"""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass
from pathlib import Path

from solulab.errors import SolulabError
from solulab.neurons.collect import open_store
from solulab.neurons.store import Example, NeuronStore
from solulab.study.db import Transaction, connect, token_sha256

SNIPPETS = 20
BEFORE, AFTER = 12, 3  # tokens shown around the firing token
CHECKS_PER_INTERVAL = 1


@dataclass(frozen=True)
class StudyLinks:
    path: Path
    tokens: dict[str, str]  # annotator -> secret token

    def links(self, base_url: str) -> dict[str, str]:
        base = base_url.rstrip("/")
        return {name: f"{base}/study/{token}" for name, token in self.tokens.items()}


def snippet(example: Example | None, scale: float) -> dict:
    """Tokens around the firing token, activations over ``scale`` in [0, 1] to two decimals."""
    if example is None:
        return {"tokens": [], "acts": [], "fire": -1}
    start = max(0, example.fire_index - BEFORE)
    end = example.fire_index + AFTER + 1
    acts = [round(min(max(float(a) / scale, 0.0), 1.0), 2) if scale > 0 else 0.0
            for a in example.acts[start:end]]
    return {"tokens": example.tokens[start:end], "acts": acts, "fire": example.fire_index - start}


def item_payload(store: NeuronStore, layer: int, neuron: int) -> dict:
    examples = store.examples(layer, neuron, limit=SNIPPETS)
    scale = max((e.value for e in examples), default=0.0)
    padded = examples + [None] * (SNIPPETS - len(examples))
    return {"snippets": [snippet(e, scale) for e in padded]}


def check_examples(store: NeuronStore, layer: int, neuron: int,
                   rng: random.Random) -> list[tuple[str, int, int, Example]]:
    """``(point, interval index, interval count, example)`` from every interval of both points."""
    drawn = []
    for point in store.points:
        intervals = store.interval_examples(layer, neuron, point)
        for index, (_, examples) in enumerate(intervals):
            for example in rng.sample(examples, min(CHECKS_PER_INTERVAL, len(examples))):
                drawn.append((point, index, len(intervals), example))
    rng.shuffle(drawn)
    return drawn


def _parse_models(models: dict[str, Path]) -> dict[str, NeuronStore]:
    if not models:
        raise SolulabError("give at least one --model NAME=RUN")
    return {name: open_store(run) for name, run in models.items()}


def create_study(models: dict[str, str | Path], out: str | Path, neurons_per_model: int = 60,
                 seed: int = 0, annotators: list[str] | None = None) -> StudyLinks:
    """Write a new study database at ``out``; returns each annotator's secret token."""
    out = Path(out)
    if out.exists():
        raise SolulabError(f"{out} exists: a study is created once (choose another --out)")
    annotators = annotators or ["annotator"]
    if len(set(annotators)) != len(annotators) or not all(a.strip() for a in annotators):
        raise SolulabError(f"annotator names must be distinct and non-empty, got {annotators}")
    stores = _parse_models({name: Path(run) for name, run in models.items()})
    rng = random.Random(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(out, create=True)
    tokens = {name: secrets.token_urlsafe(24) for name in annotators}
    item_ids = []
    with Transaction(conn):
        conn.execute("INSERT INTO study VALUES ('seed', ?), ('neurons_per_model', ?)",
                     (str(seed), str(neurons_per_model)))
        for name, store in stores.items():
            pairs = [(layer, n) for layer in store.layers for n in range(store.d_mlp)]
            if neurons_per_model > len(pairs):
                raise SolulabError(f"model {name} has {len(pairs)} neurons in its store, fewer "
                                   f"than --neurons-per-model {neurons_per_model}")
            run = store.path.parent
            n_params = json.loads((run / "run.json").read_text()).get("n_params", 0) \
                if (run / "run.json").is_file() else 0
            conn.execute("INSERT INTO models VALUES (?, ?, ?, ?)",
                         (name, str(run), store.meta["act_fn"], n_params))
            for layer, neuron in rng.sample(pairs, neurons_per_model):
                item_id = secrets.token_urlsafe(12)
                item_ids.append(item_id)
                conn.execute("INSERT INTO items VALUES (?, ?)",
                             (item_id, json.dumps(item_payload(store, layer, neuron))))
                conn.execute("INSERT INTO secrets VALUES (?, ?, ?, ?, ?)",
                             (item_id, name, str(run), layer, neuron))
                if len(store.points) > 1:
                    group = secrets.token_urlsafe(12)
                    for position, (point, index, count, example) in enumerate(
                            check_examples(store, layer, neuron, rng)):
                        check_id = secrets.token_urlsafe(12)
                        conn.execute("INSERT INTO checks VALUES (?, ?, ?, ?)",
                                     (check_id, group, position,
                                      json.dumps(snippet(example, 0.0))))
                        conn.execute("INSERT INTO check_secrets VALUES (?, ?, ?, ?, ?)",
                                     (check_id, item_id, point, index, count))
        for name, token in tokens.items():
            conn.execute("INSERT INTO annotators VALUES (?, ?)", (name, token_sha256(token)))
            order = item_ids[:]
            rng.shuffle(order)
            conn.executemany("INSERT INTO orders VALUES (?, ?, ?)",
                             [(name, i, item_id) for i, item_id in enumerate(order)])
    conn.close()
    return StudyLinks(out, tokens)
