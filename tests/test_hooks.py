import math

import pytest
import torch

from solulab import ModelConfig, Transformer
from solulab.core import activations
from solulab.core.hooks import CacheHook, HookPoint

TOKENS = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(0))


def model_of(**kw):
    base = dict(n_layers=2, d_model=32, n_heads=4, d_mlp=64, n_ctx=16, d_vocab=50, init_std=0.3)
    model = Transformer(ModelConfig(**{**base, **kw})).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # biases and norms away from their initial values
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1)
    return model


def no_hooks_left(model):
    return all(not point.fns for point in model.hook_points.values())


@pytest.mark.parametrize("positional", ["rotary", "learned"])
def test_pattern_and_scores_hooks_compute_what_the_fused_kernel_does(positional):
    model = model_of(positional=positional)
    plain = model(TOKENS)
    seen = []
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", lambda v, hook: seen.append(v))]):
        hooked = model(TOKENS)
    assert len(seen) == 1 and no_hooks_left(model)
    torch.testing.assert_close(hooked, plain)

    _, cache = model.run_with_cache(TOKENS)
    for layer, block in enumerate(model.blocks):
        attn, prefix = block.attn, f"blocks.{layer}.attn."
        pattern, scores = cache[prefix + "hook_pattern"], cache[prefix + "hook_attn_scores"]
        assert pattern.shape == scores.shape == (2, 4, 10, 10)
        above = torch.ones(10, 10, dtype=torch.bool).triu(1)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, 10, dtype=pattern.dtype))
        assert (pattern[..., above] == 0).all() and (pattern[..., ~above] > 0).all()
        assert (scores[..., above] == -math.inf).all()
        # q, k and v from the weights: qkv.weight is [3 * heads * d_head, d_model]
        x = block.ln1(cache[f"blocks.{layer}.hook_resid_pre"])
        w = attn.qkv.weight.view(3, 4, 8, 32)
        b = attn.qkv.bias.view(3, 4, 1, 8)
        q, k, v = (torch.einsum("bpd,hed->bhpe", x, w[i]) + b[i] for i in range(3))
        if attn.rotary is not None:
            q, k = attn.rotary(q), attn.rotary(k)
        by_hand = torch.einsum("bhqe,bhke->bhqk", q, k) / math.sqrt(8)
        torch.testing.assert_close(scores[..., ~above], by_hand[..., ~above])
        z = torch.einsum("bhqk,bhke->bqhe", pattern, v)
        torch.testing.assert_close(cache[prefix + "hook_z"], z)


def test_the_step_by_step_path_matches_the_fused_one_in_float32():
    model = model_of().float()
    with model.hooks([(lambda name: name.endswith("hook_attn_scores"), lambda v, hook: None)]):
        hooked = model(TOKENS)
    torch.testing.assert_close(hooked, model(TOKENS), rtol=1e-5, atol=1e-5)


def test_plain_forward_and_hook_z_keep_the_fused_kernel(monkeypatch):
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(1) or fused(*a, **kw))
    model = model_of()
    model(TOKENS)
    model.run_with_cache(TOKENS, names=["blocks.0.attn.hook_z", "blocks.1.mlp.hook_mid"])
    assert len(calls) == 4
    model.run_with_cache(TOKENS, names=["blocks.0.attn.hook_pattern"])
    assert len(calls) == 5  # layer 0 step by step, layer 1 fused


def test_zeroing_a_heads_pattern_is_zeroing_its_z():
    model = model_of()

    def zero_head(value, hook):
        value = value.clone()
        value[:, 2] = 0.0  # pattern: [batch, heads, ...]
        return value

    def zero_z(value, hook):
        value = value.clone()
        value[:, :, 2] = 0.0  # z: [batch, pos, heads, d_head]
        return value

    by_pattern = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.1.attn.hook_pattern", zero_head)])
    by_z = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.1.attn.hook_z", zero_z)])
    torch.testing.assert_close(by_pattern, by_z)
    assert (by_pattern - model(TOKENS)).abs().max() > 1e-4


def test_hooks_on_one_point_run_in_the_order_added():
    model = model_of()
    name = "blocks.0.hook_resid_mid"
    _, plain = model.run_with_cache(TOKENS, [name])
    fwd_hooks = [(name, lambda v, hook: v + 1), (name, lambda v, hook: v * 2)]
    with model.hooks(fwd_hooks):
        out, cache = model.run_with_cache(TOKENS, [name])
    torch.testing.assert_close(cache[name], (plain[name] + 1) * 2)
    torch.testing.assert_close(
        out, model.run_with_hooks(TOKENS, fwd_hooks=[(name, lambda v, hook: (v + 1) * 2)]))


def test_the_context_manager_removes_its_hooks_on_exit_and_on_error():
    model = model_of()
    plain = model(TOKENS)
    everywhere = [(lambda name: True, lambda v, hook: v * 1.5)]
    with model.hooks(everywhere) as hooked:
        assert hooked is model and all(len(p.fns) == 1 for p in model.hook_points.values())
        assert (model(TOKENS) - plain).abs().max() > 1e-3
    assert no_hooks_left(model)
    torch.testing.assert_close(model(TOKENS), plain, rtol=0, atol=0)

    with pytest.raises(RuntimeError, match="in the body"):
        with model.hooks(everywhere):
            raise RuntimeError("in the body")
    assert no_hooks_left(model)
    torch.testing.assert_close(model(TOKENS), plain, rtol=0, atol=0)

    with pytest.raises(ValueError, match="in a hook"):
        model.run_with_hooks(TOKENS, fwd_hooks=[("hook_embed", _raise)])
    assert no_hooks_left(model)


