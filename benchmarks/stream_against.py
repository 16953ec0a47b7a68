"""The neuron streams of this tree against the same code at another commit, in one process.

``PointStream`` (``solulab/neurons``) as it is here and as it was at ``REV`` take the same
batches of activations of the default model of ``collect_throughput.py`` (layer 1, ``hook_mid``
kept with ``hook_post`` beside it; ``--stacked``: its four points side by side in one stream, as
a collection stacks them where the C pass cannot run), batch by batch, which goes first
alternating. The two run side by side in one process: on a machine whose speed drifts between
processes by more than a change is worth, the ratio of their times is the figure to read, not
two runs of ``collect_throughput.py``. Both keep the same examples; this compares only their
time. Both compile their kernels afresh, for these shapes, in a cache of this run's own (a
kernel cached by another process may have been compiled for other shapes).

    python benchmarks/stream_against.py REV [--native] [--stacked] [--reps 5] [--batches 12]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_KERNEL_CACHE = tempfile.TemporaryDirectory(prefix="stream-against-")  # removed at exit
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _KERNEL_CACHE.name
import torch  # noqa: E402  (after the cache is set)

from solulab import ModelConfig, Transformer  # noqa: E402
from solulab.neurons import c_stats  # noqa: E402
from solulab.neurons.stream import PointStream  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "solulab_neurons_at_rev"
HOOKS = ("blocks.1.mlp.hook_mid",)
ALL_POINTS = tuple(f"blocks.{layer}.mlp.hook_{point}" for layer in (0, 1)
                   for point in ("mid", "post"))


def stream_class_at(rev: str, folder: Path) -> type:
    """``PointStream`` of ``solulab/neurons`` at ``rev``, as a package of its own in ``folder``
    (its imports of ``solulab.neurons`` rewritten to that package; the rest is this tree's)."""
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "solulab/neurons"],
                             cwd=ROOT, capture_output=True, text=True)
    if listing.returncode or not listing.stdout:
        raise SystemExit(f"{rev!r}: not a commit of this repository with solulab/neurons "
                         f"({listing.stderr.strip() or 'no such folder there'})")
    files = listing.stdout.split()
    for name in files:
        text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        target = folder / PACKAGE / Path(name).relative_to("solulab/neurons")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("solulab.neurons", PACKAGE))
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{PACKAGE}.stream").PointStream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the commit to compare with, e.g. HEAD~3")
    parser.add_argument("--native", action="store_true",
                        help="the C pass on both sides (default: the PyTorch path)")
    parser.add_argument("--stacked", action="store_true",
                        help="the model's four points side by side in one stream")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()

    cfg = ModelConfig(n_layers=2, d_model=256, n_heads=4, n_ctx=256, d_vocab=4096,
                      act_fn="solu_ln")
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, 4096, (16, 256), generator=gen) for _ in range(args.batches)]
    points = ALL_POINTS if args.stacked else HOOKS
    with torch.no_grad():
        caches = [model.run_with_cache(t, ALL_POINTS, stop_at_layer=2)[1] for t in tokens]
    values = [torch.cat([cache[hook] for hook in points], -1) for cache in caches]
    others = [torch.cat([cache[_other(hook)] for hook in points], -1) for cache in caches]
    del caches
    positions = [torch.arange(t.numel()).view(t.shape) + i * t.numel()
                 for i, t in enumerate(tokens)]

    with tempfile.TemporaryDirectory() as folder:
        classes = {"here": PointStream, args.rev: stream_class_at(args.rev, Path(folder))}
        if not args.native:
            for cls in classes.values():
                sys.modules[cls.__module__].c_stats.ready = lambda v: False
        elif not c_stats.ready(torch.zeros(1)):
            raise SystemExit("--native: the C pass cannot be built here")

        def feed(stream, i: int) -> float:
            start = time.perf_counter()
            with torch.no_grad():
                stream.update(values[i], tokens[i], positions[i], others[i])
            return time.perf_counter() - start

        def new_streams(seed: int) -> dict:
            return {name: cls(cfg.d_mlp, 40, 20, 4, 5, 0.5, with_other=True, seed=seed,
                              points=len(points))
                    for name, cls in classes.items()}

        for stream in new_streams(args.reps).values():  # compile and warm both
            feed(stream, 0)
        print(f"PointStream.update, {'C pass' if args.native else 'PyTorch path'}, "
              f"{len(points)} [{tokens[0].numel()}, {cfg.d_mlp}] point(s) with their other point "
              f"in one stream, {args.batches} "
              f"batches, torch threads {torch.get_num_threads()}; here / {args.rev}:")
        totals = []
        for rep in range(args.reps):
            streams = new_streams(rep)
            seconds: dict[str, list[float]] = {name: [] for name in classes}
            for i in range(args.batches):
                order = list(classes) if (i + rep) % 2 == 0 else list(classes)[::-1]
                for name in order:
                    seconds[name].append(feed(streams[name], i))
            here, there = seconds["here"], seconds[args.rev]
            totals.append(sum(here) / sum(there))
            print(f"  round {rep}: {sum(here) * 1e3:.0f} ms / {sum(there) * 1e3:.0f} ms = "
                  f"{totals[-1]:.3f} (first batch {here[0] * 1e3:.0f} / {there[0] * 1e3:.0f} ms, "
                  f"later batches {statistics.mean(here[1:]) * 1e3:.1f} / "
                  f"{statistics.mean(there[1:]) * 1e3:.1f} ms)")
        print(f"  median {statistics.median(totals):.3f} (range {min(totals):.3f}-"
              f"{max(totals):.3f})")


def _other(hook: str) -> str:
    """The hook of the other point of ``hook``'s layer (mid <-> post)."""
    layer, point = hook.rsplit("_", 1)
    return f"{layer}_{'post' if point == 'mid' else 'mid'}"


if __name__ == "__main__":
    main()
