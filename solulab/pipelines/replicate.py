"""``solulab replicate``: the paper's central comparison at the size a budget affords.

It times a training step of each activation at growing widths of ``--layers`` layers on this
machine, plans the largest size whose models still get ``TOKENS_PER_PARAM`` tokens per
non-embedding parameter inside the budget with ``--seeds`` seeds of it (and the two sizes below
it, one seed each, so the baseline has a scaling law), trains GELU, SoLU-LN and the
LayerNorm-only ablation with identical settings, collects every seed's largest models' neurons,
explains them automatically, creates the blinded study over them (neurons of every seed and,
stratified, of every layer), and writes ``results.md``.
Every stage keeps what it finished, so running the command again resumes; once annotators have
rated, running it again adds the blinded fractions, kappas and Figures 4 and 9.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from solulab.autointerp.run import ensure_explanations
from solulab.core.model import Transformer
from solulab.data import Corpus
from solulab.distributed import resolve_device
from solulab.errors import SolulabError
from solulab.io import atomic_write, atomic_write_json
from solulab.neurons.collect import ensure_store
from solulab.neurons.store import NeuronStore
from solulab.pipelines.replicate_plan import (
    OVERHEAD,
    SIZES_IN_FIT,
    TOKENS_PER_PARAM,
    ReplicationPlan,
    Request,
    ladder,
    plan_cost,
    plan_settings,
    read_plan_file,
)
from solulab.pipelines.replicate_results import write_results
from solulab.study.create import create_study
from solulab.sweep import SweepPlan, run_sweep
from solulab.sweep.compare import compare_sweep, plot_comparison
from solulab.training.trainer import TrainConfig, build_optimizer, training_step

PLAN_FILE = "replicate.json"
LINKS_FILE = "annotator-links.txt"
TIMINGS_FILE = "timings.json"


def seconds_per_token(size: str, act: str, request: Request, d_vocab: int,
                      device: torch.device, min_seconds: float = 1.0) -> tuple[float, int]:
    """Seconds per training token of one size and activation, timed on random tokens (as
    training runs: forward, loss, backward, clipping, AdamW); also the non-embedding
    parameter count."""
    cfg = SweepPlan([size], [act], {"n_ctx": request.n_ctx}, {}).model_config(size, act, d_vocab)
    model = Transformer(cfg).to(device)
    optimizer = build_optimizer(model, request.lr, TrainConfig.weight_decay, TrainConfig.betas)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, d_vocab, (request.batch_size, request.n_ctx),
                           generator=generator).to(device)

    def step() -> None:
        training_step(model, optimizer, [tokens], TrainConfig.grad_clip)

    step()  # warm-up: allocation, kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - start < min_seconds and n < 50:
        step()
        n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return elapsed / (n * tokens.numel()), model.n_params(non_embedding=True)


def make_plan(request: Request, log: Callable[[str], None]) -> ReplicationPlan:
    """Time each size up the ladder and keep the largest that is trained well enough."""
    corpus = Corpus(request.corpus)
    device = resolve_device(request.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.monotonic()
    cost: dict[str, float] = {}
    params: dict[str, int] = {}
    chosen: tuple[list[str], int] | None = None
    sizes_to_try = ladder(request.layers)
    for i, size in enumerate(sizes_to_try):
        timings = [seconds_per_token(size, act, request, corpus.vocab_size, device)
                   for act in request.acts]
        cost[size] = sum(t for t, _ in timings)
        params[size] = timings[0][1]
        sizes = sizes_to_try[max(0, i - SIZES_IN_FIT + 1):i + 1]
        left = request.budget_minutes * 60 - (time.monotonic() - started)
        tokens = int(left / (OVERHEAD * plan_cost(cost, sizes, request.seeds)))
        enough = tokens >= TOKENS_PER_PARAM * params[size]
        log(f"      {size}: {1 / cost[size] * len(request.acts):,.0f} tokens/s per model, "
            f"{params[size]:,} non-embedding parameters; {request.seeds} seed(s) of it with "
            f"{', '.join(sizes[:-1]) or 'none'} below it: {tokens:,} tokens each "
            f"({tokens / params[size]:.1f} per parameter)")
        if not enough:
            break
        chosen = (sizes, tokens)
    undertrained = chosen is None
    if chosen is None:  # not even the smallest fits: train it on what the budget allows
        size = sizes_to_try[0]
        left = request.budget_minutes * 60 - (time.monotonic() - started)
        tokens = int(left / (OVERHEAD * request.seeds * cost[size]))
        chosen = ([size], max(request.batch_size * request.n_ctx, tokens))
    sizes, tokens = chosen
    return ReplicationPlan(replace(request, device=device.type), sizes, tokens, cost, params,
                           torch.get_num_threads(), undertrained)


def load_plan(out: Path, request: Request) -> ReplicationPlan | None:
    """The saved plan of ``out``; an error if it was made for another request."""
    path = out / PLAN_FILE
    if not path.is_file():
        return None
    plan = read_plan_file(path)
    planned = plan_settings(plan.request)
    differ = [f"{k}: {planned[k]!r} -> {v!r}" for k, v in plan_settings(request).items()
              if planned[k] != v]
    if differ:
        raise SolulabError(f"{out} holds a replication planned with other settings "
                           f"({'; '.join(differ)}); use another --out")
    return plan


def write_links(out: Path, links: dict[str, str]) -> Path:
    """Each annotator's secret link, readable by the owner only."""
    path = out / LINKS_FILE
    text = "".join(f"{name}\t{link}\n" for name, link in links.items())
    atomic_write(path, lambda f: f.write(text.encode()), mode=0o600)
    return path


