"""TransformerLens interop: solulab's exports (rotary and learned positions) load in
TransformerLens 4 with the same logits and MLP activations and import back unchanged; checkpoints
in HookedTransformer's layout and the older ``*_old`` one load with the numbers of an independent
slow reference; bad checkpoints and models TransformerLens cannot express get clear errors; an
imported model runs through collection unchanged."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import write_text_tree
from typer.testing import CliRunner

from solulab import ModelConfig, Transformer
from solulab.cli import app as cli_app
from solulab.core.transformerlens import to_transformerlens
from solulab.data import Corpus, build_corpus
from solulab.errors import SolulabError
from solulab.neurons.collect import collect, open_store
from solulab.neurons.settings import StoreSettings

TOL = 1e-4
D_VOCAB = 300
TOKENS = torch.randint(0, D_VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))
# solulab's MLP hooks and their names in a TransformerLens 4 bridge (which has no hook_mid: the
# SoLU output is the input of the MLP's LayerNorm).
BRIDGE_HOOKS = {"hook_pre": "hook_pre", "hook_mid": "ln.hook_in", "hook_post": "hook_post"}


@pytest.fixture(scope="module")
def tl():
    return pytest.importorskip("transformer_lens")


def tl_fields(act_fn="solu_ln", norm="LN", n_layers=2, **extra):
    return {"n_layers": n_layers, "d_model": 24, "n_heads": 3, "d_head": 8, "d_mlp": 40,
            "n_ctx": 16, "d_vocab": D_VOCAB, "act_fn": act_fn, "normalization_type": norm,
            "attn_only": False, "tokenizer_name": None, **extra}


def hooked_shapes(f):
    """HookedTransformer's parameters, written out independently of solulab's code."""
    d, h, dh, m = f["d_model"], f["n_heads"], f["d_head"], f["d_mlp"]
    shapes = {"embed.W_E": (f["d_vocab"], d), "unembed.W_U": (d, f["d_vocab"]),
              "unembed.b_U": (f["d_vocab"],)}
    if f.get("positional_embedding_type", "standard") == "standard":
        shapes["pos_embed.W_pos"] = (f["n_ctx"], d)
    lns = ["ln_final"] + [f"blocks.{i}.{ln}" for i in range(f["n_layers"]) for ln in ("ln1", "ln2")]
    for layer in range(f["n_layers"]):
        p = f"blocks.{layer}."
        shapes.update({p + "attn.W_O": (h, dh, d), p + "attn.b_O": (d,), p + "mlp.W_in": (d, m),
                       p + "mlp.b_in": (m,), p + "mlp.W_out": (m, d), p + "mlp.b_out": (d,)})
        for x in "QKV":
            shapes.update({p + f"attn.W_{x}": (h, d, dh), p + f"attn.b_{x}": (h, dh)})
        if f["act_fn"] == "solu_ln":
            shapes.update({p + "mlp.ln.w": (m,), p + "mlp.ln.b": (m,)})
    if f["normalization_type"] == "LN":
        shapes.update({f"{ln}.{wb}": (d,) for ln in lns for wb in "wb"})
    return shapes


def random_state(fields, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * 0.3
            for k, shape in hooked_shapes(fields).items()}


def layer_norm(x, state, name, eps):
    x = (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    return x * state[name + ".w"] + state[name + ".b"] if name + ".w" in state else x


def rotate(x, fields):
    """HookedTransformer's rotary embedding of ``x`` ``[batch, pos, head, d_head]``: adjacent
    pairs ``(2i, 2i+1)`` or halves ``(i, i + rotary_dim/2)``, per ``rotary_adjacent_pairs``."""
    r = fields.get("rotary_dim") or fields["d_head"]
    freq = fields.get("rotary_base", 10000) ** (-torch.arange(r // 2, dtype=x.dtype) * 2 / r)
    angle = torch.outer(torch.arange(x.shape[1], dtype=x.dtype), freq)[:, None]
    cos, sin = angle.cos(), angle.sin()
    rot, rest = x[..., :r], x[..., r:]
    adjacent = fields.get("rotary_adjacent_pairs", False)
    a, b = (rot[..., 0::2], rot[..., 1::2]) if adjacent else rot.chunk(2, dim=-1)
    a, b = a * cos - b * sin, b * cos + a * sin
    rot = torch.stack([a, b], -1).flatten(-2) if adjacent else torch.cat([a, b], -1)
    return torch.cat([rot, rest], -1)


def reference(fields, state, tokens):
    """Logits and MLP hooks of a HookedTransformer-layout checkpoint, computed slowly in float64
    from the layout's definition."""
    s = {k: v.double() for k, v in state.items()}
    eps, rotary = fields.get("eps", 1e-5), fields.get("positional_embedding_type") == "rotary"
    acts = {"gelu": torch.nn.functional.gelu, "relu": torch.relu,
            "solu": lambda x: x * x.softmax(-1), "solu_ln": lambda x: x * x.softmax(-1)}
    x = s["embed.W_E"][tokens]
    if not rotary:
        x = x + s["pos_embed.W_pos"][: tokens.shape[1]]
    mask = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).triu(1)
    hooks = {}
    for layer in range(fields["n_layers"]):
        p = f"blocks.{layer}."
        h = layer_norm(x, s, p + "ln1", eps)
        q, k, v = (torch.einsum("bpd,hde->bphe", h, s[p + f"attn.W_{c}"]) + s[p + f"attn.b_{c}"]
                   for c in "QKV")
        if rotary:
            q, k = rotate(q, fields), rotate(k, fields)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(fields["d_head"])
        pattern = scores.masked_fill(mask, -math.inf).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + torch.einsum("bqhe,hed->bqd", z, s[p + "attn.W_O"]) + s[p + "attn.b_O"]
        pre = layer_norm(x, s, p + "ln2", eps) @ s[p + "mlp.W_in"] + s[p + "mlp.b_in"]
        post = acts[fields["act_fn"]](pre)
        hooks[p + "mlp.hook_pre"] = pre
        if fields["act_fn"] == "solu_ln":
            hooks[p + "mlp.hook_mid"] = post
            post = layer_norm(post, s, p + "mlp.ln", eps)
        hooks[p + "mlp.hook_post"] = post
        x = x + post @ s[p + "mlp.W_out"] + s[p + "mlp.b_out"]
    return layer_norm(x, s, "ln_final", eps) @ s["unembed.W_U"] + s["unembed.b_U"], hooks


