"""Training speed against nanoGPT's ``model.py`` at the same configuration, side by side.

    python benchmarks/vs_nanogpt.py --nanogpt PATH/TO/nanoGPT   # the directory with model.py

nanoGPT is read from the path given (it is not part of solulab). Both models: GELU, learned
positions, tied embeddings, biases (none on the logits: nanoGPT's ``lm_head`` has none), no
dropout, the same sizes, the same random tokens. Each trains as its own training code does: its
own loss (solulab's ``return_loss``, nanoGPT's ``targets``), its own optimizer (solulab's
``build_optimizer``, nanoGPT's ``configure_optimizers``; AdamW with nanoGPT's default settings
for both) and gradient clipping at 1.0. A second nanoGPT model is timed alongside as the noise
floor. Steps alternate between the models in rounds (the order reversed every other round); each
process gives the median over rounds of each model's step time, and the ratio solulab / nanoGPT;
the figure is the median of that ratio over several fresh processes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from solulab import ModelConfig, Transformer
from solulab.training.trainer import build_optimizer

LR, WEIGHT_DECAY, BETAS = 6e-4, 0.1, (0.9, 0.95)  # nanoGPT's train.py defaults


def load_nanogpt(path: Path):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path / "model.py")
    if spec is None or not (path / "model.py").is_file():
        sys.exit(f"no model.py in {path}: give --nanogpt the nanoGPT checkout")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanogpt_step(module, args, tokens: torch.Tensor):
    cfg = module.GPTConfig(block_size=args.n_ctx, vocab_size=args.vocab, n_layer=args.n_layers,
                           n_head=args.d_model // 64, n_embd=args.d_model, dropout=0.0,
                           bias=True)
    model = module.GPT(cfg)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter counts
        optimizer = model.configure_optimizers(WEIGHT_DECAY, LR, BETAS, "cpu")
    targets = torch.roll(tokens, -1, dims=1)
    return train_step(model, optimizer, lambda: model(tokens, targets)[1])


def solulab_step(args, tokens: torch.Tensor):
    cfg = ModelConfig(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.d_model // 64,
                      n_ctx=args.n_ctx, d_vocab=args.vocab, act_fn="gelu", positional="learned",
                      tie_embeddings=True, unembed_bias=False)  # nanoGPT's lm_head has no bias
    model = Transformer(cfg)
    optimizer = build_optimizer(model, LR, WEIGHT_DECAY, BETAS)
    return train_step(model, optimizer, lambda: model(tokens, return_loss=True))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn):
    def step() -> None:
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def measure(args) -> dict[str, float]:
    """One process's medians: ms per step of each model, the ratio and the noise floor."""
    module = load_nanogpt(args.nanogpt)
    torch.manual_seed(0)
    tokens = torch.randint(0, args.vocab, (args.batch, args.n_ctx))
    steps = {"solulab": solulab_step(args, tokens), "nanoGPT": nanogpt_step(module, args, tokens),
             "nanoGPT'": nanogpt_step(module, args, tokens)}
    for step in steps.values():  # warm up
        timed(step, 2)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            seconds[name].append(timed(steps[name], args.steps_per_round))
    per_step = {name: statistics.median(s) for name, s in seconds.items()}
    return {"solulab_ms": per_step["solulab"] * 1000, "nanogpt_ms": per_step["nanoGPT"] * 1000,
            "second_nanogpt_ms": per_step["nanoGPT'"] * 1000,
            "ratio": per_step["nanoGPT"] / per_step["solulab"],
            "floor": per_step["nanoGPT"] / per_step["nanoGPT'"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, required=True)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-ctx", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--processes", type=int, default=5,
                        help="Fresh processes, one after another (each lays out its memory anew, "
                             "which moves a whole process's speed by several percent here).")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.n_layers} layers, d_model {args.d_model}, n_ctx {args.n_ctx}, batch "
          f"{args.batch}, vocab {args.vocab}; in each process the median of {args.rounds} rounds")
    load_nanogpt(args.nanogpt)  # a wrong path is told here, not by a child
    results = []
    for i in range(args.processes):
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one"],
                               capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"process {i + 1} failed:\n{child.stderr}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"  process {i + 1}: solulab {r['solulab_ms']:.1f} ms/step, nanoGPT "
              f"{r['nanogpt_ms']:.1f}, nanoGPT' {r['second_nanogpt_ms']:.1f}; solulab / nanoGPT "
              f"{r['ratio']:.3f} (noise floor nanoGPT' / nanoGPT {r['floor']:.3f})", flush=True)
    ratios = sorted(r["ratio"] for r in results)
    print(f"solulab / nanoGPT tokens/s: median {statistics.median(ratios):.3f} over "
          f"{len(ratios)} processes (range {ratios[0]:.3f}-{ratios[-1]:.3f}); noise floor "
          f"median {statistics.median(r['floor'] for r in results):.3f}")


if __name__ == "__main__":
    main()