def add_train_minutes(out: Path, minutes: float) -> float:
    """Training time over every invocation, kept in ``timings.json``; returns the total."""
    path = out / TIMINGS_FILE
    total = (json.loads(path.read_text())["train_minutes"] if path.is_file() else 0.0) + minutes
    atomic_write_json(path, {"train_minutes": total})
    return total


def seed_sweep(out: Path, seed: int) -> Path:
    """Where the largest size's runs of an extra seed live (the first seed's are the sweep's)."""
    return out / "seeds" / f"seed{seed}"


def largest_runs(out: Path, plan: ReplicationPlan) -> dict[int, dict[str, Path]]:
    """``{seed: {act: run}}`` of the largest size."""
    roots = {seed: out / "sweep" if k == 0 else seed_sweep(out, seed)
             for k, seed in enumerate(plan.seed_values)}
    return {seed: {act: root / plan.largest / act for act in plan.request.acts}
            for seed, root in roots.items()}


def study_models(runs: dict[int, dict[str, Path]]) -> dict[str, Path]:
    """The study's models: one per activation, or ``act-seedN`` per seed when there are
    several."""
    several = len(runs) > 1
    return {f"{act}-seed{seed}" if several else act: run.resolve()
            for seed, by_act in runs.items() for act, run in by_act.items()}


def replicate(request: Request, out: Path, saved_plan: ReplicationPlan | None = None,
              base_url: str = "http://127.0.0.1:8000", progress: bool = True,
              log: Callable[[str], None] = print, trackers: tuple[str, ...] = ()) -> Path:
    """Plan (or continue, or take ``saved_plan``, another replication's), train, compare,
    collect, explain, create the study, write ``results.md``; returns its path. Every model is
    logged to ``trackers`` (``solulab.runs.tracking``)."""
    out = Path(out)
    plan = load_plan(out, request)
    log("[1/6] plan")
    if plan is None:
        if saved_plan is not None:
            plan = replace(saved_plan, request=replace(saved_plan.request,
                                                       corpus=Path(request.corpus).resolve()))
            log("      the saved plan given, not timed again")
        else:
            log(f"      timing training steps of {', '.join(request.acts)} on this machine")
            plan = make_plan(request, log)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / PLAN_FILE, plan.to_json())
    else:
        log(f"      continuing the plan in {out / PLAN_FILE}")
    asked = plan.request
    log(f"      sizes {', '.join(plan.sizes)} x {', '.join(asked.acts)}, {plan.tokens:,} tokens "
        f"each, about {plan.predicted_minutes():.0f} minutes of training")
    if plan.undertrained:
        log(f"      warning: even {plan.largest} gets fewer than {TOKENS_PER_PARAM} tokens per "
            "parameter in this budget; its neurons may say little")

    log("[2/6] train, identical settings")
    sweep = out / "sweep"
    started = time.monotonic()
    train_cfg = replace(plan.train_config(), log=trackers)
    run_sweep(Path(asked.corpus), sweep, plan.sizes, asked.acts, {"n_ctx": asked.n_ctx},
              train_cfg, progress=progress, log=log)
    for seed in plan.seed_values[1:]:
        log(f"      {plan.largest}, seed {seed}")
        run_sweep(Path(asked.corpus), seed_sweep(out, seed), [plan.largest], asked.acts,
                  {"n_ctx": asked.n_ctx}, replace(train_cfg, seed=seed),
                  progress=progress, log=log)
    train_minutes = add_train_minutes(out, (time.monotonic() - started) / 60)

    log("[3/6] compare: scaling law of the baseline, size-equivalent multipliers")
    comparison = compare_sweep(sweep)
    plot_comparison(comparison, out / "figures")

    runs = largest_runs(out, plan)
    log(f"[4/6] neurons of the {plan.largest} models ({asked.seeds} seed(s)): up to "
        f"{asked.collect_tokens:,} validation tokens each")
    for by_act in runs.values():
        for run in by_act.values():
            store = NeuronStore.open(ensure_store(run, Path(asked.corpus), asked.collect_tokens,
                                                  progress))
            ensure_explanations(run, progress)
            log(f"      {run}: {store.meta['n_tokens']:,} tokens collected")

    study = out / "study.sqlite"
    log("[5/6] blinded study")
    if not study.exists():
        per_seed = -(-asked.neurons_per_model // asked.seeds)
        links = create_study(study_models(runs), study, per_seed, seed=None,
                             annotators=asked.annotators)
        path = write_links(out, links.links(base_url))
        log(f"      created {study}: {per_seed * asked.seeds} neurons per activation, from every "
            f"seed and layer; each annotator's secret link is in {path}")
    log(f"      serve it: solulab serve --study {study}")

    log("[6/6] results")
    results = write_results(out, plan, comparison, runs, study, train_minutes)
    log(f"      {results}")
    return results