def old_layout(state, n_layers):
    """The ``*_old`` SoLU layout: ``norm`` names and transposed matrices (the inverse of the
    rules TransformerLens applies to those repositories)."""
    old = {}
    for key, value in state.items():
        if key == "pos_embed.W_pos" and n_layers <= 8:
            value = value.T
        elif "W_" in key and key != "pos_embed.W_pos" and n_layers <= 6:
            value = value.transpose(-2, -1)
        key = key.replace("ln_final.", "ln.").replace("ln", "norm")
        old[key] = value.clone()
    return old


def write_checkpoint(directory, fields, state):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(fields))
    torch.save(state, directory / "model_final.pth")
    return directory


def assert_matches_reference(fields, state, model, tokens=TOKENS):
    logits, hooks = reference(fields, state, tokens)
    with torch.no_grad():
        ours, cache = model.run_with_cache(tokens)
    assert logits.abs().max() > 1 and (logits - ours).abs().max() <= TOL
    for name, value in hooks.items():
        assert (value - cache[name]).abs().max() <= TOL, name
    assert {k for k in cache if "mlp.hook_" in k} == set(hooks)


def load_in_transformerlens(tl, directory):
    """An exported checkpoint loaded the way a TransformerLens 4 user loads one from disk."""
    from transformer_lens.conversion_utils import convert_tl_checkpoint

    cfg = tl.TransformerBridgeConfig.from_dict(json.loads((directory / "config.json").read_text()))
    bridge = tl.TransformerBridge.boot_native(cfg)
    state = torch.load(directory / "model_final.pth", weights_only=True)
    result = bridge.load_state_dict(convert_tl_checkpoint(state, cfg), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return bridge.eval()


def assert_same_as_bridge(bridge, model, tokens=TOKENS):
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens)
        ours, our_cache = model.run_with_cache(tokens)
    assert logits.abs().max() > 1 and (logits - ours).abs().max() <= TOL
    for layer in range(model.cfg.n_layers):
        for hook, theirs in BRIDGE_HOOKS.items():
            name = f"blocks.{layer}.mlp.{hook}"
            assert (name in our_cache) == (f"blocks.{layer}.mlp.{theirs}" in cache), name
            if name in our_cache:
                assert (cache[f"blocks.{layer}.mlp.{theirs}"] - our_cache[name]).abs().max() \
                    <= TOL, name


def random_model(**config):
    model = Transformer(ModelConfig(n_layers=2, d_model=24, n_heads=3, d_mlp=40, n_ctx=16,
                                    d_vocab=D_VOCAB, init_std=0.3, **config)).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


@pytest.mark.parametrize("config", [
    {}, {"act_fn": "gelu", "rotary_dim": 4, "rotary_base": 500.0},
    {"positional": "learned"}, {"positional": "learned", "act_fn": "solu"}],
    ids=["default-rotary", "gelu-partial-rotary", "learned", "learned-solu"])
