"""Neuron collection throughput against a bare forward pass, and against the naive way.

Measured side by side on the same model and batches:

1. bare forward: ``model(tokens)`` (logits), no gradients;
2. collection: ``Collector.update`` (forward up to the last collected neuron, then streaming
   top-k, interval samples, statistics and histograms for every neuron at every point);
   allocating the collector's fixed slots, once per collection, is timed apart; and that forward
   alone, so that collection less forward is what the streams cost;
3. naive: keep every neuron activation of every batch, then one top-k at the end: its time, and
   the memory it holds against the collector's, which does not grow with the tokens;
4. interleaved: a bare forward of each batch and the collector's update of it, in turn, batch by
   batch, so that a machine whose speed drifts within seconds slows both alike.

Kernels are compiled (the PyTorch path's ``torch.compile``) and loaded before any timing, and
freed memory is kept for reuse (``allocator``): with glibc's default, whether a batch's buffers
are page-faulted in anew changes from run to run (0 to 30,000 faults a batch, here), which moved
the ratio by up to a fifth either way. ``--default-allocator`` leaves glibc's default, as the
command line does.

    python benchmarks/collect_throughput.py [--n-layers 2 --d-model 256 --batches 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from allocator import keep_freed_memory

from solulab import ModelConfig, Transformer
from solulab.neurons.collect import Collector
from solulab.neurons.settings import StoreSettings


def slot_bytes(collector: Collector) -> int:
    """The memory of the streams' slots and statistics, allocated when the collector is."""
    total = 0
    for stream in collector.streams.values():
        for value in vars(stream).values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
            elif hasattr(value, "ids"):
                total += sum(t.numel() * t.element_size() for t in vars(value).values()
                             if isinstance(t, torch.Tensor))
    return total


def batch_buffer_bytes(collector: Collector) -> int:
    """The memory of the batch-sized tensors kept from the first batch on (``scratch``, which
    the streams share)."""
    return collector.scratch.nbytes()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-ctx", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--act", default="solu_ln")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as the command line does (default: keep "
                        "freed memory for reuse)")
    parser.add_argument("--stacked", choices=("auto", "yes", "no"), default="auto",
                        help="all points in one stream (auto: where the C pass cannot run, "
                        "as collect does)")
    args = parser.parse_args()
    if not args.default_allocator:
        keep_freed_memory()

    cfg = ModelConfig(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.d_model // 64,
                      n_ctx=args.n_ctx, d_vocab=4096, act_fn=args.act)
    device = torch.device(args.device)
    model = Transformer(cfg).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 4096, (args.batch, args.n_ctx), generator=gen).to(device)
               for _ in range(args.batches)]
    positions = [torch.arange(args.batch * args.n_ctx, device=device).view(args.batch, -1)
                 + i * batches[0].numel()
                 for i in range(args.batches)]
    layers = list(range(cfg.n_layers))
    n_tokens = args.batches * batches[0].numel()

    def bare() -> None:
        with torch.no_grad():
            for tokens in batches:
                model(tokens)

    stacked = None if args.stacked == "auto" else args.stacked == "yes"

    def new_collector() -> Collector:
        return Collector(model, layers, StoreSettings(), seed=0, stacked=stacked)

    def collect(collector: Collector) -> None:
        for tokens, pos in zip(batches, positions):
            collector.update(tokens, pos)

    def interleaved() -> float:
        """Bare forward time over collection time, each batch timed both ways in turn (which
        goes first alternates, so neither always finds the weights warm)."""
        collector = new_collector()
        seconds = {"bare": 0.0, "collect": 0.0}

        def timed(name: str, fn) -> None:
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            seconds[name] += time.perf_counter() - start

        for i, (tokens, pos) in enumerate(zip(batches, positions)):
            steps = [("bare", lambda: model(tokens)),
                     ("collect", lambda: collector.update(tokens, pos))]
            with torch.no_grad():
                for name, fn in steps if i % 2 == 0 else steps[::-1]:
                    timed(name, fn)
        return seconds["bare"] / seconds["collect"]

    kept: list[torch.Tensor] = []

    def naive() -> None:
        kept.clear()
        hooks = [f"blocks.{layer}.mlp.hook_{p}" for layer in layers for p in ("mid", "post")
                 if cfg.act_fn.endswith("_ln") or p == "post"]
        with torch.no_grad():
            for tokens in batches:
                _, cache = model.run_with_cache(tokens, hooks)
                kept.append(torch.stack([cache[h].reshape(-1, cfg.d_mlp) for h in hooks]))
            everything = torch.cat(kept, dim=1)  # [points, tokens, d_mlp]
            torch.topk(everything, StoreSettings.k, dim=1)

    with torch.no_grad():  # compile and load every kernel before the clock starts
        model(batches[0])
        warm = new_collector()
        warm.update(batches[0], positions[0])
    hooks = list(warm.hooks.values())  # the points a collection records
    del warm  # its slots are not to stay allocated through the timing

    def forward_to_last_neuron() -> None:
        with torch.no_grad():
            for tokens in batches:
                model.activations(tokens, hooks)

    times: dict[str, list[float]] = {
        "bare forward": [], "collection": [], "its forward (to the last neuron)": [],
        "naive (cache all, then top-k)": []}
    set_up = []  # the collector's slots, allocated once per collection: timed apart
    for _ in range(args.rounds):  # alternate so drift hits every variant alike
        start = time.perf_counter()
        collector = new_collector()
        set_up.append(time.perf_counter() - start)
        for name, fn in zip(times, (bare, lambda: collect(collector), forward_to_last_neuron,
                                    naive)):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{cfg.n_layers} layers, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, {cfg.act_fn}, "
          f"{n_tokens:,} tokens per round, median of {args.rounds} rounds, "
          f"torch threads {torch.get_num_threads()}, device {device}, "
          f"{'points stacked in one stream' if collector.stacked else 'a stream per point'}")
    base = medians["bare forward"]
    for name, seconds in medians.items():
        print(f"  {name:<32} {n_tokens / seconds:>10,.0f} tokens/s   "
              f"x bare forward {base / seconds:.3f}")
    per_batch = {name: seconds * 1e3 / args.batches for name, seconds in medians.items()}
    forward = per_batch["its forward (to the last neuron)"]
    print(f"  per batch: bare forward {per_batch['bare forward']:.1f} ms, collection "
          f"{per_batch['collection']:.1f} ms = its forward {forward:.1f} + the streams "
          f"{per_batch['collection'] - forward:.1f}")
    ratios = sorted(b / c for b, c in zip(times["bare forward"], times["collection"]))
    print(f"  collection / bare forward, round by round: median {statistics.median(ratios):.3f} "
          f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}; the machine's drift cancels within a round)")
    paired = sorted(interleaved() for _ in range(args.rounds))
    print(f"  collection / bare forward, batch by batch: median {statistics.median(paired):.3f} "
          f"(range {paired[0]:.3f}-{paired[-1]:.3f} over {args.rounds} rounds)")
    naive_bytes = sum(t.numel() * t.element_size() for t in kept)
    slots, buffers = slot_bytes(collector), batch_buffer_bytes(collector)
    print(f"  memory held: collector {(slots + buffers) / 2**20:.1f} MiB, fixed (slots "
          f"{slots / 2**20:.1f} MiB, set up in {statistics.median(set_up) * 1e3:.0f} ms once per "
          f"collection, outside the ratios; batch buffers {buffers / 2**20:.1f} MiB, from the "
          f"first batch on), naive {naive_bytes / 2**20:.1f} MiB (grows with tokens)")


if __name__ == "__main__":
    main()
