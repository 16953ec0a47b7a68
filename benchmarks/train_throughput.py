"""Training throughput of ``gelu`` and ``solu_ln`` side by side, and their ratio.

Both models share every setting but the activation. Steps alternate between the two models in
rounds so that drift in machine speed affects both alike; the figure is the median over rounds.

    python benchmarks/train_throughput.py [--n-layers 2 --d-model 256 --n-ctx 256 --batch 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from solulab import ModelConfig, Transformer
from solulab.training.trainer import TrainConfig, build_optimizer, training_step


def make_step(act: str, args, device: torch.device):
    cfg = ModelConfig(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.d_model // 64,
                      n_ctx=args.n_ctx, d_vocab=args.vocab, act_fn=act)
    model = Transformer(cfg).to(device)
    optimizer = build_optimizer(model, 1e-4, 0.1, (0.9, 0.95))  # as training builds it
    tokens = torch.randint(0, args.vocab, (args.batch, args.n_ctx), device=device)

    def step() -> None:  # training's own step: autocast on CUDA, clipping, AdamW
        training_step(model, optimizer, [tokens], TrainConfig.grad_clip)

    return step


def time_steps(step, n: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-ctx", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = {act: make_step(act, args, device) for act in ("gelu", "solu_ln")}
    for step in steps.values():  # warm up
        time_steps(step, 2, device)
    times: dict[str, list[float]] = {act: [] for act in steps}
    for _ in range(args.rounds):
        for act, step in steps.items():
            times[act].append(time_steps(step, args.steps_per_round, device))
    tokens = args.batch * args.n_ctx
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, device {device}")
    print(f"config: {args.n_layers} layers, d_model {args.d_model}, d_mlp {4 * args.d_model}, "
          f"n_ctx {args.n_ctx}, batch {args.batch}, vocab {args.vocab}")
    medians = {act: statistics.median(t) for act, t in times.items()}
    for act, t in medians.items():
        print(f"{act:<8} {t * 1e3:8.1f} ms/step  {tokens / t:10.0f} tokens/s")
    print(f"step-time ratio solu_ln / gelu: {medians['solu_ln'] / medians['gelu']:.3f}")


if __name__ == "__main__":
    main()
