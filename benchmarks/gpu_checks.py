"""The sections of ``benchmarks/gpu.sh`` that no other benchmark covers, one subcommand each;
each prints markdown for the results file.

    python3 benchmarks/gpu_checks.py device       # versions, device, copy bandwidth
    python3 benchmarks/gpu_checks.py kernels      # Triton kernels against the float64 reference
    python3 benchmarks/gpu_checks.py bandwidth    # Triton SoLU-LN bandwidth against a copy
    python3 benchmarks/gpu_checks.py loss         # the fused unembedding loss: errors, time, memory
    python3 benchmarks/gpu_checks.py script benchmarks/activation_overhead.py ARGS...

``script`` runs another benchmark as if started directly, after putting empty stand-ins in
place of ``tqdm`` and ``pyarrow`` where they are missing: solulab imports them at module level
(progress bars, parquet corpora) but nothing measured here uses them.

A hidden ``--allow-cpu`` runs a section on the CPU at tiny sizes, the Triton kernels in Triton's
CPU interpreter, so that this file can be tried without a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import sys
import traceback
import types
from importlib.machinery import ModuleSpec

STAND_INS = ("tqdm", "pyarrow")


class NoProgressBar:
    """``tqdm.tqdm``'s interface, showing nothing (torch itself calls ``update``)."""

    def __init__(self, iterable=None, *args, **kwargs):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):  # update, close, set_postfix, ...
        return lambda *args, **kwargs: None


def stand_in(name: str) -> types.ModuleType:
    """An empty module registered as ``name`` (with a spec: torch looks some modules up)."""
    sys.modules[name] = module = importlib.util.module_from_spec(ModuleSpec(name, None))
    return module


def install_stand_ins() -> list[str]:
    """Empty modules for whichever of ``STAND_INS`` cannot be imported; their names."""
    missing = [name for name in STAND_INS if importlib.util.find_spec(name) is None]
    for name in missing:
        module = stand_in(name)
        if name == "tqdm":
            module.tqdm = NoProgressBar
        if name == "pyarrow":
            module.parquet = stand_in("pyarrow.parquet")
    return missing


def device_section(device, small: bool, stand_ins: list[str]) -> None:
    """Versions, the device, and the bandwidth of a device-to-device copy."""
    import torch
    import triton
    from activation_overhead import race

    print(f"- torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__},"
          f" Python {sys.version.split()[0]}")
    if stand_ins:
        print(f"- stand-ins for missing modules: {', '.join(stand_ins)}")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        print(f"- {p.name}: compute capability {p.major}.{p.minor}, {p.multi_processor_count} "
              f"SMs, {p.total_memory / 2**30:.1f} GiB")
    x = torch.empty(2**20 if small else 2**28, device=device)  # 1 GiB on the GPU
    out = torch.empty_like(x)
    t = race({"copy": lambda: out.copy_(x)}, rounds=5, reps=20, device=device)["copy"]
    print(f"- device-to-device copy of {x.nbytes / 2**20:.0f} MiB: "
          f"{2 * x.nbytes / t / 1e9:,.0f} GB/s (bytes read + written)")


def compare_with_reference(kind: str, dtype, rows: int, d: int, blocks: int, device):
    """Relative errors of the Triton output and gradients (input, then LayerNorm gain and bias
    if any) against the reference activation in float64 on ``device``, and the largest
    absolute error."""
    import torch

    from solulab.core.activations import REGISTRY, Activation
    from solulab.kernels.triton_kernels import triton_activation

    gen = torch.Generator().manual_seed(0)
    ref_act = Activation(kind, d, blocks).to(device, torch.float64)
    params = [] if ref_act.ln is None else [ref_act.ln.w, ref_act.ln.b]
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(d, generator=gen))
    x = torch.randn(rows, d, generator=gen) * 3
    x[-1] += 120.0  # a row of large values: no overflow
    x = x.to(device, dtype).requires_grad_()
    ln = [p.detach().float().requires_grad_() for p in params]  # float32, as in the model
    out = triton_activation(x, REGISTRY[kind].kind, *(ln or [None, None]), blocks)
    grad = torch.randn(rows, d, generator=gen).to(device, dtype)
    got = [out, *torch.autograd.grad(out, [x, *ln], grad)]
    x64 = x.detach().double().requires_grad_()
    ref = ref_act.reference(x64)
    want = [ref, *torch.autograd.grad(ref, [x64, *params], grad.double())]
    errors = [(r - o.double()).abs().max() for r, o in zip(want, got)]
    return ([(e / r.abs().max()).item() for e, r in zip(errors, want)],
            max(e.item() for e in errors))


