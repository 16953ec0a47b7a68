"""``solulab autointerp`` and ``solulab regex``: explain every neuron of a run, or rank neurons by
how well a pattern predicts their firing, on held-out text.

Held-out text is the start of the corpus's train split, which the neuron store (collected on the
validation split) never saw, cut into ``n_ctx`` sequences. Explanations are written to
``STORE/autointerp.json``: ``{"meta": {...}, "neurons": {"LAYER:NEURON": Explanation}}``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from solulab.autointerp import FIRE_FRACTION, HELD_OUT_TOKENS
from solulab.autointerp import explain as explain_module
from solulab.autointerp import rules as rules_module
from solulab.autointerp import simulate as simulate_module
from solulab.autointerp.explain import TOP, Explanation, HeldOut, explain
from solulab.autointerp.rules import Rule, regex
from solulab.autointerp.simulate import Simulator
from solulab.core.model import Transformer
from solulab.errors import SolulabError
from solulab.io import atomic_write_json
from solulab.neurons.collect import check_layers, open_corpus_for, open_store
from solulab.runs import rundir
from solulab.runs.model_card import interpretable_by_layer, write_card
from solulab.runs.tracking import log_to_run
from solulab.stats import auroc, precision_recall

RESULTS_FILE = rundir.EXPLANATIONS


def verdict_version() -> str:
    """A digest of the verdict's code (its rules, how they are judged and simulated): stored
    explanations made by other code are stale."""
    digest = hashlib.sha256()
    for module in (rules_module, explain_module, simulate_module):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def held_out_activations(run_dir: Path, layers: list[int], n_tokens: int,
                         batch_size: int = 16) -> tuple[HeldOut, dict[int, np.ndarray]]:
    """Held-out token strings and each layer's interpreted activations ``[tokens, d_mlp]``."""
    store = open_store(run_dir)
    model = Transformer.from_pretrained(run_dir).eval()
    corpus = open_corpus_for(Path(run_dir), Path(store.meta["corpus"]))
    split = "train" if store.meta["split"] != "train" else "val"
    n_ctx = model.cfg.n_ctx
    ids = np.asarray(corpus.tokens(split)[:n_tokens // n_ctx * n_ctx]).astype(np.int64)
    if len(ids) == 0:
        raise SolulabError(f"the {split} split has fewer than n_ctx={n_ctx} tokens to hold out")
    seqs = torch.from_numpy(ids).view(-1, n_ctx)
    acts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(seqs), batch_size):
        for layer, a in model.neuron_activations(seqs[start:start + batch_size], layers).items():
            acts[layer].append(a.reshape(-1, a.shape[-1]).float())
    vocab = {int(i): corpus.decode([int(i)]) for i in np.unique(ids)}
    held = HeldOut([vocab[int(i)] for i in ids], n_ctx)
    return held, {layer: torch.cat(a).numpy() for layer, a in acts.items()}


def autointerp(run_dir: str | Path, layers: list[int] | None = None,
               n_tokens: int = HELD_OUT_TOKENS, fire_fraction: float = FIRE_FRACTION,
               patterns: list[str] = (), simulator: Simulator | None = None,
               progress: bool = True) -> dict[str, Explanation]:
    """Explain every neuron of the collected layers; results also go to the store.
    ``simulator`` scores each explanation by simulation (default: the rule itself)."""
    if not 0 < fire_fraction < 1:
        raise SolulabError(f"fire_fraction must be between 0 and 1, got {fire_fraction}")
    run_dir = Path(run_dir)
    store = open_store(run_dir)
    layers = store.layers if layers is None else check_layers(
        Transformer.from_pretrained(run_dir), layers)
    missing = [layer for layer in layers if layer not in store.layers]
    if missing:
        raise SolulabError(f"layers {missing} are not in the neuron store: collect them first")
    extra: list[Rule] = [regex(p) for p in patterns]
    held, acts = held_out_activations(run_dir, layers, n_tokens)
    results = {}
    bar = tqdm(total=len(layers) * store.d_mlp, disable=not progress, desc="explaining",
               unit="neuron")
    for layer in layers:
        for neuron in range(store.d_mlp):
            examples = [(e.tokens, e.fire_index) for e in store.examples(layer, neuron,
                                                                          limit=TOP)]
            fire_at = fire_fraction * store.stats(layer, neuron).max
            results[f"{layer}:{neuron}"] = explain(examples, held, acts[layer][:, neuron],
                                                   fire_at, extra, simulator)
            bar.update()
    bar.close()
    atomic_write_json(store.path / RESULTS_FILE, {
        "meta": {"held_out_tokens": len(held.tokens), "fire_fraction": fire_fraction,
                 "patterns": list(patterns),
                 "simulator": simulator.name if simulator else "rule",
                 "verdict": verdict_version(), "model_sha256": store.meta["model_sha256"]},
        "neurons": {key: e.to_dict() for key, e in results.items()}})
    if store.path == run_dir / rundir.NEURONS:  # the run's own store: its card and trackers
        counts = interpretable_by_layer({key: e.to_dict() for key, e in results.items()})
        log_to_run(run_dir, {f"neurons/layer{layer}_interpretable": k / n
                             for layer, (k, n) in counts.items()})
        write_card(run_dir)
    return results


def load_explanations(store_path: str | Path) -> dict[tuple[int, int], dict]:
    """``{(layer, neuron): explanation}`` from a store's ``autointerp.json`` (empty if none)."""
    path = Path(store_path) / RESULTS_FILE
    if not path.is_file():
        return {}
    neurons = json.loads(path.read_text())["neurons"]
    return {tuple(int(x) for x in key.split(":")): value for key, value in neurons.items()}


def ensure_explanations(run_dir: str | Path, progress: bool = True
                        ) -> dict[tuple[int, int], dict]:
    """The run's explanations, explaining its neurons unless its store has them from the
    verdict's current code and the store's model."""
    store = open_store(run_dir)
    explanations = load_explanations(store.path)
    meta = json.loads((store.path / RESULTS_FILE).read_text())["meta"] if explanations else {}
    if (meta.get("verdict") != verdict_version()
            or meta.get("model_sha256") != store.meta["model_sha256"]):
        autointerp(run_dir, progress=progress)
        explanations = load_explanations(store.path)
    return explanations


def rank_by_pattern(run_dir: str | Path, pattern: str, layers: list[int] | None = None,
                    n_tokens: int = HELD_OUT_TOKENS, fire_fraction: float = FIRE_FRACTION,
                    top: int = 20) -> list[dict]:
    """Neurons ranked by how well ``pattern`` (on each token's text) predicts where they fire
    above ``fire_fraction`` of their max on held-out text: by F1, the balance of precision and
    recall (AUROC alone puts a rarely firing neuron first when the pattern is broad: high recall
    at precision near chance), then AUROC."""
    rule = regex(pattern)
    store = open_store(run_dir)
    layers = store.layers if layers is None else layers
    held, acts = held_out_activations(Path(run_dir), layers, n_tokens)
    predicted = held.predict(rule)
    if not predicted.any():
        raise SolulabError(f"the pattern {pattern!r} matches none of the {len(predicted):,} "
                           "held-out tokens: nothing to rank (try a broader pattern)")
    ranked = []
    for layer in layers:
        for neuron in range(store.d_mlp):
            fires = acts[layer][:, neuron] > fire_fraction * store.stats(layer, neuron).max
            precision, recall = precision_recall(predicted, fires)
            f1 = (2 * precision * recall / (precision + recall)
                  if precision + recall > 0 else float("nan"))
            ranked.append({"layer": layer, "neuron": neuron, "f1": f1,
                           "auroc": auroc(predicted.astype(float), fires),
                           "precision": precision, "recall": recall})
    ranked.sort(key=lambda r: (-np.nan_to_num(r["f1"], nan=-1.0),
                               -np.nan_to_num(r["auroc"], nan=-1.0)))
    return ranked[:top]
