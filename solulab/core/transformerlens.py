"""TransformerLens checkpoints in and out: a ``config.json`` with TransformerLens field names
beside a ``*.pth`` state dict in ``HookedTransformer`` layout (``embed.W_E``,
``blocks.0.attn.W_Q``, ...), the layout TransformerLens 4 still reads through
``convert_tl_checkpoint`` into a ``TransformerBridge.boot_native`` model.

The two models compute the same function: a pre-LayerNorm decoder with learned or rotary
positions, whose MLP hooks carry the same values. Only the parameter layout differs:
TransformerLens keeps one ``[heads, d_model, d_head]`` matrix per Q, K and V and right-facing
``[d_in, d_out]`` matrices, solulab a fused ``qkv`` projection and ``nn.Linear``'s
``[d_out, d_in]``. Rotary models rotate pairs of head dimensions: solulab pairs dimension ``i``
with ``i + rotary_dim / 2`` (GPT-NeoX), TransformerLens 4 pairs ``2i`` with ``2i + 1`` (its
config's ``rotary_adjacent_pairs``; TransformerLens 3 honoured the flag, 4 always pairs adjacent
dimensions), so the Q and K columns are reordered. The ``*_old`` SoLU checkpoints use a still
older layout: ``norm`` for ``ln`` and, in models of up to 6 layers, every matrix transposed (up to
8 layers, ``W_pos`` alone); it is recognised by its ``norm`` names and converted by those rules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from solulab.core.activation_specs import REGISTRY
from solulab.core.config import ConfigError, ModelConfig
from solulab.errors import SolulabError
from solulab.io import atomic_write_bytes, atomic_write_json

CONFIG_FILE = "config.json"
EXPORT_WEIGHTS = "model_final.pth"
# TransformerLens act_fn names solulab computes identically
ACT_FNS = tuple(s.transformerlens for s in REGISTRY.values() if s.transformerlens)
POSITIONS = {"standard": "learned", "rotary": "rotary"}  # TransformerLens name -> solulab's
BUFFERS = (".mask", ".IGNORE", "rotary_sin", "rotary_cos")  # recomputed, not weights
# Fields that change the computation, and the only value solulab supports for each.
MUST_BE = {"attn_only": False, "final_rms": False, "parallel_attn_mlp": False,
           "gated_mlp": False, "use_attn_scale": True, "shortformer_pos": False,
           "scale_attn_by_inverse_layer_idx": False, "post_embedding_ln": False,
           "use_qk_norm": False, "use_local_attn": False, "attention_dir": "causal",
           "use_NTK_by_parts_rope": False, "rope_scaling": None,
           "attn_scores_soft_cap": -1.0, "output_logits_soft_cap": -1.0}


class TransformerLensError(SolulabError):
    """A TransformerLens checkpoint solulab cannot read, with the reason."""


def is_checkpoint(directory: Path) -> bool:
    """A directory with a TransformerLens config (no solulab format field) and a ``*.pth``."""
    config = Path(directory) / CONFIG_FILE
    if not config.is_file() or not any(Path(directory).glob("*.pth")):
        return False
    try:
        return "solulab_format_version" not in json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def unsupported_fields(tl: dict[str, Any]) -> list[str]:
    """Why solulab cannot compute this TransformerLens config's function, one reason a field."""
    allowed = {**{k: (v,) for k, v in MUST_BE.items()},
               "n_key_value_heads": (None, tl["n_heads"]), "d_vocab_out": (-1, tl["d_vocab"]),
               "attn_scale": (-1.0, math.sqrt(tl["d_head"]))}
    reasons = [f"{k}={tl[k]!r} is not supported (solulab models have "
               f"{' or '.join(map(repr, values))})"
               for k, values in allowed.items() if tl.get(k, values[0]) not in values]
    positions = tl.get("positional_embedding_type", "standard")
    if positions not in POSITIONS:
        reasons.append(f"positional_embedding_type {positions!r} is not supported "
                       f"({' or '.join(POSITIONS)})")
    norm = tl.get("normalization_type", tl.get("normalization", "LN"))
    if norm not in ("LN", "LNPre"):
        reasons.append(f"normalization_type {norm!r} is not supported (LN or LNPre)")
    if tl["act_fn"] not in ACT_FNS:
        reasons.append(f"act_fn {tl['act_fn']!r} is not supported; solulab reads "
                       f"{', '.join(ACT_FNS)}")
    return reasons


