"""The decoder language model: a GPT-style pre-LayerNorm transformer whose neurons can be read.

Every intermediate value that an analysis may want passes through a ``HookPoint`` named as in
TransformerLens (``blocks.{l}.mlp.hook_pre``, ``blocks.{l}.mlp.hook_mid``,
``blocks.{l}.attn.hook_pattern``, ...; all in ``Transformer.hook_points``). As there, hooks are
``fn(value, hook)`` returning a replacement or None, attached by name or by a predicate on names:

* ``run_with_cache(tokens, names)``: the output and the values at ``names``;
* ``activations(tokens, names)``: only the values at ``names``, the forward run no further than
  the last of them;
* ``run_with_hooks(tokens, fwd_hooks=[(name_or_predicate, fn), ...])``: one forward with hooks
  (``patches={name: patch(value, name)}`` is the older form, still accepted);
* ``with model.hooks(fwd_hooks=...):`` hooks for a block of code, removed on leaving it;
* ``add_hook(name_or_predicate, fn)`` until ``handle.remove()`` or ``reset_hooks()``.

A plain forward pays nothing: attention stays one fused kernel unless its scores or pattern are
hooked.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from solulab.core import checkpoint, hub, transformerlens
from solulab.core.activations import Activation, ExtraLayerNorm, blocked_layer_norm
from solulab.core.config import ModelConfig
from solulab.core.hooks import (
    CacheComplete,
    CacheHook,
    CacheUntilComplete,
    HookFn,
    HookHandle,
    HookPoint,
    Patch,
)
from solulab.core.loss import IGNORE, linear_cross_entropy, next_token_targets
from solulab.numerics import at_least_float32

HookName = str | Callable[[str], bool]


class LayerNorm(nn.Module):
    """LayerNorm with gain ``w`` and bias ``b``; statistics in float32 (PyTorch's fused kernel
    for float32 inputs, the same formula in readable ops for lower precisions)."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.w.dtype == torch.float32:
            return F.layer_norm(x, self.w.shape, self.w, self.b, self.eps)
        return blocked_layer_norm(x, self.w, self.b, 1, self.eps)


class Rotary(nn.Module):
    """Rotary position embedding on the first ``rotary_dim`` dims of each head (rotate-half).

    Angles are computed in float32 (or float64) on every call rather than stored, so that a
    model cast to bfloat16 keeps exact positions."""

    def __init__(self, rotary_dim: int, base: float):
        super().__init__()
        self.rotary_dim, self.base = rotary_dim, base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[batch, heads, pos, d_head]``."""
        n_pos, r = x.shape[-2], self.rotary_dim
        dtype = torch.promote_types(x.dtype, torch.float32)
        inv_freq = self.base ** (-torch.arange(0, r, 2, device=x.device, dtype=dtype) / r)
        angles = torch.outer(torch.arange(n_pos, device=x.device, dtype=dtype), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # [pos, rotary_dim]
        rot, rest = x[..., :r].to(dtype), x[..., r:]
        first, second = rot.chunk(2, dim=-1)
        rot = rot * angles.cos() + torch.cat([-second, first], dim=-1) * angles.sin()
        return torch.cat([rot.to(x.dtype), rest], dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention through ``scaled_dot_product_attention``; step by step
    (the same function) while ``hook_attn_scores`` or ``hook_pattern`` has a hook."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_head is not None
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.n_heads * cfg.d_head)
        self.out = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model)
        # initialised smaller with depth
        self.out.writes_residual = True  # type: ignore[assignment]
        self.rotary = (
            Rotary(cfg.rotary_dim, cfg.rotary_base)
            if cfg.positional == "rotary" and cfg.rotary_dim is not None
            else None
        )
        self.hook_attn_scores = HookPoint()  # [batch, heads, query, key], scaled and masked
        self.hook_pattern = HookPoint()  # [batch, heads, query, key], the softmax
        self.hook_z = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_pos, _ = x.shape
        qkv = self.qkv(x).view(batch, n_pos, 3, self.n_heads, self.d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [batch, heads, pos, d_head]
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        if self.hook_attn_scores.active or self.hook_pattern.active:
            z = self.attend(q, k, v)
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        z = self.hook_z(z.transpose(1, 2))  # [batch, pos, heads, d_head]
        return self.out(z.flatten(-2))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """What the fused call computes, through the score and pattern hooks (softmax in at
        least float32, as elsewhere in the model; the pattern in ``v``'s dtype)."""
        n_pos = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=q.device).tril()
        scores = self.hook_attn_scores(scores.masked_fill(~causal, float("-inf")))
        pattern = self.hook_pattern(torch.softmax(at_least_float32(scores), dim=-1).to(v.dtype))
        return pattern @ v


