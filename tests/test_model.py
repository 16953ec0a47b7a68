import json

import pytest
import torch

from solulab import ModelConfig, Transformer
from solulab.core.checkpoint import CheckpointError
from solulab.core.config import ConfigError
from solulab.core.model import lm_loss


def tiny(**kw):
    base = dict(n_layers=2, d_model=32, n_heads=4, d_mlp=64, n_ctx=16, d_vocab=50)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(d_model=30, n_heads=4), "d_model \\(30\\) is not divisible by n_heads \\(4\\)"),
        (dict(act_fn="swish"), "unknown act_fn 'swish'; known: gelu, relu, solu, solu_ln"),
        (dict(d_mlp=60, act_blocks=7), "d_mlp \\(60\\) is not divisible by act_blocks \\(7\\)"),
        (dict(positional="alibi"), "known: rotary, learned"),
        (dict(n_layers=0), "n_layers must be a positive integer"),
    ],
)
def test_config_errors_say_what_to_change(kw, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**kw)


@pytest.mark.parametrize("positional", ["rotary", "learned"])
@pytest.mark.parametrize("act", ["gelu", "solu_ln"])
def test_causality(positional, act):
    model = Transformer(tiny(positional=positional, act_fn=act)).double()
    tokens = torch.randint(0, 50, (2, 12))
    changed = tokens.clone()
    t = 7
    changed[:, t] = (tokens[:, t] + 1) % 50
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-12)
    assert (a[:, t] - b[:, t]).abs().max() > 1e-6


def test_hook_mid_is_what_the_extra_layernorm_reads_and_hook_post_what_w_out_reads():
    model = Transformer(tiny(act_fn="solu_ln", act_blocks=2))
    tokens = torch.randint(0, 50, (2, 10))
    captured = {}
    mlp = model.blocks[1].mlp
    mlp.act.ln.register_forward_hook(lambda m, i, o: captured.__setitem__("ln_in", i[0]))
    mlp.fc_out.register_forward_hook(lambda m, i, o: captured.__setitem__("out_in", i[0]))
    _, cache = model.run_with_cache(tokens)
    assert torch.equal(cache["blocks.1.mlp.hook_mid"], captured["ln_in"])
    assert torch.equal(cache["blocks.1.mlp.hook_post"], captured["out_in"])
    # And they are the activation's parts applied to hook_pre.
    pre = cache["blocks.1.mlp.hook_pre"]
    torch.testing.assert_close(cache["blocks.1.mlp.hook_mid"], mlp.act.nonlinearity(pre))
    torch.testing.assert_close(cache["blocks.1.mlp.hook_post"], mlp.act.reference(pre))


@pytest.mark.parametrize("act", ["solu_ln", "gelu"])
def test_patching_a_neuron_changes_the_logits_as_computed_by_hand(act):
    """Ablate neuron 5 of the last layer through ``run_with_hooks`` and recompute the rest of
    the forward pass by hand from the cached residual stream."""
    model = Transformer(tiny(act_fn=act, n_layers=1)).double()
    tokens = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(1))
    name = model.neuron_hook(0)
    seen = []

    def ablate(value, hook_name):
        seen.append(hook_name)
        value = value.clone()
        value[..., 5] = 0.0
        return value

    patched = model.run_with_hooks(tokens, {name: ablate})
    assert seen == [name] and all(not h.fns for h in model.hook_points.values())
    logits, cache = model.run_with_cache(tokens)
    mlp = model.blocks[0].mlp
    neuron = ablate(cache[name], name)
    post = mlp.act.ln(neuron) if name.endswith("hook_mid") else neuron
    resid = cache["blocks.0.hook_resid_mid"] + mlp.fc_out(post)
    by_hand = model.unembed(model.ln_final(resid))
    torch.testing.assert_close(patched, by_hand, rtol=0, atol=1e-10)
    assert (patched - logits).abs().max() > 1e-4  # the ablation did change them
    with pytest.raises(KeyError, match="unknown hook names"):
        model.run_with_hooks(tokens, {"blocks.0.mlp.hook_nothing": ablate})


