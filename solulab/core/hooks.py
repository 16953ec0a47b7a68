"""Hook points: named places in the forward pass where a value can be read or replaced.

Names follow TransformerLens (``blocks.{l}.mlp.hook_mid``, ``blocks.{l}.attn.hook_pattern``, ...),
and so do hooks: a hook is ``fn(value, hook)``, where ``hook`` is the ``HookPoint`` (``hook.name``
is its name); it returns the value to pass on instead, or None to keep it. A point runs its hooks
(``fns``) in the order they were added; ``add_hook`` returns a handle whose ``remove()`` takes that
hook off again. A point with no hooks does nothing, so a plain forward pays nothing.

``CacheHook`` is the hook ``run_with_cache`` attaches: it records the value and never replaces it,
which lets a module that computes the value in a fused kernel still take its fast path;
``CacheUntilComplete`` records in the same way and ends the forward once it has every value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Patch = Callable[[torch.Tensor, str], torch.Tensor]
"""The older ``run_with_hooks(patches=...)`` form: ``patch(value, name) -> replacement``."""

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]


class CacheHook:
    """A hook that stores the value in ``cache[hook.name]`` and leaves it unchanged."""

    def __init__(self, cache: dict[str, torch.Tensor]):
        self.cache = cache

    def __call__(self, value: torch.Tensor, hook: HookPoint) -> None:
        self.cache[hook.name] = value


class CacheComplete(Exception):
    """Raised by ``CacheUntilComplete`` once every wanted value is cached: the forward stops."""


class CacheUntilComplete(CacheHook):
    """A ``CacheHook`` that stops the forward, by raising ``CacheComplete``, as soon as the cache
    holds every one of ``names``: what follows the last of them is never computed."""

    def __init__(self, cache: dict[str, torch.Tensor], names: set[str]):
        super().__init__(cache)
        self.names = names

    def __call__(self, value: torch.Tensor, hook: HookPoint) -> None:
        super().__call__(value, hook)
        if self.names <= self.cache.keys():
            raise CacheComplete


class HookHandle:
    """Returned by ``HookPoint.add_hook``: ``remove()`` detaches that one hook."""

    def __init__(self, point: HookPoint, fn: HookFn):
        self.point, self.fn, self.removed = point, fn, False

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        for i, fn in enumerate(self.point.fns):
            if fn is self.fn:
                del self.point.fns[i]
                return


class HookPoint(nn.Module):
    """Identity that passes its input through its hooks, in the order they were added."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.fns: list[HookFn] = []

    @property
    def active(self) -> bool:
        """Some hook is attached."""
        return bool(self.fns)

    @property
    def records_only(self) -> bool:
        """No attached hook can replace the value (every one is a ``CacheHook``)."""
        return all(isinstance(fn, CacheHook) for fn in self.fns)

    def add_hook(self, fn: HookFn) -> HookHandle:
        self.fns.append(fn)
        return HookHandle(self, fn)

    def remove_hooks(self) -> None:
        self.fns.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x
