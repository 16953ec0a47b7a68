"""TransformerLens interop: checkpoints in both layouts load in solulab and in TransformerLens with
the same logits and MLP activations; solulab's export loads in TransformerLens; bad checkpoints
get clear errors; an imported model runs through collection unchanged."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import write_text_tree
from typer.testing import CliRunner

from solulab import ModelConfig, Transformer
from solulab.cli import app as cli_app
from solulab.data import Corpus, build_corpus
from solulab.errors import SolulabError
from solulab.neurons.collect import collect, open_store

tl = pytest.importorskip("transformer_lens")
warnings.filterwarnings("ignore", category=DeprecationWarning)
from transformer_lens.pretrained.weight_conversions.neel_solu_old import (  # noqa: E402
    convert_neel_solu_old_weights,
)

TOL = 1e-4
D_VOCAB = 300


def tl_fields(act_fn="solu_ln", norm="LN", n_layers=2):
    return {"n_layers": n_layers, "d_model": 24, "n_heads": 3, "d_head": 8, "d_mlp": 40,
            "n_ctx": 16, "d_vocab": D_VOCAB, "act_fn": act_fn, "normalization_type": norm,
            "attn_only": False, "tokenizer_name": None}


def random_tl_model(fields, seed=0):
    model = tl.HookedTransformer(tl.HookedTransformerConfig(**fields))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def old_layout(state, n_layers):
    """The ``*_old`` SoLU layout: ``norm`` names and transposed matrices (inverse of the
    TransformerLens converter)."""
    old = {}
    for key, value in state.items():
        if key.endswith((".mask", ".IGNORE")):
            continue
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


def assert_same(tl_model, model, tokens):
    logits, cache = tl_model.run_with_cache(tokens)
    ours, our_cache = model.run_with_cache(tokens)
    assert (logits - ours).abs().max() <= TOL
    for layer in range(model.cfg.n_layers):
        for hook in ("hook_pre", "hook_mid", "hook_post"):
            name = f"blocks.{layer}.mlp.{hook}"
            if name in cache:
                assert (cache[name] - our_cache[name]).abs().max() <= TOL, name
    assert ("blocks.0.mlp.hook_mid" in cache) == ("blocks.0.mlp.hook_mid" in our_cache)


TOKENS = torch.randint(0, D_VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("act_fn, norm, layout", [
    ("solu_ln", "LN", "hooked"), ("gelu", "LN", "hooked"), ("solu_ln", "LNPre", "hooked"),
    ("solu_ln", "LN", "old"), ("gelu", "LN", "old")])
def test_checkpoints_load_with_the_same_numbers_as_transformerlens(tmp_path, act_fn, norm,
                                                                    layout):
    fields = tl_fields(act_fn, norm)
    reference = random_tl_model(fields)
    state = reference.state_dict()
    if layout == "old":
        state = old_layout(state, fields["n_layers"])
        in_tl = tl.HookedTransformer(tl.HookedTransformerConfig(**fields)).eval()
        in_tl.load_state_dict(convert_neel_solu_old_weights(dict(state), in_tl.cfg),
                              strict=False)
        assert_same(reference, in_tl, TOKENS)  # the fixture is the layout TL converts
    path = write_checkpoint(tmp_path / "ck", fields, state)
    model = Transformer.from_pretrained(path).eval()
    assert model.cfg.act_fn == act_fn and model.cfg.positional == "learned"
    with torch.no_grad():
        assert_same(reference, model, TOKENS)


def test_export_round_trips_through_transformerlens(tmp_path):
    model = Transformer(ModelConfig(n_layers=2, d_model=24, n_heads=3, d_mlp=40, n_ctx=16,
                                    d_vocab=D_VOCAB, act_fn="solu_ln", positional="learned",
                                    init_std=0.3)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".w", ".b", "bias")):
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(tmp_path / "run")
    out = CliRunner().invoke(cli_app, ["export", str(tmp_path / "run"), "--to",
                                       "transformerlens", str(tmp_path / "tl")])
    assert out.exit_code == 0, out.output
    fields = json.loads((tmp_path / "tl" / "config.json").read_text())
    in_tl = tl.HookedTransformer(tl.HookedTransformerConfig(**fields)).eval()
    missing, unexpected = in_tl.load_state_dict(
        torch.load(tmp_path / "tl" / "model_final.pth"), strict=False)
    assert not unexpected and all(k.endswith((".mask", ".IGNORE")) for k in missing)
    with torch.no_grad():
        assert_same(in_tl, model, TOKENS)
    back = Transformer.from_pretrained(tmp_path / "tl")
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    out = CliRunner().invoke(cli_app, ["export", str(tmp_path / "run"), str(tmp_path / "tl")])
    assert out.exit_code != 0 and "not empty" in out.output
    rotary = tmp_path / "rotary"
    Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=50)).save_pretrained(rotary)
    out = CliRunner().invoke(cli_app, ["export", str(rotary), str(tmp_path / "tl2")])
    assert out.exit_code != 0 and "learned positions" in out.output


@pytest.mark.parametrize("change, message", [
    ({"act_fn": "gelu_new"}, "act_fn 'gelu_new' is not supported"),
    ({"positional_embedding_type": "rotary"}, "positional_embedding_type 'rotary'"),
    ({"shortformer_pos": True}, "shortformer_pos=True is not supported"),
    ({"attn_only": True}, "attn_only=True is not supported"),
    ({"d_mlp": 48}, "disagrees with its config.json: blocks.0.mlp.W_in: weights (24, 40)"),
    ({"n_layers": 3}, "missing blocks.2"),
])
def test_bad_checkpoints_get_clear_errors(tmp_path, change, message):
    fields = tl_fields()
    path = write_checkpoint(tmp_path / "ck", {**fields, **change},
                            random_tl_model(fields).state_dict())
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
    reference = random_tl_model(tl_fields())
    repo = cache / "models--someone--SoLU_2L_test"
    write_checkpoint(repo / "snapshots" / "abc123",
                     {**tl_fields(), "tokenizer_name": "someone/tokenizer"},
                     reference.state_dict())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    with torch.no_grad():
        assert_same(reference, Transformer.from_pretrained("hf:someone/SoLU_2L_test").eval(),
                    TOKENS)
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
    reference = random_tl_model(fields)
    checkpoint = write_checkpoint(tmp_path / "ck", fields, reference.state_dict())
    out = CliRunner().invoke(cli_app, ["import", str(checkpoint), str(tmp_path / "run")])
    assert out.exit_code != 0 and "no tokenizer.json" in out.output
    shutil.copy(small_corpus / "tokenizer.json", checkpoint / "tokenizer.json")
    out = CliRunner().invoke(cli_app, ["import", str(checkpoint), str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    corpus = tmp_path / "corpus"
    build_corpus(corpus, [write_text_tree(tmp_path / "text", n_docs=20)], progress=False,
                 tokenizer=tmp_path / "run" / "tokenizer.json")
    collect(tmp_path / "run", corpus, n_tokens=512, k=8, progress=False)
    top = open_store(tmp_path / "run").examples(1, 5, "mid")[0]
    tokens = np.asarray(Corpus(corpus).tokens("val")[:512]).astype(np.int64)
    with torch.no_grad():
        _, cache = reference.run_with_cache(torch.from_numpy(tokens).view(-1, 16))
    mid = cache["blocks.1.mlp.hook_mid"][..., 5].flatten()
    assert top.value == pytest.approx(mid.max().item(), abs=TOL)
    assert top.position == int(mid.argmax())
