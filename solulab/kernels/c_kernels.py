"""The CPU path: the C kernels of ``csrc/solu_cpu.c``, compiled for this machine on first use.

The source is compiled with the system C compiler (``$CC``, else ``cc``) at ``-O3
-march=native`` with OpenMP into a library cached under the solulab cache directory by a hash
of the source, the flags and the CPU (an atomic rename, so concurrent processes agree). Where
no compiler can build it, ``load_library`` returns None and the PyTorch fused path is used
instead.
Float32 only; other dtypes take the PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from solulab.cache import cache_dir
from solulab.kernels.fused import Kind

SOURCE = Path(__file__).parent / "csrc" / "solu_cpu.c"
GRAD_CHUNKS = 64  # partial sums of the LayerNorm gain and bias gradients
# the kinds' numbers in the C source's enum
KIND_IDS = {("solu", False): 0, ("solu", True): 1, ("gelu", True): 2, ("exp", True): 3}
# No -Ofast or -ffast-math: their start-up code would make the whole process flush denormals.
FLAG_SETS = (
    ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-fPIC",
     "-shared", "-lm"],
    ["-O3", "-fopenmp", "-fPIC", "-shared", "-lm"],
)
_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


def cpu_identity() -> list[str]:
    """What a library built with ``-march=native`` is only valid for: the host, the
    architecture and the CPU's instruction-set flags (a cache copied to or shared with a machine
    that lacks one of them would otherwise kill the process with an illegal instruction)."""
    flags = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))),
                         flags)
    except OSError:
        pass
    return [platform.node(), platform.machine(), flags.strip()]


def compile_source(source: Path, flags: list[str]) -> Path | None:
    """``source`` built into a shared library in the cache (once per source, flags and CPU),
    or None where no compiler can build it."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    key = hashlib.sha256(source.read_bytes() + " ".join([compiler, *flags, *cpu_identity()])
                         .encode())
    target = cache_dir() / "kernels" / f"{source.stem}_{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, str(source), "-o", tmp, *flags], check=True,
                       capture_output=True, timeout=120)
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError):
        Path(tmp).unlink(missing_ok=True)
        return None
    return target


def build_library(source: Path) -> ctypes.CDLL | None:
    """``source`` compiled with the first flag set that builds and loads here, or None (also
    where ``SOLULAB_NATIVE_KERNELS=0``)."""
    if os.environ.get("SOLULAB_NATIVE_KERNELS", "1") == "0":
        return None
    for flags in FLAG_SETS:
        path = compile_source(source, flags)
        if path is None:
            continue
        try:
            return ctypes.CDLL(str(path))
        except OSError:
            continue
    return None


@functools.cache
def load_library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot be built here."""
    lib = build_library(SOURCE)
    if lib is not None:
        lib.solu_forward.argtypes = [_P, _P, _P, _P, _P, _P, _I64, _I64, _INT, _INT, _F, _INT]
        lib.solu_backward.argtypes = [_P, _P, _P, _P, _P, _P, _P, _I64, _I64, _INT, _INT, _I64,
                                      _INT]
    return lib


def pointer(t: torch.Tensor | None) -> int | None:
    """The address of ``t``'s data, or None (a C NULL) for no tensor."""
    return None if t is None else t.data_ptr()


def _forward(x, weight, bias, kind: Kind, blocks: int, eps: float, with_mid: bool):
    """``(activation, nonlinearity output or None, row statistics)`` of contiguous ``x``."""
    bias = None if bias is None else bias.contiguous()
    rows, d = x.shape
    out = torch.empty_like(x)
    mid = torch.empty_like(x) if with_mid else None
    stats = torch.empty(rows, blocks, 4, dtype=torch.float32)
    lib = load_library()
    assert lib is not None
    lib.solu_forward(x.data_ptr(), pointer(weight), pointer(bias), out.data_ptr(), pointer(mid),
                     stats.data_ptr(), rows, d, blocks, KIND_IDS[kind], eps,
                     torch.get_num_threads())
    return out, mid, stats


class NativeActivation(torch.autograd.Function):
    """``x [rows, d]`` float32 -> activation, through the C kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, kind: Kind, blocks: int, eps: float):
        x = x.contiguous()
        weight = None if weight is None else weight.contiguous()
        out, _, stats = _forward(x, weight, bias, kind, blocks, eps, with_mid=False)
        ctx.save_for_backward(x, weight, stats)
        ctx.config = (kind, blocks)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, stats = ctx.saved_tensors
        kind, blocks = ctx.config
        rows, d = x.shape
        chunks = min(rows, GRAD_CHUNKS)  # fixed by the shape: results independent of threads
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(x)
        has_ln = kind[1]
        parts_w = torch.empty(chunks if has_ln else 0, d)  # zeroed by the kernel
        parts_b = torch.empty(chunks if has_ln else 0, d)
        load_library().solu_backward(grad_out.data_ptr(), x.data_ptr(), pointer(weight),
                                     stats.data_ptr(), grad_x.data_ptr(), parts_w.data_ptr(),
                                     parts_b.data_ptr(), rows, d, blocks, KIND_IDS[kind],
                                     chunks, torch.get_num_threads())
        grad_w = parts_w.sum(0) if has_ln else None
        grad_b = parts_b.sum(0) if has_ln else None
        return grad_x, grad_w, grad_b, None, None, None


@torch.compiler.disable  # an opaque C call: run it eagerly between compiled regions
def native_activation(x: torch.Tensor, kind: Kind, weight, bias, blocks: int = 1,
                      eps: float = 1e-5) -> torch.Tensor:
    """The activation of ``x [..., d]`` (float32, CPU) through the C kernels."""
    shape = x.shape
    out = NativeActivation.apply(x.reshape(-1, shape[-1]), weight, bias, kind, blocks, eps)
    return out.view(shape)


@torch.compiler.assume_constant_result  # a constant to torch.compile, not a call to trace
def library_available() -> bool:
    return load_library() is not None


@torch.no_grad()
def native_activation_with_mid(x: torch.Tensor, kind: Kind, weight, bias, blocks: int = 1,
                               eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(nonlinearity output, activation)`` of ``x [..., d]`` in one pass, for a kind with an
    extra LayerNorm; no autograd."""
    shape = x.shape
    out, mid, _ = _forward(x.reshape(-1, shape[-1]).contiguous(), weight.contiguous(), bias,
                           kind, blocks, eps, with_mid=True)
    return mid.view(shape), out.view(shape)


def native_ready(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and library_available()