def _raise(value, hook):
    raise ValueError("in a hook")


def test_a_handle_removes_just_its_hook():
    point = HookPoint()
    first, second = (lambda v, hook: v + 1), (lambda v, hook: v * 2)
    handle = point.add_hook(first)
    point.add_hook(second)
    assert point.active and point(torch.tensor(1.0)) == 4.0
    handle.remove()
    handle.remove()  # a second remove does nothing
    assert point.fns == [second] and point(torch.tensor(1.0)) == 2.0
    point.remove_hooks()
    assert not point.active and point(torch.tensor(1.0)) == 1.0

    model = model_of()
    handles = model.add_hook(lambda name: name.endswith("hook_pattern"), lambda v, hook: None)
    kept = model.add_hook("hook_embed", second)
    assert len(handles) == 2 and len(kept) == 1
    handles[0].remove()
    active = [name for name, p in model.hook_points.items() if p.active]
    assert active == ["hook_embed", "blocks.1.attn.hook_pattern"]
    model.reset_hooks()
    assert no_hooks_left(model)


@pytest.mark.parametrize("act", ["solu_ln", "gelu"])
def test_patches_replace_the_value_as_before(act):
    """The ``{name: patch(value, name)}`` form gives what replacing the hook point's output with
    a plain PyTorch forward hook gives (with a do-nothing hook so that the point is called)."""
    model = model_of(act_fn=act)
    name = model.neuron_hook(1)
    names = []

    def ablate_17(value, hook_name):
        names.append(hook_name)
        value = value.clone()
        value[..., 17] = 0.0
        return value

    patched = model.run_with_hooks(TOKENS, {name: ablate_17})
    assert names == [name] and no_hooks_left(model)
    handle = model.hook_points[name].register_forward_hook(lambda m, i, out: ablate_17(out, name))
    try:
        with model.hooks([(name, lambda v, hook: None)]):
            by_torch = model(TOKENS)
    finally:
        handle.remove()
    torch.testing.assert_close(patched, by_torch, rtol=0, atol=0)
    assert (patched - model(TOKENS)).abs().max() > 1e-4
    both = model.run_with_hooks(TOKENS, {name: ablate_17}, fwd_hooks=[
        ("blocks.1.attn.hook_z", lambda v, hook: v * 0.5)])
    assert (both - patched).abs().max() > 1e-4  # both were applied


def test_hook_mid_takes_the_one_pass_path_only_when_no_hook_can_replace_it(monkeypatch):
    calls = []
    one_pass = activations.kernels.activation_with_mid
    monkeypatch.setattr(activations.kernels, "activation_with_mid",
                        lambda *a: calls.append(1) or one_pass(*a))
    model = model_of(act_fn="solu_ln")
    name = "blocks.0.mlp.hook_mid"
    plain, cache = model.run_with_cache(TOKENS, [name])
    assert len(calls) == 1
    torch.testing.assert_close(plain, model(TOKENS))

    def zero(value, hook):
        return torch.zeros_like(value)

    with model.hooks([(name, zero)]):
        out, patched = model.run_with_cache(TOKENS, [name])
    assert len(calls) == 1  # a hook that may replace the value: the two-step path
    assert (patched[name] == 0).all()
    torch.testing.assert_close(out, model.run_with_hooks(TOKENS, fwd_hooks=[(name, zero)]))
    assert (out - plain).abs().max() > 1e-4

    with model.hooks([(name, lambda v, hook: None)]):  # reads only, but cannot say so
        torch.testing.assert_close(model(TOKENS), plain)
    assert len(calls) == 1
    with model.hooks([(name, CacheHook(recorded := {}))]):
        model(TOKENS)
    assert len(calls) == 2
    torch.testing.assert_close(recorded[name], cache[name], rtol=0, atol=0)


def test_a_predicate_attaches_to_every_point_it_accepts():
    model = model_of(n_layers=3)
    seen = []
    model.run_with_hooks(TOKENS, fwd_hooks=[
        (lambda name: name.endswith("attn.hook_pattern"), lambda v, hook: seen.append(hook.name))])
    assert seen == [f"blocks.{layer}.attn.hook_pattern" for layer in range(3)]
    assert no_hooks_left(model)


def test_unknown_names_raise_key_error_naming_them_and_attach_nothing():
    model = model_of()
    keep = lambda v, hook: None  # noqa: E731
    with pytest.raises(KeyError, match=r"unknown hook names \['blocks.0.attn.hook_nope'\]"):
        model.run_with_hooks(TOKENS, fwd_hooks=[("hook_embed", keep),
                                                ("blocks.0.attn.hook_nope", keep)])
    with pytest.raises(KeyError, match="blocks.7.attn.hook_pattern"):
        with model.hooks([("blocks.7.attn.hook_pattern", keep)]):
            pass
    with pytest.raises(KeyError, match="hook_nothing"):
        model.add_hook("hook_nothing", keep)
    with pytest.raises(KeyError, match="unknown hook names"):
        model.run_with_hooks(TOKENS, {"blocks.0.mlp.hook_nothing": lambda v, name: v})
    assert no_hooks_left(model)
