"""solulab: design language models to be reverse engineered (Softmax Linear Units).

``ModelConfig`` and ``Transformer`` are imported on first use, so that commands which need no
model (``solulab --help``, the study server) start without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["ModelConfig", "Transformer"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from solulab.core.config import ModelConfig
    from solulab.core.model import Transformer


def __getattr__(name: str):
    if name == "ModelConfig":
        from solulab.core.config import ModelConfig

        return ModelConfig
    if name == "Transformer":
        from solulab.core.model import Transformer

        return Transformer
    raise AttributeError(f"module 'solulab' has no attribute {name!r}")
