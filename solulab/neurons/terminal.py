"""Neuron examples in the terminal: tokens shaded from white to red by activation.

Colour is 24-bit ANSI and is used only on a terminal without ``NO_COLOR``; otherwise the firing
token is marked ``[[like this]]`` and tokens above half the scale ``[like this]``. Newlines and
tabs inside tokens are drawn as ``⏎`` and ``→`` so an example stays on one line, and bidirectional
controls as marks (``solulab.visible``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

from solulab.neurons.store import Example, LogitEffects, NeuronStats
from solulab.visible import visible

RESET = "\x1b[0m"


def use_colour() -> bool:
    """Colour on a terminal unless ``NO_COLOR`` is set."""
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def shade(tokens: Sequence[str], acts: np.ndarray, scale: float, fire_index: int | None,
          colour: bool) -> str:
    """One line of tokens, each shaded by ``act / scale`` (clipped to 0..1)."""
    parts = []
    for i, (token, act) in enumerate(zip(tokens, acts)):
        level = 0.0 if scale <= 0 or not np.isfinite(act) else float(np.clip(act / scale, 0, 1))
        text = visible(token)
        if colour:
            fade = int(round(255 * (1 - level)))
            underline = "\x1b[4m" if i == fire_index else ""
            parts.append(f"\x1b[30;48;2;255;{fade};{fade}m{underline}{text}{RESET}")
        elif i == fire_index:
            parts.append(f"[[{text}]]")
        elif level >= 0.5:
            parts.append(f"[{text}]")
        else:
            parts.append(text)
    return "".join(parts)


def format_examples(examples: Sequence[Example], scale: float, colour: bool,
                    other_label: str | None = None) -> list[str]:
    lines = []
    for e in examples:
        other = ""
        if other_label and e.other_acts is not None:
            other = f"  ({other_label} {e.other_acts[e.fire_index]:+.3f})"
        text = shade(e.tokens, e.acts, scale, e.fire_index, colour)
        lines.append(f"{e.value:+9.3f}{other}  {text}")
    return lines


def format_stats(stats: NeuronStats) -> str:
    return (f"max {stats.max:.3f}  mean {stats.mean:.4f}  std {stats.std:.4f}  "
            f"kurtosis {stats.kurtosis:.1f}  >0 {stats.frac_positive:.1%}  "
            f">{stats.threshold:g} {stats.frac_above:.2%}  over {stats.n_tokens:,} tokens")


def format_logit_effects(effects: LogitEffects) -> list[str]:
    note = ("the neuron's whole effect on the logits (1-layer model)" if effects.complete
            else "direct path only; later layers also read this neuron")
    lines = [f"logit effects ({note}):", f"  {'increases':<28}  decreases"]
    for (up, uv), (down, dv) in zip(zip(effects.top_tokens, effects.top_values),
                                    zip(effects.bottom_tokens, effects.bottom_values)):
        lines.append(f"  {visible(repr(up)):<18} {uv:+8.3f}  {visible(repr(down)):<18} {dv:+8.3f}")
    return lines
