"""``solulab neurons``: collect a run's neuron store, show a neuron, trace one on any text."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from solulab.cli.exits import is_main_process, reports_errors, stops_cleanly
from solulab.neurons.settings import (
    COLLECT_BATCH_SIZE,
    COLLECT_SPLIT,
    COLLECT_TOKENS,
    StoreSettings,
)

app = typer.Typer(help="Collect and read per-neuron dataset examples.", no_args_is_help=True)


def parse_layers(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--layers takes comma-separated integers, got {text!r}")


@app.command("collect")
@reports_errors
def collect_command(
    run: Path = typer.Argument(..., help="Run directory."),
    corpus: Optional[Path] = typer.Option(None, help="Corpus directory (default: the run's)."),
    split: str = typer.Option(COLLECT_SPLIT, help="Corpus split."),
    tokens: int = typer.Option(COLLECT_TOKENS, help="Tokens to stream through the model."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers (default: all)."),
    k: int = typer.Option(StoreSettings.k, help="Top examples kept per neuron and point."),
    samples: int = typer.Option(StoreSettings.samples,
                                help="Examples sampled per activation interval."),
    intervals: int = typer.Option(StoreSettings.n_intervals,
                                  help="Activation intervals from min to max."),
    threshold: float = typer.Option(StoreSettings.threshold,
                                    help="Report the fraction of tokens above this."),
    batch_size: int = typer.Option(COLLECT_BATCH_SIZE, help="Sequences per forward pass."),
    out: Optional[Path] = typer.Option(None, help="Store directory (default RUN/neurons)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda if present)."),
):
    """Stream the model over a corpus split and write the neuron store (torchrun-aware)."""
    from solulab.neurons.collect import collect
    from solulab.neurons.store import NeuronStore

    with stops_cleanly("no neuron store was written"):
        settings = StoreSettings(k=k, samples=samples, n_intervals=intervals,
                                 threshold=threshold)
        path = collect(run, corpus, out, split, tokens, parse_layers(layers), settings,
                       batch_size=batch_size, device=device)
    if is_main_process():
        typer.echo(f"neuron store: {path}")
        meta = NeuronStore.open(path).meta
        collected, whole = meta["n_tokens"], tokens // meta["n_ctx"] * meta["n_ctx"]
        if collected < whole:  # fewer than the whole sequences asked for
            typer.echo(f"note: collected {collected:,} tokens, not {tokens:,}: the {split} split "
                       "holds no more whole sequences of the model's context", err=True)


@app.command()
@reports_errors
def show(
    run: Path = typer.Argument(..., help="Run directory (or a store directory)."),
    layer: int = typer.Option(..., help="Layer."),
    neuron: int = typer.Option(..., help="Neuron index."),
    post_ln: bool = typer.Option(False, "--post-ln", help="Read hook_post, after the extra LN."),
    limit: int = typer.Option(20, help="Top examples to print."),
    intervals: bool = typer.Option(False, "--intervals", help="Also print interval samples."),
):
    """Print a neuron's top examples, shaded by activation, its statistics and logit effects."""
    from solulab.autointerp.explain import Explanation
    from solulab.autointerp.run import load_explanations
    from solulab.neurons.collect import open_store
    from solulab.neurons.terminal import (
        format_examples,
        format_logit_effects,
        format_stats,
        use_colour,
    )

    store = open_store(run)
    point = "post" if post_ln else store.main_point
    colour = use_colour()
    stats = store.stats(layer, neuron, point)
    other = [p for p in store.points if p != point]
    label = {"mid": "pre-LN", "post": "post-LN"}
    typer.echo(f"layer {layer} neuron {neuron}, {label[point] if other else 'activation'} "
               f"({store.meta['act_fn']})")
    typer.echo(format_stats(stats))
    typer.echo(f"top {limit} examples:")
    examples = store.examples(layer, neuron, point, limit)
    for line in format_examples(examples, stats.max, colour, label[other[0]] if other else None):
        typer.echo(line)
    if intervals:
        for (low, high), sampled in store.interval_examples(layer, neuron, point):
            typer.echo(f"interval [{low:+.3f}, {high:+.3f}):")
            for line in format_examples(sampled, stats.max, colour):
                typer.echo(line)
    for line in format_logit_effects(store.logit_effects(layer, neuron)):
        typer.echo(line)
    explanation = load_explanations(store.path).get((layer, neuron))
    typer.echo("automated explanation: " + (
        Explanation(**explanation).why() if explanation
        else f"none yet (run `solulab autointerp {run}`)"))


@app.command("trace")
@reports_errors
def trace_command(
    run: Path = typer.Argument(..., help="Run directory."),
    text: str = typer.Argument(..., help="Any text."),
    layer: int = typer.Option(..., help="Layer."),
    neuron: int = typer.Option(..., help="Neuron index."),
    post_ln: bool = typer.Option(False, "--post-ln", help="Read hook_post, after the extra LN."),
):
    """Show a neuron's activation on every token of TEXT."""
    import numpy as np

    from solulab.neurons.terminal import shade, use_colour
    from solulab.neurons.trace import trace
    from solulab.visible import visible

    tokens, acts, other = trace(run, text, layer, neuron, post_ln)
    scale = float(np.max(acts)) if len(acts) else 0.0
    typer.echo(shade(tokens, acts, scale, int(np.argmax(acts)), use_colour()))
    other_name = "pre-LN (hook_mid)" if post_ln else "post-LN (hook_post)"
    this_name = "post-LN (hook_post)" if post_ln else ("pre-LN (hook_mid)" if other is not None
                                                       else "activation")
    header = f"{this_name:>10}" + (f"   {other_name}" if other is not None else "")
    typer.echo(f"{'token':<20} {header}")
    for i, token in enumerate(tokens):
        extra = "" if other is None else f"   {other[i]:+10.4f}"
        typer.echo(f"{visible(repr(token)):<20} {acts[i]:+10.4f}{extra}")
