"""Named model sizes: a ladder about 4x apart in non-embedding parameters, as in the paper.

Each preset fixes depth, width and heads (``d_mlp = 4 * d_model``); context length and vocabulary
come from the training run. Non-embedding parameters are about ``12 * n_layers * d_model**2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from solulab.core.config import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    n_layers: int
    d_model: int
    n_heads: int

    def model_kwargs(self) -> dict[str, int]:
        return {"n_layers": self.n_layers, "d_model": self.d_model, "n_heads": self.n_heads,
                "d_mlp": 4 * self.d_model}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("1l-128", 1, 128, 4),  # CPU-sized
        Preset("2l-192", 2, 192, 6),  # CPU-sized
        Preset("3l-320", 3, 320, 5),
        Preset("4l-576", 4, 576, 9),
        Preset("6l-960", 6, 960, 15),
        Preset("12l-1408", 12, 1408, 22),
        Preset("16l-2560", 16, 2560, 40),
        Preset("24l-4096", 24, 4096, 32),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