def short_reason(error: BaseException) -> str:
    """The last line of the innermost cause, for a table cell."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line for line in str(error).splitlines() if line.strip()] or [""]
    return f"{type(error).__name__}: {lines[-1][:160]}".replace("|", "/")


def kernels_section(device, small: bool) -> bool:
    """Every Triton kernel kind, blocked forms, float32 and bfloat16, forward and backward,
    against the reference in float64 on the same device. True if all pass."""
    import torch

    from solulab.core.activations import FUSED

    tolerance = {torch.float32: 1e-5, torch.bfloat16: 1e-2}  # of the reference's largest value
    shapes = [(1, 7, 1), (6, 33, 1), (4, 64, 2), (3, 129, 3), (300, 1024, 1)]  # rows, d, blocks
    if not small:
        shapes += [(257, 3072, 1), (130, 3072, 4), (9, 12288, 1)]
    print("Relative error: largest |error| over largest |reference| (float64 on the device); "
          "inputs N(0, 3), the last row shifted by +120; LayerNorm gain and bias N(0, 1).\n")
    print("| kind | dtype | rows x d / blocks | out | d input | d ln weight | d ln bias "
          "| max abs error | tolerance | |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failures = total = 0
    for kind in FUSED:
        for dtype, tol in tolerance.items():
            for rows, d, blocks in shapes:
                if small and rows * d > 10_000:
                    rows = 40  # the interpreter runs one program at a time
                case = f"| {kind} | {str(dtype)[6:]} | {rows} x {d} / {blocks} |"
                total += 1
                try:
                    errors, worst = compare_with_reference(kind, dtype, rows, d, blocks, device)
                except Exception as error:  # recorded; the other cases still run
                    if not failures:
                        traceback.print_exc()
                    failures += 1
                    print(f"{case} **ERROR** {short_reason(error)} |||||| **FAIL** |")
                    continue
                ok = max(errors) <= tol
                failures += not ok
                cells = [f"{e:.1e}" for e in errors] + ["-"] * (4 - len(errors))
                print(f"{case} {' | '.join(cells)} | {worst:.1e} | {tol:.0e} | "
                      f"{'pass' if ok else '**FAIL**'} |")
    print(f"\n{total - failures} of {total} pass" + (f", **{failures} FAIL**" if failures else ""))
    return failures == 0


def bandwidth_section(device, small: bool) -> None:
    """The Triton SoLU-LN forward, and forward + backward, as a fraction of a device copy's
    bandwidth: bytes of the input, output and gradients each read or written once."""
    import torch
    from activation_overhead import SOLU_LN, race

    from solulab.core.activations import Activation
    from solulab.kernels.triton_kernels import triton_activation

    rows, d = (64, 256) if small else (16384, 3072)
    rounds, reps = (1, 1) if small else (7, 20)
    print("forward: reads x, writes out (2 tensors); forward + backward: also reads x and the "
          "output's gradient, writes the input's (5 tensors); LayerNorm statistics and gain/bias "
          "partial sums not counted.\n")
    print("| shape | dtype | copy GB/s | forward GB/s | of copy | forward + backward GB/s "
          "| of copy |")
    print("|---|---|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(rows, d, device=device, dtype=dtype)
        out, grad = torch.empty_like(x), torch.randn_like(x)
        act = Activation("solu_ln", d).to(device)
        w, b = act.ln.w, act.ln.b
        xg = x.clone().requires_grad_()

        def forward():
            with torch.no_grad():
                triton_activation(x, SOLU_LN, w, b)

        def both():
            torch.autograd.grad(triton_activation(xg, SOLU_LN, w, b), [xg, w, b], grad)

        t = race({"copy": lambda: out.copy_(x), "forward": forward, "both": both},
                 rounds, reps, device)
        n = x.nbytes
        copy_bw, fwd_bw, both_bw = 2 * n / t["copy"], 2 * n / t["forward"], 5 * n / t["both"]
        print(f"| {rows} x {d} | {str(dtype)[6:]} | {copy_bw / 1e9:,.0f} | {fwd_bw / 1e9:,.0f} "
              f"| {fwd_bw / copy_bw:.3f} | {both_bw / 1e9:,.0f} | {both_bw / copy_bw:.3f} |")


def loss_section(device, small: bool) -> None:
    """The fused unembedding + cross-entropy (``linear_cross_entropy``, what training calls)
    against the float64 loss on the device, and its time and peak memory against the unfused
    ``cross_entropy(linear(x))``, both under the training's bfloat16 autocast."""
    import torch
    import torch.nn.functional as F
    from activation_overhead import race

    from solulab.core.loss import IGNORE, linear_cross_entropy

    tokens, d, vocab = (64, 32, 257) if small else (8192, 768, 50304)
    rounds, reps = (1, 1) if small else (5, 10)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(tokens, d, device=device, generator=gen, requires_grad=True)
    weight = (torch.randn(vocab, d, device=device, generator=gen) * 0.02).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device=device, generator=gen)
    targets[-1] = IGNORE
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    want = F.cross_entropy(F.linear(x64, w64), targets, ignore_index=IGNORE)
    want_grads = torch.autograd.grad(want, [x64, w64])

    def rel(a, b) -> float:
        return ((a.double() - b).norm() / b.norm()).item()

    print(f"{tokens} tokens, d_model {d}, vocab {vocab}; relative error (norm) against float64:\n")
    print("| precision | loss | input gradient | weight gradient |")
    print("|---|---|---|---|")
    for name, enabled in (("float32", False), ("bfloat16 autocast", True)):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
            got = linear_cross_entropy(x, weight, None, targets)
            grads = torch.autograd.grad(got, [x, weight])
        cells = [rel(got, want)] + [rel(g, w) for g, w in zip(grads, want_grads)]
        print(f"| {name} | " + " | ".join(f"{c:.1e}" for c in cells) + " |")

    def step(fused: bool):
        def run() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = (linear_cross_entropy(x, weight, None, targets) if fused else
                        F.cross_entropy(F.linear(x, weight).float(), targets,
                                        ignore_index=IGNORE))
            torch.autograd.grad(loss, [x, weight])
        return run

    contenders = {"unfused": step(False), "fused": step(True)}
    seconds = race(contenders, rounds, reps, device)
    print("\n| loss, forward + backward | ms | peak memory MiB |")
    print("|---|---|---|")
    for name, fn in contenders.items():
        peak = "-"
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            peak = f"{(torch.cuda.max_memory_allocated() - base) / 2**20:,.0f}"
        print(f"| {name} | {seconds[name] * 1000:.2f} | {peak} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["device", "kernels", "bandwidth", "loss", "script"])
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.section == "script":
        if not rest:
            parser.error("script needs the path of a benchmark")
        missing = install_stand_ins()
        if missing:
            print(f"(stand-ins for missing modules: {', '.join(missing)})")
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.allow_cpu:  # must precede Triton's first import
        os.environ["TRITON_INTERPRET"] = "1"
    stand_ins = install_stand_ins()
    import torch

    if not args.allow_cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device")
    device = torch.device("cpu" if args.allow_cpu else "cuda")
    small = args.allow_cpu
    if args.section == "device":
        device_section(device, small, stand_ins)
    elif args.section == "kernels":
        sys.exit(0 if kernels_section(device, small) else 1)
    elif args.section == "loss":
        loss_section(device, small)
    else:
        bandwidth_section(device, small)


if __name__ == "__main__":
    main()
