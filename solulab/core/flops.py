"""Training FLOPs and model FLOPs utilisation (MFU): the achieved rate over the device's peak.

The peak is known for some GPUs (bf16 dense tensor-core figures from their data sheets) or given
in ``$SOLULAB_PEAK_TFLOPS``; elsewhere (a CPU) only the achieved rate is reported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from solulab.core.model import Transformer

PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
PEAK_ENV = "SOLULAB_PEAK_TFLOPS"


def flops_per_token(model: Transformer) -> float:
    """Training FLOPs per token: 6 per matrix weight (embedding lookups excluded) plus
    attention's scores and mixing, 12 * n_layers * n_ctx * d_model."""
    cfg = model.cfg
    weights = sum(p.numel() for name, p in model.named_parameters()
                  if p.dim() == 2 and not name.startswith("embed"))
    return 6 * weights + 12 * cfg.n_layers * cfg.n_ctx * cfg.d_model


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of ``device``: the override, ``$SOLULAB_PEAK_TFLOPS``, a known GPU, or None."""
    tflops = override_tflops or float(os.environ.get(PEAK_ENV) or 0)
    if tflops:
        return tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((tf * 1e12 for gpu, tf in PEAK_TFLOPS.items() if gpu in name), None)
    return None