def test_no_hook_mid_without_extra_layernorm():
    model = Transformer(tiny(act_fn="gelu"))
    assert "blocks.0.mlp.hook_mid" not in model.hook_points
    assert model.neuron_hook(0) == "blocks.0.mlp.hook_post"
    assert Transformer(tiny()).neuron_hook(1) == "blocks.1.mlp.hook_mid"


def test_run_with_cache_stores_only_what_is_asked_and_leaves_no_sinks():
    model = Transformer(tiny())
    tokens = torch.randint(0, 50, (1, 8))
    logits, cache = model.run_with_cache(tokens, names=["blocks.0.mlp.hook_mid"])
    assert list(cache) == ["blocks.0.mlp.hook_mid"]
    assert all(not h.fns for h in model.hook_points.values())
    torch.testing.assert_close(logits, model(tokens))
    with pytest.raises(KeyError, match="unknown hook names"):
        model.run_with_cache(tokens, names=["blocks.9.mlp.hook_mid"])


def test_neuron_activations_runs_only_needed_blocks():
    model = Transformer(tiny(n_layers=3))
    calls = []
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, inp, i=i: calls.append(i))
    tokens = torch.randint(0, 50, (2, 8))
    acts = model.neuron_activations(tokens, layers=[0])
    assert calls == [0]
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(acts[0], cache["blocks.0.mlp.hook_mid"])
    assert acts[0].shape == (2, 8, 64)


@pytest.mark.parametrize("act_fn", ["solu_ln", "gelu"])
def test_activations_match_the_full_forward_and_stop_after_the_last_wanted(act_fn):
    model = Transformer(tiny(n_layers=3, act_fn=act_fn))
    ran = []
    for name, module in model.named_modules():
        if name.endswith(("fc_in", "fc_out")) or name in ("ln_final", "unembed"):
            module.register_forward_pre_hook(lambda m, inp, name=name: ran.append(name))
    tokens = torch.randint(0, 50, (2, 8))
    names = [model.neuron_hook(1), "blocks.1.mlp.hook_post", "blocks.0.mlp.hook_pre"]
    acts = model.activations(tokens, names)
    assert ran == ["blocks.0.mlp.fc_in", "blocks.0.mlp.fc_out", "blocks.1.mlp.fc_in"]
    assert all(not h.fns for h in model.hook_points.values())
    _, cache = model.run_with_cache(tokens, names)
    assert acts.keys() == cache.keys() == set(names)
    for name in names:
        torch.testing.assert_close(acts[name], cache[name], rtol=0, atol=0)
    assert model.activations(tokens, []) == {}
    with pytest.raises(KeyError, match="unknown hook names"):
        model.activations(tokens, ["blocks.9.mlp.hook_post"])


def test_n_params_counts_non_embedding_parameters():
    cfg = tiny(positional="learned")
    model = Transformer(cfg)
    d, m, L = cfg.d_model, cfg.d_mlp, cfg.n_layers
    per_block = (
        2 * 2 * d  # two LayerNorms
        + d * 3 * d + 3 * d + d * d + d  # qkv and out projections with biases
        + d * m + m + m * d + d  # W_in, W_out with biases
        + 2 * m  # the extra LayerNorm
    )
    assert model.n_params() == L * per_block + 2 * d  # + final LayerNorm
    embedding = cfg.d_vocab * d + cfg.n_ctx * d + d * cfg.d_vocab + cfg.d_vocab
    assert model.n_params(non_embedding=False) == model.n_params() + embedding
    tied = Transformer(tiny(tie_embeddings=True))
    assert tied.n_params(False) == tied.n_params() + cfg.d_vocab * d + cfg.d_vocab  # W_E, b_U


def test_shared_parameters_start_identical_across_activations():
    a = Transformer(tiny(act_fn="gelu")).state_dict()
    b = Transformer(tiny(act_fn="solu_ln")).state_dict()
    shared = set(a) & set(b)
    assert len(shared) == len(a)
    assert all(torch.equal(a[k], b[k]) for k in shared)
    c = Transformer(tiny(act_fn="gelu", init_seed=1)).state_dict()
    assert not torch.equal(a["blocks.0.mlp.fc_in.weight"], c["blocks.0.mlp.fc_in.weight"])


