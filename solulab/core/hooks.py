"""Hook points: named places in the forward pass where a value can be read or replaced.

Names follow TransformerLens (``blocks.{l}.mlp.hook_mid``, ...). A hook point does nothing
unless a ``sink`` (a dict that records the value) or a ``patch`` (a function that returns the
value to use instead, e.g. for activation patching) is attached, so a plain forward pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Patch = Callable[[torch.Tensor, str], torch.Tensor]


class HookPoint(nn.Module):
    """Identity that can replace its input (``patch``) and record what it passes on (``sink``)."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.sink: dict[str, torch.Tensor] | None = None
        self.patch: Patch | None = None

    @property
    def active(self) -> bool:
        return self.sink is not None or self.patch is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch is not None:
            x = self.patch(x, self.name)
        if self.sink is not None:
            self.sink[self.name] = x
        return x