def read_config(directory: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The solulab ``ModelConfig`` of a TransformerLens ``config.json``, and the raw fields."""
    path = Path(directory) / CONFIG_FILE
    try:
        tl = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TransformerLensError(f"{path}: cannot read ({e})") from None
    missing = [k for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx",
                           "d_vocab", "act_fn") if k not in tl]
    if missing:
        raise TransformerLensError(f"{path}: missing TransformerLens fields {', '.join(missing)}")
    reasons = unsupported_fields(tl)
    if reasons:
        raise TransformerLensError(f"{path}: " + "; ".join(reasons))
    positional = POSITIONS[tl.get("positional_embedding_type", "standard")]
    rotary = {"rotary_dim": tl.get("rotary_dim") or tl["d_head"],
              "rotary_base": float(tl.get("rotary_base", 10000))} if positional == "rotary" else {}
    try:
        cfg = ModelConfig(n_layers=tl["n_layers"], d_model=tl["d_model"], n_heads=tl["n_heads"],
                          d_head=tl["d_head"], d_mlp=tl["d_mlp"], n_ctx=tl["n_ctx"],
                          d_vocab=tl["d_vocab"], act_fn=tl["act_fn"], positional=positional,
                          ln_eps=tl.get("eps", 1e-5), **rotary)
    except ConfigError as e:
        raise TransformerLensError(f"{path}: {e}") from None
    return cfg, tl


def rotary_order(cfg: ModelConfig) -> torch.Tensor:
    """TransformerLens's Q/K head dimensions in adjacent-pair order, as solulab's: entry ``2i``
    is solulab's dimension ``i``, entry ``2i + 1`` solulab's ``i + rotary_dim / 2``."""
    assert cfg.rotary_dim is not None and cfg.d_head is not None
    r = cfg.rotary_dim
    return torch.cat([torch.arange(r).view(2, r // 2).T.flatten(), torch.arange(r, cfg.d_head)])


def import_order(cfg: ModelConfig, fields: dict[str, Any]) -> torch.Tensor:
    """The index that puts a checkpoint's Q/K head dimensions into solulab's order (only
    rotary checkpoints with ``rotary_adjacent_pairs`` need reordering)."""
    if cfg.positional == "rotary" and fields.get("rotary_adjacent_pairs", False):
        return torch.argsort(rotary_order(cfg))
    assert cfg.d_head is not None
    return torch.arange(cfg.d_head)


def weights_file(directory: Path) -> Path:
    """The checkpoint's state dict: the only ``*.pth``, else the one ending ``final.pth``."""
    files = sorted(Path(directory).glob("*.pth"))
    final = [f for f in files if f.name.endswith("final.pth")]
    if len(files) == 1 or len(final) == 1:
        return files[0] if len(files) == 1 else final[0]
    raise TransformerLensError(f"{directory}: cannot tell which of {[f.name for f in files]} "
                               "holds the weights (keep one *.pth, or name it *final.pth)")


def modernise(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """The ``*_old`` SoLU layout converted to ``HookedTransformer``'s (unchanged otherwise)."""
    if not any("norm" in key for key in state):
        return state
    new = {}
    for key, value in state.items():
        key = key.replace("norm", "ln")
        new["ln_final." + key[3:] if key.startswith("ln.") else key] = value
    for key, value in new.items():
        if key == "pos_embed.W_pos" and n_layers <= 8:
            new[key] = value.T
        elif "W_" in key and key != "pos_embed.W_pos" and n_layers <= 6:
            new[key] = value.transpose(-2, -1)
    return new


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of a ``HookedTransformer`` of this shape (LayerNorm gains and biases
    included; an ``LNPre`` checkpoint lacks them)."""
    assert cfg.d_head is not None and cfg.d_mlp is not None
    h, d, dh, m = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp
    shapes = {"embed.W_E": (cfg.d_vocab, d), "ln_final.w": (d,), "ln_final.b": (d,),
              "unembed.W_U": (d, cfg.d_vocab), "unembed.b_U": (cfg.d_vocab,)}
    if cfg.positional == "learned":
        shapes["pos_embed.W_pos"] = (cfg.n_ctx, d)
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        shapes.update({p + "ln1.w": (d,), p + "ln1.b": (d,), p + "ln2.w": (d,), p + "ln2.b": (d,),
                       p + "attn.W_O": (h, dh, d), p + "attn.b_O": (d,),
                       p + "mlp.W_in": (d, m), p + "mlp.b_in": (m,),
                       p + "mlp.W_out": (m, d), p + "mlp.b_out": (d,)})
        for x in "QKV":
            shapes[p + f"attn.W_{x}"] = (h, d, dh)
            shapes[p + f"attn.b_{x}"] = (h, dh)
        if cfg.act_fn == "solu_ln":
            shapes.update({p + "mlp.ln.w": (m,), p + "mlp.ln.b": (m,)})
    return shapes


def check_state(state: dict[str, torch.Tensor], cfg: ModelConfig, source: Path,
                lnpre: bool = False) -> None:
    """Refuse weights that disagree with the config, naming the first few problems. ``lnpre``
    checkpoints have no LayerNorm gains or biases."""
    shapes = expected_shapes(cfg)
    optional = {k for k in shapes if k.endswith((".w", ".b")) and "ln" in k} if lnpre else set()
    weights = {k for k in state if not k.endswith(BUFFERS)}
    if not weights & set(shapes):
        raise TransformerLensError(
            f"{source}: an unknown layout, neither HookedTransformer's (embed.W_E, "
            f"blocks.0.attn.W_Q, ...) nor the old SoLU one; its keys begin "
            f"{', '.join(sorted(weights)[:5])}")
    problems = [f"missing {k}" for k in sorted(set(shapes) - weights - optional)]
    problems += [f"unexpected {k}" for k in sorted(weights - set(shapes))]
    problems += [f"{k}: weights {tuple(state[k].shape)} vs config {shapes[k]}"
                 for k in sorted(weights & set(shapes)) if tuple(state[k].shape) != shapes[k]]
    if problems:
        raise TransformerLensError(f"{source} disagrees with its {CONFIG_FILE}: "
                                   + "; ".join(problems[:5])
                                   + (f" (and {len(problems) - 5} more)" if len(problems) > 5
                                      else ""))


def to_solulab(state: dict[str, torch.Tensor], cfg: ModelConfig,
               order: torch.Tensor) -> dict[str, torch.Tensor]:
    """A ``HookedTransformer`` state dict in solulab's layout, Q and K head dimensions taken in
    ``order`` (see ``import_order``); absent LayerNorm weights (LNPre) become the identity."""
    def get(key: str, fill: float) -> torch.Tensor:
        return state[key] if key in state else torch.full(expected_shapes(cfg)[key], fill)

    out = {"embed.weight": state["embed.W_E"],
           "ln_final.w": get("ln_final.w", 1.0), "ln_final.b": get("ln_final.b", 0.0),
           "unembed.weight": state["unembed.W_U"].T, "unembed.bias": state["unembed.b_U"]}
    if cfg.positional == "learned":
        out["pos_embed.weight"] = state["pos_embed.W_pos"]
    assert cfg.d_head is not None
    orders = {"Q": order, "K": order, "V": torch.arange(cfg.d_head)}
    for layer in range(cfg.n_layers):
        tl, sl = f"blocks.{layer}.", f"blocks.{layer}."
        for ln in ("ln1", "ln2"):
            out[sl + f"{ln}.w"] = get(tl + f"{ln}.w", 1.0)
            out[sl + f"{ln}.b"] = get(tl + f"{ln}.b", 0.0)
        out[sl + "attn.qkv.weight"] = torch.cat(
            [state[tl + f"attn.W_{x}"][..., orders[x]].transpose(1, 2).flatten(0, 1)
             for x in "QKV"])
        out[sl + "attn.qkv.bias"] = torch.cat([state[tl + f"attn.b_{x}"][..., orders[x]].flatten()
                                               for x in "QKV"])
        out[sl + "attn.out.weight"] = state[tl + "attn.W_O"].flatten(0, 1).T
        out[sl + "attn.out.bias"] = state[tl + "attn.b_O"]
        out[sl + "mlp.fc_in.weight"] = state[tl + "mlp.W_in"].T
        out[sl + "mlp.fc_in.bias"] = state[tl + "mlp.b_in"]
        out[sl + "mlp.fc_out.weight"] = state[tl + "mlp.W_out"].T
        out[sl + "mlp.fc_out.bias"] = state[tl + "mlp.b_out"]
        if cfg.act_fn == "solu_ln":
            out[sl + "mlp.act.ln.w"] = get(tl + "mlp.ln.w", 1.0)
            out[sl + "mlp.act.ln.b"] = get(tl + "mlp.ln.b", 0.0)
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def read_checkpoint(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The ``ModelConfig`` and solulab-layout state dict of a TransformerLens checkpoint."""
    directory = Path(directory)
    cfg, fields = read_config(directory)
    path = weights_file(directory)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad pickle
        raise TransformerLensError(f"{path}: not a readable state dict ({e})") from None
    if not isinstance(state, dict):
        raise TransformerLensError(f"{path}: holds a {type(state).__name__}, not a state dict")
    state = modernise(state, cfg.n_layers)
    lnpre = fields.get("normalization_type", fields.get("normalization")) == "LNPre"
    check_state(state, cfg, path, lnpre)
    return cfg, to_solulab(state, cfg, import_order(cfg, fields))


def export_refusals(cfg: ModelConfig) -> list[str]:
    """Why TransformerLens cannot compute this model's function, one reason a feature."""
    reasons = []
    if cfg.act_fn not in ACT_FNS:
        reasons.append(f"act_fn {cfg.act_fn!r} has no TransformerLens equivalent "
                       f"(it has {', '.join(ACT_FNS)})")
    if cfg.act_blocks != 1 and cfg.act_fn in ("solu", "solu_ln"):
        reasons.append(f"act_blocks={cfg.act_blocks}: TransformerLens's SoLU softmax and "
                       "LayerNorm span all of d_mlp, not blocks of it")
    if cfg.positional == "rotary" and cfg.rotary_base != int(cfg.rotary_base):
        reasons.append(f"rotary_base={cfg.rotary_base}: TransformerLens keeps an integer base")
    return reasons


def to_transformerlens(model: nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config fields, state dict)`` of the same model in ``HookedTransformer`` layout."""
    cfg = cast(ModelConfig, model.cfg)
    reasons = export_refusals(cfg)
    if reasons:
        raise TransformerLensError("cannot export to TransformerLens: " + "; ".join(reasons))
    assert cfg.d_head is not None
    h, dh = cfg.n_heads, cfg.d_head
    s = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    state = {"embed.W_E": s["embed.weight"],
             "ln_final.w": s["ln_final.w"], "ln_final.b": s["ln_final.b"],
             "unembed.W_U": s["unembed.weight"].T,
             "unembed.b_U": s.get("unembed.bias", torch.zeros(cfg.d_vocab))}
    if cfg.positional == "learned":
        state["pos_embed.W_pos"] = s["pos_embed.weight"]
    order = rotary_order(cfg) if cfg.positional == "rotary" else torch.arange(dh)
    orders = {"Q": order, "K": order, "V": torch.arange(dh)}
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        for ln in ("ln1", "ln2"):
            state[p + f"{ln}.w"], state[p + f"{ln}.b"] = s[p + f"{ln}.w"], s[p + f"{ln}.b"]
        qkv = s[p + "attn.qkv.weight"].view(3, h, dh, cfg.d_model)
        bias = s[p + "attn.qkv.bias"].view(3, h, dh)
        for i, x in enumerate("QKV"):
            state[p + f"attn.W_{x}"] = qkv[i].transpose(1, 2)[..., orders[x]]
            state[p + f"attn.b_{x}"] = bias[i][..., orders[x]]
        state[p + "attn.W_O"] = s[p + "attn.out.weight"].T.reshape(h, dh, cfg.d_model)
        state[p + "attn.b_O"] = s[p + "attn.out.bias"]
        state[p + "mlp.W_in"] = s[p + "mlp.fc_in.weight"].T
        state[p + "mlp.b_in"] = s[p + "mlp.fc_in.bias"]
        state[p + "mlp.W_out"] = s[p + "mlp.fc_out.weight"].T
        state[p + "mlp.b_out"] = s[p + "mlp.fc_out.bias"]
        if cfg.act_fn == "solu_ln":
            state[p + "mlp.ln.w"], state[p + "mlp.ln.b"] = (s[p + "mlp.act.ln.w"],
                                                            s[p + "mlp.act.ln.b"])
    return config_fields(cfg), {k: v.contiguous() for k, v in state.items()}


def config_fields(cfg: ModelConfig) -> dict[str, Any]:
    """The TransformerLens config of a model (``TransformerBridgeConfig`` field names)."""
    fields = {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
              "d_head": cfg.d_head, "d_mlp": cfg.d_mlp, "n_ctx": cfg.n_ctx,
              "d_vocab": cfg.d_vocab, "act_fn": cfg.act_fn, "normalization_type": "LN",
              "eps": cfg.ln_eps, "attn_only": False, "positional_embedding_type": "standard"}
    if cfg.positional == "rotary":
        fields.update(positional_embedding_type="rotary", rotary_dim=cfg.rotary_dim,
                      rotary_base=int(cfg.rotary_base), rotary_adjacent_pairs=True)
    return fields


def export(model: nn.Module, out: str | Path, tokenizer: Path | None = None) -> Path:
    """Write ``config.json`` and ``model_final.pth`` (and ``tokenizer.json``) into ``out``."""
    import io

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SolulabError(f"{out} is not empty: export into a new directory")
    fields, state = to_transformerlens(model)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(out / EXPORT_WEIGHTS, buffer.getvalue())
    if tokenizer is not None and tokenizer.is_file():
        atomic_write_bytes(out / "tokenizer.json", tokenizer.read_bytes())
    atomic_write_json(out / CONFIG_FILE, fields)
    return out