@pytest.mark.parametrize("tie", [False, True])
def test_save_load_bit_identical(tmp_path, tie):
    model = Transformer(tiny(tie_embeddings=tie, positional="learned"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path / "m")
    loaded = Transformer.from_pretrained(tmp_path / "m")
    tokens = torch.randint(0, 50, (2, 16))
    assert torch.equal(model(tokens), loaded(tokens))
    assert loaded.cfg == model.cfg
    if tie:
        assert loaded.unembed.weight is loaded.embed.weight


def test_load_errors_name_the_file_and_problem(tmp_path):
    model = Transformer(tiny())
    d = tmp_path / "m"
    model.save_pretrained(d)
    with pytest.raises(CheckpointError, match="no such model directory"):
        Transformer.from_pretrained(tmp_path / "nope")

    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated or corrupt"):
        Transformer.from_pretrained(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        Transformer.from_pretrained(d)

    (d / "model.safetensors").write_bytes(weights)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "d_mlp": 96}))
    with pytest.raises(CheckpointError, match=r"does not match config.json: shape mismatch "
                       r"blocks.0.mlp.act.ln.b: file \(64,\) vs config \(96,\)"):
        Transformer.from_pretrained(d)
    (d / "config.json").write_text(json.dumps({**config, "n_layers": 3}))
    with pytest.raises(CheckpointError, match="missing blocks.2"):
        Transformer.from_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        Transformer.from_pretrained(d)
    (d / "config.json").write_text(json.dumps({**config, "act_fn": "swish"}))
    with pytest.raises(CheckpointError, match="config.json: unknown act_fn 'swish'"):
        Transformer.from_pretrained(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: missing"):
        Transformer.from_pretrained(d)


def test_one_layer_solu_ln_memorises_a_small_batch():
    torch.manual_seed(0)
    model = Transformer(tiny(n_layers=1, d_model=64, d_mlp=256, act_fn="solu_ln"))
    tokens = torch.randint(0, 50, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(300):
        loss = lm_loss(model(tokens), tokens)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3.5  # ~ln(50) at init
    assert loss.item() < 0.05


def test_bf16_forward_within_bf16_tolerance_of_float32():
    model = Transformer(tiny(act_fn="solu_ln"))
    tokens = torch.randint(0, 50, (2, 16))
    ref = model(tokens)
    out = model.to(torch.bfloat16)(tokens)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 3e-2


def test_bad_tokens_are_refused():
    model = Transformer(tiny())
    with pytest.raises(ValueError, match="exceed n_ctx=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="must be \\[batch, pos\\]"):
        model(torch.zeros(17, dtype=torch.long))


def test_lm_loss_against_an_explicit_log_softmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=gen)
    tokens = torch.randint(0, 11, (3, 7), generator=gen)
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    nll = torch.stack([torch.stack([-log_probs[b, t, tokens[b, t + 1]] for t in range(6)])
                       for b in range(3)])  # [batch, 6]: the last position has no target
    torch.testing.assert_close(lm_loss(logits, tokens, per_sequence=True).double(),
                               nll.mean(dim=1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lm_loss(logits, tokens).double(), nll.mean(), rtol=1e-6, atol=1e-6)


def test_a_model_without_the_logit_bias_saves_loads_and_exports_it_as_zeros(tmp_path):
    from solulab import Transformer as Saved
    from solulab.core.transformerlens import to_transformerlens

    cfg = tiny(unembed_bias=False)
    model = Saved(cfg)
    assert model.unembed.bias is None and "unembed_bias" in cfg.to_dict()
    assert "unembed_bias" not in tiny().to_dict()  # the default is written as before
    model.save_pretrained(tmp_path / "m")
    loaded = Saved.from_pretrained(tmp_path / "m")
    tokens = torch.randint(0, 50, (2, 8))
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)
    with_bias = Transformer(tiny())
    assert with_bias.n_params() == model.n_params()  # the logit bias is not counted either way
    _, state = to_transformerlens(model)
    assert torch.equal(state["unembed.b_U"], torch.zeros(50))
