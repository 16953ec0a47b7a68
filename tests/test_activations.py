import math

import pytest
import torch

from solulab.core.activations import (
    Activation,
    activation_spec,
    solu,
)


def test_paper_worked_examples():
    # SoLU(4,1,4,1) ~ (2,0,2,0): exactly 4 e^4 / (2 e^4 + 2 e^1) and 1 e^1 / (2 e^4 + 2 e^1).
    out = solu(torch.tensor([4.0, 1.0, 4.0, 1.0], dtype=torch.float64))
    big = 4 * math.exp(4) / (2 * math.exp(4) + 2 * math.exp(1))
    small = math.exp(1) / (2 * math.exp(4) + 2 * math.exp(1))
    torch.testing.assert_close(out, torch.tensor([big, small, big, small], dtype=torch.float64))
    assert round(big, 3) == 1.905 and round(small, 4) == 0.0237

    # SoLU(4,0,0,0) ~ (4,0,0,0): 4 e^4 / (e^4 + 3), zeros stay exactly zero.
    out = solu(torch.tensor([4.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    expected = torch.tensor([4 * math.exp(4) / (math.exp(4) + 3), 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    assert round(out[0].item(), 4) == 3.7917

    # SoLU(1,1,1,1) = (1/4, 1/4, 1/4, 1/4) exactly.
    out = solu(torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    assert out.tolist() == [0.25, 0.25, 0.25, 0.25]


def _ln_pair(d_mlp, blocks=1, eps=0.0, seed=0):
    """solu_ln and exp_ln with identical (random) LayerNorm parameters."""
    torch.manual_seed(seed)
    a = Activation("solu_ln", d_mlp, blocks, eps).double()
    b = Activation("exp_ln", d_mlp, blocks, eps).double()
    with torch.no_grad():
        a.ln.w.normal_()
        a.ln.b.normal_()
        b.load_state_dict(a.state_dict())
    return a, b


def test_exp_ln_equals_solu_ln_without_epsilon():
    a, b = _ln_pair(64, eps=0.0)
    a, b = a.float(), b.float()
    x = torch.randn(32, 64) * 3
    x[0, 5] = 150.0  # rows with entries far above 100: exp would overflow unshifted
    x[1] = torch.linspace(90, 130, 64)
    x[2, :] = 105.0 + torch.randn(64)
    ya, yb = a.reference(x), b.reference(x)
    assert torch.isfinite(yb).all()
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)


def test_epsilon_breaks_the_equivalence_where_solu_output_is_tiny():
    a, b = _ln_pair(16, eps=1e-5)
    # A distributed input: SoLU suppresses it to ~1e-4 magnitude, var ~ eps.
    x = torch.full((1, 16), -6.0, dtype=torch.float64) + 1e-3 * torch.arange(16)
    assert (a.nonlinearity(x).var() < 1e-5)
    assert (a.reference(x) - b.reference(x)).abs().max() > 1e-2
    # With a peaked input, SoLU's output is large and eps is negligible.
    y = torch.randn(1, 16, dtype=torch.float64) * 4
    torch.testing.assert_close(a.reference(y), b.reference(y), rtol=1e-4, atol=1e-4)


def test_one_block_equals_the_unblocked_formula():
    x = torch.randn(8, 48) * 3
    torch.testing.assert_close(solu(x, blocks=1), x * torch.softmax(x, dim=-1))
    act, _ = _ln_pair(48, blocks=1, eps=1e-5)
    act = act.float()
    expected = torch.nn.functional.layer_norm(
        x * torch.softmax(x, dim=-1), (48,), act.ln.w, act.ln.b, eps=1e-5
    )
    torch.testing.assert_close(act.reference(x), expected)


@pytest.mark.parametrize("name", ["solu_ln", "exp_ln", "gelu_ln"])
def test_blocked_equals_activation_applied_per_slice(name):
    d, blocks = 48, 4
    width = d // blocks
    torch.manual_seed(1)
    act = Activation(name, d, blocks)
    with torch.no_grad():
        act.ln.w.normal_()
        act.ln.b.normal_()
    x = torch.randn(5, 3, d) * 2
    expected = []
    for i in range(blocks):
        piece = Activation(name, width)
        with torch.no_grad():
            piece.ln.w.copy_(act.ln.w[i * width:(i + 1) * width])
            piece.ln.b.copy_(act.ln.b[i * width:(i + 1) * width])
        expected.append(piece.reference(x[..., i * width:(i + 1) * width]))
    torch.testing.assert_close(act.reference(x), torch.cat(expected, dim=-1))


def test_blocked_solu_is_softmax_per_slice():
    x = torch.randn(4, 12)
    out = solu(x, blocks=3)
    for i in range(3):
        s = x[:, 4 * i:4 * i + 4]
        torch.testing.assert_close(out[:, 4 * i:4 * i + 4], s * torch.softmax(s, -1))


@pytest.mark.parametrize("blocks", [1, 3])
def test_solu_jacobian_equals_the_hand_derived_one(blocks):
    """d(x_i s_i)/dx_j = s_i (delta_ij + x_i (delta_ij - s_j)) within a block, 0 across blocks
    (the fused backward is gradchecked against finite differences in test_kernels.py)."""
    torch.manual_seed(0)
    x = torch.randn(12, dtype=torch.float64) * 2
    jacobian = torch.autograd.functional.jacobian(lambda v: solu(v, blocks=blocks), x)
    expected = torch.zeros(12, 12, dtype=torch.float64)
    width = 12 // blocks
    for start in range(0, 12, width):
        v = x[start:start + width]
        s = torch.softmax(v, -1)
        eye = torch.eye(width, dtype=torch.float64)
        expected[start:start + width, start:start + width] = s[:, None] * (
            eye + v[:, None] * (eye - s[None, :]))
    torch.testing.assert_close(jacobian, expected)


def test_statistics_in_float32_for_half_inputs():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 5
    act = Activation("solu_ln", 64)
    ref = act.reference(x)
    out = act.reference(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=5e-2)


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: gelu, relu, solu, solu_ln, gelu_ln, exp_ln"):
        activation_spec("swish")
    with pytest.raises(ValueError, match="equal blocks"):
        solu(torch.randn(2, 10), blocks=3)
