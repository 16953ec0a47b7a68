"""The fused unembedding + cross-entropy against autograd through the full logits."""

import pytest
import torch
import torch.nn.functional as F

from solulab import ModelConfig, Transformer
from solulab.core.loss import IGNORE, linear_cross_entropy, next_token_targets
from solulab.core.model import lm_loss


def _problem(dtype, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(53, 8, generator=gen, dtype=dtype, requires_grad=True)
    weight = torch.randn(29, 8, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(29, generator=gen, dtype=dtype, requires_grad=True) if bias else None
    targets = torch.randint(0, 29, (53,), generator=gen)
    targets[::5] = IGNORE
    return x, weight, b, targets


@pytest.mark.parametrize("block_rows", [1, 7, 53, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_loss_and_gradients_equal_autograd_in_float64(block_rows, bias):
    x, weight, b, targets = _problem(torch.float64, bias)
    inputs = [t for t in (x, weight, b) if t is not None]
    reference = F.cross_entropy(F.linear(x, weight, b), targets, ignore_index=IGNORE)
    expected = torch.autograd.grad(reference * 2.5, inputs)
    loss = linear_cross_entropy(x, weight, b, targets, block_rows=block_rows)
    got = torch.autograd.grad(loss * 2.5, inputs)
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-13)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-13)


def test_float32_within_float32_tolerance_and_no_grad_forward():
    x, weight, b, targets = _problem(torch.float32)
    reference = F.cross_entropy(F.linear(x.double(), weight.double(), b.double()), targets,
                                ignore_index=IGNORE)
    with torch.no_grad():
        loss = linear_cross_entropy(x, weight, b, targets, block_rows=10)
    assert loss.dtype == torch.float32 and not loss.requires_grad
    torch.testing.assert_close(loss.double(), reference, rtol=1e-6, atol=1e-6)


def test_every_target_ignored_gives_zero_loss_and_zero_gradients():
    x, weight, b, targets = _problem(torch.float64)
    loss = linear_cross_entropy(x, weight, b, torch.full_like(targets, IGNORE))
    loss.backward()
    assert loss.item() == 0 and x.grad.abs().max() == 0 and weight.grad.abs().max() == 0


def test_next_token_targets_shift_and_ignore_the_last_position():
    tokens = torch.tensor([[5, 6, 7], [1, 2, 3]])
    assert next_token_targets(tokens).tolist() == [6, 7, IGNORE, 2, 3, IGNORE]


@pytest.mark.parametrize("tied", [True, False])
def test_models_return_loss_equals_lm_loss_of_its_logits_with_the_same_gradients(tied):
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=12, d_vocab=41,
                      act_fn="solu_ln", tie_embeddings=tied)
    model = Transformer(cfg).double()
    tokens = torch.randint(0, 41, (3, 12), generator=torch.Generator().manual_seed(1))
    reference = lm_loss(model(tokens), tokens)
    expected = torch.autograd.grad(reference, list(model.parameters()))
    loss = model(tokens, return_loss=True)
    got = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-12)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


def test_under_autocast_the_gradients_match_autograd_at_bfloat16_tolerance():
    x, weight, b, targets = _problem(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = F.cross_entropy(F.linear(x, weight, b).float(), targets, ignore_index=IGNORE)
        expected = torch.autograd.grad(reference, (x, weight, b))
        loss = linear_cross_entropy(x, weight, b, targets, block_rows=16)
        got = torch.autograd.grad(loss, (x, weight, b))
    torch.testing.assert_close(loss, reference, rtol=1e-2, atol=1e-2)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-2)


def test_a_bfloat16_model_without_autocast_is_within_bfloat16_tolerance():
    x, weight, b, targets = _problem(torch.float32)
    reference = F.cross_entropy(F.linear(x.double(), weight.double(), b.double()), targets,
                                ignore_index=IGNORE)
    expected = torch.autograd.grad(reference, (x, weight, b))
    low = [t.detach().bfloat16().requires_grad_() for t in (x, weight, b)]
    loss = linear_cross_entropy(*low, targets, block_rows=16)
    got = torch.autograd.grad(loss, low)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), reference, rtol=2e-2, atol=2e-2)
    for g, e, t in zip(got, expected, low):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g.double(), e.double(), rtol=5e-2, atol=5e-2)


def test_an_ignored_row_cannot_poison_the_loss_or_the_gradients():
    x, weight, b, targets = _problem(torch.float64)
    with torch.no_grad():
        x[0] = float("inf")  # targets[0] is ignored (every fifth)
    loss = linear_cross_entropy(x, weight, b, targets, block_rows=7)
    reference = F.cross_entropy(F.linear(x, weight, b), targets, ignore_index=IGNORE)
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-12)
    # the same loss without the ignored row: its gradients are what the poisoned one's should be
    # (autograd through the full logits gives nan there: 0 * inf in the log-softmax's backward)
    clean = F.cross_entropy(F.linear(x[1:], weight, b), targets[1:], ignore_index=IGNORE)
    got_x, got_b = torch.autograd.grad(loss, [x, b])
    want_x, want_b = torch.autograd.grad(clean, [x, b])
    assert got_x[0].abs().max() == 0
    torch.testing.assert_close(got_x[1:], want_x[1:], rtol=0, atol=1e-12)
    torch.testing.assert_close(got_b, want_b, rtol=0, atol=1e-12)


def test_double_backward_is_refused_and_bad_targets_raise():
    x, weight, b, targets = _problem(torch.float64)
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(linear_cross_entropy(x, weight, b, targets), [x], create_graph=True)
    targets[1] = -3
    with pytest.raises((RuntimeError, IndexError)):
        linear_cross_entropy(x, weight, b, targets)


def test_compiled_model_gives_the_same_loss_and_gradients():
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=8, d_vocab=37)
    model = Transformer(cfg)
    tokens = torch.randint(0, 37, (2, 8), generator=torch.Generator().manual_seed(2))
    reference = lm_loss(model(tokens), tokens)
    expected = torch.autograd.grad(reference, list(model.parameters()))
    loss = torch.compile(model)(tokens, return_loss=True)
    got = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