def test_exports_load_in_transformerlens_4_and_round_trip(tmp_path, tl, config):
    model = random_model(**config)
    model.save_pretrained(tmp_path / "run")
    out = CliRunner().invoke(cli_app, ["export", str(tmp_path / "run"), "--to",
                                       "transformerlens", str(tmp_path / "tl")])
    assert out.exit_code == 0, out.output
    assert "boot_native" in out.output
    bridge = load_in_transformerlens(tl, tmp_path / "tl")
    assert_same_as_bridge(bridge, model)
    back = Transformer.from_pretrained(tmp_path / "tl")
    for field in ("positional", "rotary_dim", "rotary_base", "act_fn", "d_mlp", "ln_eps"):
        assert getattr(back.cfg, field) == getattr(model.cfg, field), field
    assert back.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_export_reorders_rotary_dimensions_into_adjacent_pairs():
    model = random_model(rotary_dim=4)
    fields, state = to_transformerlens(model)
    assert fields["rotary_adjacent_pairs"] and fields["rotary_dim"] == 4
    assert "pos_embed.W_pos" not in state
    qkv = model.state_dict()["blocks.0.attn.qkv.weight"].view(3, 3, 8, 24)
    # TransformerLens pairs (0, 1), (2, 3): solulab's pairs (0, 2), (1, 3); dims 4.. stay put.
    for tl_dim, our_dim in enumerate([0, 2, 1, 3, 4, 5, 6, 7]):
        assert torch.equal(state["blocks.0.attn.W_Q"][1, :, tl_dim], qkv[0, 1, our_dim])
        assert torch.equal(state["blocks.0.attn.W_K"][2, :, tl_dim], qkv[1, 2, our_dim])
        assert torch.equal(state["blocks.0.attn.W_V"][0, :, tl_dim], qkv[2, 0, tl_dim])
    assert_matches_reference(fields, state, model)


@pytest.mark.parametrize("act_fn, norm, layout, positions", [
    ("solu_ln", "LN", "hooked", "standard"), ("gelu", "LN", "hooked", "standard"),
    ("solu_ln", "LNPre", "hooked", "standard"), ("solu_ln", "LN", "hooked", "rotary-halves"),
    ("gelu", "LN", "hooked", "rotary-adjacent"), ("solu_ln", "LN", "old", "standard"),
    ("gelu", "LN", "old", "standard")])
def test_hooked_transformer_checkpoints_load_with_the_reference_numbers(tmp_path, act_fn, norm,
                                                                       layout, positions):
    rotary = {"standard": {}, "rotary-halves": {"rotary_dim": 6},
              "rotary-adjacent": {"rotary_dim": 6, "rotary_adjacent_pairs": True}}[positions]
    fields = tl_fields(act_fn, norm, **rotary)
    if rotary:
        fields["positional_embedding_type"] = "rotary"
    state = random_state(fields)
    stored = old_layout(state, fields["n_layers"]) if layout == "old" else state
    model = Transformer.from_pretrained(write_checkpoint(tmp_path / "ck", fields, stored)).eval()
    assert model.cfg.act_fn == act_fn
    assert model.cfg.positional == ("rotary" if rotary else "learned")
    assert_matches_reference(fields, state, model)


def test_the_old_layout_fixture_is_what_transformerlens_converts(tl):
    from transformer_lens.model_bridge.sources import tl_legacy

    fields = tl_fields(n_layers=2)
    state = random_state(fields)
    cfg = tl.TransformerBridgeConfig.from_dict(fields)
    converted = tl_legacy._convert_neel_solu_old_weights(old_layout(state, 2), cfg)
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], v) for k, v in state.items())


def test_transformerlens_4_reads_hooked_transformer_checkpoints_as_solulab_does(tmp_path, tl):
    fields = tl_fields("solu_ln", positional_embedding_type="rotary", rotary_dim=6,
                       rotary_adjacent_pairs=True)
    path = write_checkpoint(tmp_path / "ck", fields, random_state(fields, seed=3))
    assert_same_as_bridge(load_in_transformerlens(tl, path), Transformer.from_pretrained(path))


@pytest.mark.parametrize("config, message", [
    ({"act_blocks": 2}, "act_blocks=2: TransformerLens's SoLU softmax and LayerNorm span all"),
    ({"act_blocks": 2, "act_fn": "exp_ln"}, "act_fn 'exp_ln' has no TransformerLens equivalent"),
    ({"act_fn": "gelu_ln"}, "act_fn 'gelu_ln' has no TransformerLens equivalent"),
    ({"rotary_base": 1e4 + 0.5}, "rotary_base=10000.5: TransformerLens keeps an integer base"),
])
def test_models_transformerlens_cannot_express_are_refused(tmp_path, config, message):
    random_model(**config).save_pretrained(tmp_path / "run")
    out = CliRunner().invoke(cli_app, ["export", str(tmp_path / "run"), str(tmp_path / "tl")])
    assert out.exit_code != 0
    assert "cannot export to TransformerLens" in out.output and message in out.output
    assert not (tmp_path / "tl").exists()


