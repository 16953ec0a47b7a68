"""solulab: design language models to be reverse engineered (Softmax Linear Units)."""

from solulab.config import ModelConfig
from solulab.pretrained import Transformer

__all__ = ["ModelConfig", "Transformer"]
__version__ = "0.1.0"
