"""The model card: ``README.md`` in a run directory (or an export), in the Hugging Face Hub layout.

YAML metadata first (library, license, tags, datasets), then what the model is, how it was
trained, how interpretable its neurons are and how that was measured, its evals, and how to load
it. Every number is read from the run's own files (``run.json``, ``config.json``, ``evals.json``,
the neuron store's explanations), and the card is rewritten whenever one of them changes, so
it never disagrees with them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from solulab.io import atomic_write_text
from solulab.runs import rundir
from solulab.stats import wilson_interval

LICENSE = "mit"


def interpretable_by_layer(explanations: dict[str, dict]) -> dict[int, tuple[int, int]]:
    """``{layer: (interpretable, explained)}`` from an ``autointerp.json``'s ``neurons``."""
    counts: dict[int, list[int]] = {}
    for key, verdict in explanations.items():
        layer = int(key.split(":")[0])
        count = counts.setdefault(layer, [0, 0])
        count[0] += bool(verdict["interpretable"])
        count[1] += 1
    return {layer: (k, n) for layer, (k, n) in sorted(counts.items())}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _corpus_name(record: dict[str, Any]) -> str | None:
    """The corpus's sources as its manifest names them (the built-in one: the Python standard
    library's source), else the corpus directory's name."""
    if not record.get("corpus"):
        return None
    corpus = Path(record["corpus"])
    sources = _read_json(corpus / "manifest.json").get("sources")
    return ", ".join(sources) if sources else corpus.name


def _metadata(config: dict[str, Any], corpus: str | None) -> str:
    tags = ["solulab", "softmax-linear-units", "interpretability", config.get("act_fn", "")]
    lines = ["---", "library_name: solulab", f"license: {LICENSE}", "tags:"]
    lines += [f"- {tag}" for tag in tags if tag]
    if corpus:
        lines += ["datasets:", f"- {json.dumps(corpus)}"]
    return "\n".join(lines + ["---", ""])


def _architecture(config: dict[str, Any], record: dict[str, Any]) -> list[str]:
    rows = [("layers", config.get("n_layers")), ("d_model", config.get("d_model")),
            ("d_mlp (neurons per layer)", config.get("d_mlp")),
            ("attention heads", config.get("n_heads")), ("context", config.get("n_ctx")),
            ("vocabulary", config.get("d_vocab")), ("positions", config.get("positional")),
            ("MLP activation", config.get("act_fn")),
            ("non-embedding parameters", record.get("n_params"))]
    return ["## Architecture", "", "| | |", "|---|---|"] + [
        f"| {name} | {value:,} |" if isinstance(value, int) else f"| {name} | {value} |"
        for name, value in rows if value is not None] + [""]


def _training(record: dict[str, Any], corpus: str | None) -> list[str]:
    train = record.get("train") or {}
    if not train:
        source = record.get("imported_from")
        return ["## Training", "", f"Imported from {source}; not trained by solulab." if source
                else "No training record.", ""]
    n_ctx = (record.get("model") or {}).get("n_ctx", 0)
    batch = train["batch_size"] * train.get("grad_accum", 1) * record.get("world_size", 1) \
        // max(1, train.get("tp", 1))
    steps = record.get("total_steps") or 0
    lines = ["## Training", "",
             f"{steps:,} steps of {batch} sequences of {n_ctx} tokens ({steps * batch * n_ctx:,} "
             f"tokens) on {corpus or 'an unrecorded corpus'}, AdamW at learning rate "
             f"{train['lr']:g} (warmup, cosine decay), weight decay {train['weight_decay']:g}, "
             f"seed {train['seed']}."]
    if record.get("val_loss") is not None:
        lines.append(f"Validation loss at the end: **{record['val_loss']:.4f}** nats per token.")
    else:
        lines.append("Training has not finished.")
    return lines + [""]


def _neurons(run_dir: Path) -> list[str]:
    lines = ["## Neurons", ""]
    verdicts = _read_json(run_dir / rundir.NEURONS / rundir.EXPLANATIONS)
    if not verdicts.get("neurons"):
        return lines + ["Not measured yet: `solulab neurons collect RUN` then `solulab "
                        "autointerp run RUN` give the fraction of interpretable neurons.", ""]
    held_out = (verdicts.get("meta") or {}).get("held_out_tokens")
    lines += ["Fraction of neurons whose automated explanation holds on held-out text (solulab's "
              "verdict: an explanation from the neuron's top dataset examples, kept only if it "
              f"predicts where the neuron fires on {held_out or 'held-out'} tokens it never saw; "
              "95% Wilson interval):", "", "| layer | interpretable | 95% interval |",
              "|---|---|---|"]
    for layer, (k, n) in interpretable_by_layer(verdicts["neurons"]).items():
        low, high = wilson_interval(k, n)
        lines.append(f"| {layer} | {k} of {n} ({k / n:.1%}) | {low:.1%} to {high:.1%} |")
    return lines + ["", "The verdict agrees with blinded human raters at Cohen's kappa 0.6 to 0.9 "
                    "on the models where that was measured (the project's BENCHMARKS.md).", ""]


def _evals(run_dir: Path) -> list[str]:
    evals = _read_json(run_dir / rundir.EVALS)
    if not evals:
        return []
    lines = ["## Evals", "", "| task | accuracy | standard error | items |", "|---|---|---|---|"]
    for task, result in sorted(evals.items()):
        lines.append(f"| {task} | {result['accuracy']:.3f} | {result.get('stderr', 0):.3f} | "
                     f"{result.get('n', '')} |")
    return lines + [""]


def _usage(name: str) -> list[str]:
    return ["## Use", "", "```python", "from solulab import Transformer",
            f"model = Transformer.from_pretrained({name!r})  # this folder",
            "logits, cache = model.run_with_cache(tokens)  # cache['blocks.0.mlp.hook_post']",
            "```", "",
            "TransformerLens: `solulab export THIS_FOLDER OUT --to transformerlens` writes a "
            "checkpoint and prints the lines that load it. Neurons: `solulab neurons show "
            "THIS_FOLDER --layer 0 --neuron 0`.", ""]


def card_text(run_dir: Path, export: str | None = None) -> str:
    """The card of ``run_dir`` from its files; ``export`` says how to load an exported copy."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / rundir.CONFIG)
    record = rundir.read_record(run_dir) or {}
    corpus = _corpus_name(record)
    layers = config.get("n_layers", "?")
    act = config.get("act_fn", "unknown")
    title = [f"# {run_dir.name}: a {layers}-layer language model with {act} MLP neurons", "",
             "Trained with solulab, the system of *Softmax Linear Units* (Elhage et al., 2022): "
             "SoLU models and their GELU baselines are trained with identical settings so that "
             "how readable their neurons are can be compared.", ""]
    if export:
        title += ["## This folder", "", export, ""]
    body = (title + _architecture(config, record) + _training(record, corpus)
            + _neurons(run_dir) + _evals(run_dir) + ([] if export else _usage(run_dir.name)))
    return _metadata(config, corpus) + "\n".join(body)


def write_card(run_dir: str | Path, out: str | Path | None = None,
               export: str | None = None) -> Path:
    """Write (or refresh) ``RUN/README.md``, or the card of an export of the run into ``out``
    (``export``: how to load it); returns its path."""
    path = Path(out or run_dir) / rundir.CARD
    atomic_write_text(path, card_text(Path(run_dir), export))
    return path