@pytest.mark.parametrize("change, message", [
    ({"act_fn": "gelu_new"}, "act_fn 'gelu_new' is not supported"),
    ({"positional_embedding_type": "alibi"}, "positional_embedding_type 'alibi'"),
    ({"shortformer_pos": True}, "shortformer_pos=True is not supported"),
    ({"attn_only": True}, "attn_only=True is not supported"),
    ({"n_key_value_heads": 1}, "n_key_value_heads=1 is not supported"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling="),
    ({"d_mlp": 48}, "disagrees with its config.json: blocks.0.mlp.W_in: weights (24, 40)"),
    ({"n_layers": 3}, "missing blocks.2"),
    ({"positional_embedding_type": "rotary"}, "unexpected pos_embed.W_pos"),
])
def test_bad_checkpoints_get_clear_errors(tmp_path, change, message):
    fields = tl_fields()
    path = write_checkpoint(tmp_path / "ck", {**fields, **change}, random_state(fields))
    with pytest.raises(SolulabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Transformer.from_pretrained(path)


def test_an_unknown_layout_and_an_ambiguous_weights_file(tmp_path):
    fields = tl_fields()
    path = write_checkpoint(tmp_path / "ck", fields, {"transformer.wte.weight": torch.zeros(3)})
    with pytest.raises(SolulabError, match="unknown layout.*transformer.wte.weight"):
        Transformer.from_pretrained(path)
    torch.save({}, path / "other.pth")
    torch.save({}, path / "another.pth")
    (path / "model_final.pth").rename(path / "model_a.pth")
    with pytest.raises(SolulabError, match="cannot tell which"):
        Transformer.from_pretrained(path)


def test_hub_names_resolve_from_the_cache_only(tmp_path, monkeypatch, small_corpus):
    cache = tmp_path / "hub"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    with pytest.raises(SolulabError, match="not in the Hugging Face cache.*huggingface-cli "
                                           "download someone/SoLU_2L_test"):
        Transformer.from_pretrained("hf:someone/SoLU_2L_test")
    fields, state = tl_fields(), random_state(tl_fields())
    repo = cache / "models--someone--SoLU_2L_test"
    write_checkpoint(repo / "snapshots" / "abc123", {**fields, "tokenizer_name":
                                                     "someone/tokenizer"}, state)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert_matches_reference(fields, state,
                             Transformer.from_pretrained("hf:someone/SoLU_2L_test").eval())
    out = CliRunner().invoke(cli_app, ["import", "hf:someone/SoLU_2L_test",
                                       str(tmp_path / "run")])
    assert out.exit_code != 0
    assert "tokenizer 'someone/tokenizer' is not on this machine" in out.output
    assert "huggingface-cli download someone/tokenizer tokenizer.json" in out.output
    tok = cache / "models--someone--tokenizer"
    (tok / "snapshots" / "def456").mkdir(parents=True)
    shutil.copy(small_corpus / "tokenizer.json", tok / "snapshots" / "def456")
    (tok / "refs").mkdir()
    (tok / "refs" / "main").write_text("def456")
    out = CliRunner().invoke(cli_app, ["import", "hf:someone/SoLU_2L_test",
                                       str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "run" / "tokenizer.json").read_bytes() == \
        (small_corpus / "tokenizer.json").read_bytes()


def test_an_imported_model_runs_through_collection(tmp_path, small_corpus):
    fields = tl_fields()
    state = random_state(fields)
    checkpoint = write_checkpoint(tmp_path / "ck", fields, state)
    out = CliRunner().invoke(cli_app, ["import", str(checkpoint), str(tmp_path / "run")])
    assert out.exit_code != 0 and "no tokenizer.json" in out.output
    shutil.copy(small_corpus / "tokenizer.json", checkpoint / "tokenizer.json")
    out = CliRunner().invoke(cli_app, ["import", str(checkpoint), str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    corpus = tmp_path / "corpus"
    build_corpus(corpus, [write_text_tree(tmp_path / "text", n_docs=20)], progress=False,
                 tokenizer=tmp_path / "run" / "tokenizer.json")
    collect(tmp_path / "run", corpus, n_tokens=512, settings=StoreSettings(k=8), progress=False)
    top = open_store(tmp_path / "run").examples(1, 5, "mid")[0]
    tokens = np.asarray(Corpus(corpus).tokens("val")[:512]).astype(np.int64)
    _, hooks = reference(fields, state, torch.from_numpy(tokens).view(-1, 16))
    mid = hooks["blocks.1.mlp.hook_mid"][..., 5].flatten()
    assert top.value == pytest.approx(mid.max().item(), abs=TOL)
    assert top.position == int(mid.argmax())
