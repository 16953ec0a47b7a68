"""What SoLU-LN costs over GELU: the activation alone, a whole training step, saved memory.

Measured side by side in one run, alternating between the contenders in rounds (median), so
drift in machine speed affects all alike:

1. the activation alone, forward + backward on ``[batch * n_ctx, d_mlp]``: GELU, the SoLU-LN
   reference (autograd through readable ops), the fused SoLU-LN in PyTorch ops (eager and
   compiled), the C kernels on the CPU, and the Triton kernel where a GPU is present;
2. a training step (forward, backward, AdamW) of ``gelu`` vs ``solu_ln`` models, both eager and
   both under ``torch.compile``; the target is a step-time ratio of at most 1.01. A second,
   identical ``gelu`` model (``gelu'``) is timed alongside: its ratio to the first is the
   measurement's noise. The kernel's own extra time (from 1.) gives the ratio it alone implies;
3. the activation memory autograd saves for the backward of one forward pass, per model.

With each step time comes the model FLOPs utilization: training FLOPs per token (6 per weight of
a matrix product, embedding lookups excluded, plus attention's 12 * n_layers * n_ctx * d_model;
Chowdhery et al. 2022, "PaLM", appendix B) times tokens per second, over the device's peak
(``--peak-tflops``, known for some GPUs in ``solulab.core.flops.PEAK_TFLOPS``; without one, only the
achieved rate).

    python benchmarks/activation_overhead.py [--n-layers 2 --d-model 256 --n-ctx 256 --batch 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from allocator import keep_freed_memory

from solulab import ModelConfig, Transformer, kernels
from solulab.core.activations import REGISTRY, Activation
from solulab.core.flops import flops_per_token, peak_flops
from solulab.kernels.c_kernels import native_activation, native_ready
from solulab.kernels.fused import fused_activation
from solulab.training.trainer import TrainConfig, build_optimizer, training_step

SOLU_LN = REGISTRY["solu_ln"].kind  # what the kernels compute for solu_ln

# dense bf16 peak of some GPUs, TFLOP/s (vendor data sheets, SXM forms)
KERNEL_CONTENDER = {"native": "solu_ln native (C)", "triton": "solu_ln triton",
                    "fused": "solu_ln fused"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def race(contenders: dict[str, Callable[[], None]], rounds: int, reps: int,
         device: torch.device) -> dict[str, float]:
    """Median seconds per call of each contender, alternating in rounds, every other round in
    reverse order (so that going first or last favours none)."""
    for fn in contenders.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        order = list(contenders.items())
        for name, fn in order if round_index % 2 == 0 else reversed(order):
            sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / reps)
    return {name: statistics.median(t) for name, t in times.items()}


def activation_contenders(args, device) -> dict[str, Callable[[], None]]:
    rows, d_mlp = args.batch * args.n_ctx, 4 * args.d_model
    x = torch.randn(rows, d_mlp, device=device, dtype=args.dtype, requires_grad=True)
    grad = torch.randn_like(x)
    act = Activation("solu_ln", d_mlp).to(device)
    w, b = act.ln.w, act.ln.b
    compiled = torch.compile(fused_activation)

    def step(fn):
        return lambda: fn().backward(grad)

    contenders = {
        "gelu": step(lambda: F.gelu(x)),
        "solu_ln reference": step(lambda: act.reference(x)),
        "solu_ln fused": step(lambda: fused_activation(x, SOLU_LN, w, b)),
        "solu_ln fused+compile": step(lambda: compiled(x, SOLU_LN, w, b)),
    }
    if device.type == "cpu" and native_ready(x):
        contenders["solu_ln native (C)"] = step(lambda: native_activation(x, SOLU_LN, w, b))
    if device.type == "cuda" and kernels.backend_for(act.spec.kind, x) == "triton":
        from solulab.kernels.triton_kernels import triton_activation

        contenders["solu_ln triton"] = step(lambda: triton_activation(x, SOLU_LN, w, b))
    return contenders


def model_config(act: str, args) -> ModelConfig:
    return ModelConfig(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.d_model // 64,
                       n_ctx=args.n_ctx, d_vocab=args.vocab, act_fn=act)


def make_training_step(act: str, args, device, compile_model: bool) -> Callable[[], None]:
    cfg = model_config(act, args)
    model = Transformer(cfg).to(device)
    optimizer = build_optimizer(model, 1e-4, 0.1, (0.9, 0.95))  # as training builds it
    forward = torch.compile(model) if compile_model else model
    tokens = torch.randint(0, args.vocab, (args.batch, args.n_ctx), device=device)

    def step() -> None:  # training's own step: autocast on CUDA, clipping, AdamW
        training_step(model, optimizer, [tokens], TrainConfig.grad_clip, forward=forward)

    return step


def saved_bytes(act: str, args, device, backend: str) -> int:
    """Bytes of tensors autograd saves for the backward of one forward pass."""
    cfg = model_config(act, args)
    model = Transformer(cfg).to(device)
    tokens = torch.randint(0, args.vocab, (args.batch, args.n_ctx), device=device)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with kernels.use_backend(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens, return_loss=True)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-ctx", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak, for the model FLOPs utilization")
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    keep_freed_memory()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"config: {args.n_layers} layers, d_model {args.d_model}, d_mlp {4 * args.d_model}, "
          f"n_ctx {args.n_ctx}, batch {args.batch}, vocab {args.vocab}")

    print("\n1. activation alone, forward + backward "
          f"[{args.batch * args.n_ctx}, {4 * args.d_model}] {args.dtype}")
    alone = race(activation_contenders(args, device), args.rounds, args.reps, device)
    for name, t in alone.items():
        print(f"   {name:<24} {t * 1e3:8.2f} ms   {t / alone['gelu']:6.2f}x gelu")

    probe = Activation("solu_ln", 4 * args.d_model)
    auto = kernels.backend_for(probe.spec.kind, torch.zeros(1, device=device, dtype=args.dtype))
    print("\n2. training step (forward, backward, AdamW); a second gelu model (gelu') shows "
          "the noise")
    for compile_model in (False, True):
        label = "compiled" if compile_model else "eager"
        steps = {name: make_training_step(name.rstrip("'"), args, device, compile_model)
                 for name in ("gelu", "gelu'", "solu_ln")}
        timed = race(steps, args.rounds, args.reps, device)
        ratio, noise = timed["solu_ln"] / timed["gelu"], timed["gelu'"] / timed["gelu"]
        print(f"   {label:<9} gelu {timed['gelu'] * 1e3:8.1f} ms   solu_ln "
              f"{timed['solu_ln'] * 1e3:8.1f} ms   step-time ratio {ratio:.3f}   "
              f"(gelu'/gelu {noise:.3f})")
        tokens_per_step = args.batch * args.n_ctx
        peak = peak_flops(device, args.peak_tflops)
        for act in ("gelu", "solu_ln"):
            per_token = flops_per_token(Transformer(model_config(act, args)))
            rate = per_token * tokens_per_step / timed[act]
            mfu = f", MFU {rate / peak:.1%}" if peak else ""
            print(f"   {'':<9} {act}: {rate / 1e12:.3f} TFLOP/s{mfu}")
        if not compile_model and KERNEL_CONTENDER.get(auto) in alone:
            extra = args.n_layers * (alone[KERNEL_CONTENDER[auto]] - alone["gelu"])
            print(f"   {'':<9} the {auto} kernel's own extra time over gelu, {args.n_layers} "
                  f"layers: {extra * 1e3:.1f} ms, ratio {1 + extra / timed['gelu']:.3f} "
                  "from it alone")

    print("\n3. activation memory saved for backward (one forward)")
    gelu = saved_bytes("gelu", args, device, "auto")
    for label, act, backend in (("gelu", "gelu", "auto"),
                                ("solu_ln reference", "solu_ln", "reference"),
                                (f"solu_ln {auto}", "solu_ln", "auto")):
        n = saved_bytes(act, args, device, backend)
        print(f"   {label:<20} {n / 2**20:8.2f} MiB   {n / gelu:5.3f}x gelu")

    if device.type == "cuda" and auto == "triton":
        print("\n4. Triton forward against a device-to-device copy of the same tensor")
        fraction = copy_fraction(args, device)
        print(f"   bandwidth {fraction:.3f} of a copy (reads x, writes the output: same bytes)")


def copy_fraction(args, device) -> float:
    """Time of ``out.copy_(x)`` over the Triton forward's (no autograd), same shape and dtype."""
    from solulab.kernels.triton_kernels import triton_activation

    x = torch.randn(args.batch * args.n_ctx, 4 * args.d_model, device=device, dtype=args.dtype)
    out = torch.empty_like(x)
    act = Activation("solu_ln", x.shape[1]).to(device)
    with torch.no_grad():
        timed = race({"copy": lambda: out.copy_(x),
                      "triton": lambda: triton_activation(x, SOLU_LN, act.ln.w, act.ln.b)},
                     args.rounds, args.reps * 10, device)
    return timed["copy"] / timed["triton"]


if __name__ == "__main__":
    main()