class MLP(nn.Module):
    """``W_out(act(W_in x))`` with hooks before, inside and after the activation.

    ``hook_mid`` (the activation's own hook) exists only for activations with an extra
    LayerNorm: it is the nonlinearity's output, the neuron the paper interprets. ``hook_post`` is
    always what ``W_out`` reads.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_mlp is not None
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.act = Activation(cfg.act_fn, cfg.d_mlp, cfg.act_blocks, cfg.ln_eps)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.fc_out.writes_residual = True  # type: ignore[assignment]
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    @property
    def hook_mid(self) -> HookPoint | None:
        return self.act.hook_mid

    @property
    def W_out(self) -> torch.Tensor:
        """``[d_mlp, d_model]``: row ``n`` is what neuron ``n`` adds to the residual stream."""
        return self.fc_out.weight.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(self.fc_in(x))
        post = self.act(pre)
        return self.fc_out(self.hook_post(post))


class Block(nn.Module):
    """One pre-LayerNorm transformer block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ln2 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.mlp = MLP(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


def _param_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Transformer(nn.Module):
    """Decoder-only LM: ``forward(tokens [batch, pos]) -> logits [batch, pos, d_vocab]``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        learned = cfg.positional == "learned"
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model) if learned else None
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab, bias=cfg.unembed_bias)
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight
        self.hook_points: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                # the activation's hook is addressed as in TransformerLens, on the MLP
                module.name = name.replace(".mlp.act.hook_mid", ".mlp.hook_mid")
                self.hook_points[module.name] = module
        self.init_weights()

    # -- initialisation ---------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        """Norms start as the identity, biases at zero, and every matrix is drawn from
        ``N(0, init_std)`` (``/ sqrt(2 * n_layers)`` where it writes to the residual stream)
        by a generator seeded with ``cfg.init_seed`` and the parameter's name. A sharded
        parameter (``DTensor``) gets its shard of the same values."""
        residual_scale = 1 / math.sqrt(2 * self.cfg.n_layers)
        done: set[int] = set()  # a tied unembedding is its embedding
        for module_name, module in self.named_modules():
            for name, param in module.named_parameters(prefix=module_name, recurse=False):
                if param.is_meta or id(param) in done:  # meta: built to count or shape
                    continue
                done.add(id(param))
                if isinstance(module, (LayerNorm, ExtraLayerNorm)):
                    param.fill_(1.0 if param is module.w else 0.0)
                elif param.dim() == 1:
                    param.zero_()
                else:
                    std = self.cfg.init_std
                    std *= residual_scale if getattr(module, "writes_residual", False) else 1.0
                    gen = torch.Generator().manual_seed(_param_seed(self.cfg.init_seed, name))
                    values = torch.randn(param.shape, generator=gen, dtype=torch.float32) * std
                    if isinstance(param, DTensor):  # every rank drew the same: no communication
                        values = distribute_tensor(values.to(param.device), param.device_mesh,
                                                   param.placements, src_data_rank=None)
                    param.copy_(values)

    # -- forward ----------------------------------------------------------------------------
    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"{tokens.shape[1]} positions exceed n_ctx={self.cfg.n_ctx}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be integer ids, got {tokens.dtype}")

    def forward(self, tokens: torch.Tensor, stop_at_layer: int | None = None,
                return_loss: bool = False) -> torch.Tensor:
        """Logits ``[batch, pos, d_vocab]``; with ``stop_at_layer=L``, the residual stream
        ``[batch, pos, d_model]`` after the first ``L`` blocks (later blocks are not run); with
        ``return_loss``, ``lm_loss`` of the logits, computed without holding them whole."""
        self._check_tokens(tokens)
        x = self.embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(tokens.shape[1], device=tokens.device))
        x = self.hook_embed(x)
        blocks = self.blocks if stop_at_layer is None else self.blocks[:stop_at_layer]
        for block in blocks:
            x = block(x)
        if stop_at_layer is not None:
            return x
        x = self.ln_final(x)
        if return_loss:
            return linear_cross_entropy(x.flatten(0, 1), self.unembed.weight, self.unembed.bias,
                                        next_token_targets(tokens))
        return self.unembed(x)

    # -- hooks ------------------------------------------------------------------------------
    def _points(self, fwd_hooks: Iterable[tuple[HookName, HookFn]]
                ) -> list[tuple[HookPoint, HookFn]]:
        """Each hook paired with each point it names (a predicate names every point it accepts);
        a ``KeyError`` naming every unknown name, before anything is attached."""
        fwd_hooks = list(fwd_hooks)
        unknown = [n for n, _ in fwd_hooks if not callable(n) and n not in self.hook_points]
        if unknown:
            raise KeyError(f"unknown hook names {unknown}; see Transformer.hook_points")
        pairs = []
        for key, fn in fwd_hooks:
            if callable(key):
                pairs += [(point, fn) for name, point in self.hook_points.items() if key(name)]
            else:
                pairs.append((self.hook_points[key], fn))
        return pairs

    def add_hook(self, name: HookName, fn: HookFn) -> list[HookHandle]:
        """Attach ``fn(value, hook)`` to the point ``name`` (or every point whose name the
        predicate accepts) until removed; one handle per point."""
        return [point.add_hook(f) for point, f in self._points([(name, fn)])]

    def reset_hooks(self) -> None:
        """Remove every hook from every hook point."""
        for point in self.hook_points.values():
            point.remove_hooks()

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[HookName, HookFn]] = ()) -> Iterator[Transformer]:
        """``with model.hooks(fwd_hooks=[(name_or_predicate, fn), ...]):`` the hooks are attached
        inside the block and removed on leaving it, also when it raises."""
        handles = [point.add_hook(fn) for point, fn in self._points(fwd_hooks)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def run_with_cache(
        self,
        tokens: torch.Tensor,
        names: Iterable[str] | None = None,
        stop_at_layer: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(forward output, {hook name: value})`` for the hook points in ``names`` (all when
        None). Values are stored as computed, after any hook already attached, not copied: wrap
        in ``torch.no_grad()`` to keep no graph. ``stop_at_layer`` is passed to ``forward``."""
        wanted = list(self.hook_points) if names is None else list(names)
        cache: dict[str, torch.Tensor] = {}
        record = CacheHook(cache)
        with self.hooks([(name, record) for name in wanted]):
            out = self(tokens, stop_at_layer=stop_at_layer)
        return out, cache

    def activations(self, tokens: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """``{hook name: value}`` for the hook points in ``names``, the forward stopped as soon as
        it has computed all of them (nothing after the last is run). Values as in
        ``run_with_cache``; wrap in ``torch.no_grad()`` to keep no graph."""
        wanted = set(names)
        if not wanted:
            return {}
        cache: dict[str, torch.Tensor] = {}
        record = CacheUntilComplete(cache, wanted)
        with self.hooks([(name, record) for name in wanted]):
            try:
                self(tokens)
            except CacheComplete:
                pass
        return cache

    def run_with_hooks(self, tokens: torch.Tensor, patches: Mapping[str, Patch] | None = None,
                       stop_at_layer: int | None = None, *,
                       fwd_hooks: Sequence[tuple[HookName, HookFn]] = ()) -> torch.Tensor:
        """The forward output with ``fwd_hooks`` (``[(name_or_predicate, fn(value, hook))]``)
        attached for the call, after ``patches`` (``{name: patch(value, name)}``, the older
        form): activation patching, ablation, steering."""
        as_hooks = [(name, lambda value, hook, patch=patch: patch(value, hook.name))
                    for name, patch in (patches or {}).items()]
        with self.hooks([*as_hooks, *fwd_hooks]):
            return self(tokens, stop_at_layer=stop_at_layer)

    def neuron_hook(self, layer: int, post_ln: bool = False) -> str:
        """The hook name of layer ``layer``'s neurons: ``hook_mid`` (the interpreted neuron)
        for activations with an extra LayerNorm unless ``post_ln``, else ``hook_post``."""
        if not 0 <= layer < self.cfg.n_layers:
            raise ValueError(f"layer {layer} out of range 0..{self.cfg.n_layers - 1}")
        mid = cast(Block, self.blocks[layer]).mlp.hook_mid is not None and not post_ln
        return f"blocks.{layer}.mlp.{'hook_mid' if mid else 'hook_post'}"

    @torch.no_grad()
    def neuron_activations(
        self, tokens: torch.Tensor, layers: Iterable[int], post_ln: bool = False
    ) -> dict[int, torch.Tensor]:
        """``{layer: [batch, pos, d_mlp]}`` neuron activations, running only the blocks needed."""
        layers = sorted(set(layers))
        names = {self.neuron_hook(layer, post_ln): layer for layer in layers}
        cache = self.activations(tokens, names)
        return {layer: cache[name] for name, layer in names.items()}

    # -- accounting -------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``, atomically."""
        checkpoint.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, source: str | Path,
                        device: str | torch.device = "cpu") -> Transformer:
        """The model at ``source``: a solulab model directory, a TransformerLens checkpoint
        directory, or ``hf:ORG/NAME`` (such a checkpoint in the Hugging Face cache; nothing is
        downloaded). Every file is checked before the model is touched."""
        if hub.is_hub_name(source):
            source = hub.resolve(source)
        source = Path(source)
        if not source.is_dir():
            raise checkpoint.CheckpointError(f"{source}: no such model directory")
        if transformerlens.is_checkpoint(source):
            cfg, state = transformerlens.read_checkpoint(source)
            model = cls(cfg)
            model.load_state_dict(state)
        else:
            model = cls(checkpoint.read_config(source))
            checkpoint.load_weights(model, source)
        return model.to(device)

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` leaves out token and position embeddings and the
        unembedding, as scaling laws count model size."""
        skip = set()
        if non_embedding:
            skip = {id(self.embed.weight), id(self.unembed.weight), id(self.unembed.bias)}
            if self.pos_embed is not None:
                skip.add(id(self.pos_embed.weight))
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) not in skip and id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor, per_sequence: bool = False
            ) -> torch.Tensor:
    """Mean next-token cross-entropy in nats (a ``[batch]`` tensor of each sequence's mean with
    ``per_sequence``): position ``t`` predicts token ``t + 1`` (the last position has no target;
    it is ignored rather than sliced off, which would copy the logits)."""
    targets = next_token_targets(tokens)
    logits = logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32))
    if not per_sequence:
        return F.cross_entropy(logits, targets, ignore_index=IGNORE)
    losses = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")
    return losses.view(tokens.shape).sum(dim=1) / (tokens.shape[1] - 1)
