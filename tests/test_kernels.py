import importlib
import os
import shutil

import pytest
import torch

from solulab import ModelConfig, Transformer, kernels
from solulab.core.activations import FUSED, REGISTRY, Activation
from solulab.kernels.c_kernels import load_library, native_activation
from solulab.kernels.fused import fused_activation

needs_native = pytest.mark.skipif(load_library() is None, reason="no C compiler for the kernels")


def load_triton():
    """``triton_activation`` (None where Triton is absent); without a GPU it runs in Triton's
    CPU interpreter (``conftest.py`` sets ``TRITON_INTERPRET``)."""
    if importlib.util.find_spec("triton") is None:
        return None
    return importlib.import_module("solulab.kernels.triton_kernels").triton_activation


triton_activation = load_triton()
needs_triton = pytest.mark.skipif(triton_activation is None, reason="Triton is not installed")
IMPLEMENTATIONS = {"fused": fused_activation, "native": native_activation,
                   "triton": triton_activation}


def device_for(implementation):
    """Triton on the GPU where there is one, else in its CPU interpreter."""
    return "cuda" if implementation == "triton" and torch.cuda.is_available() else "cpu"


def _act(kind, d, blocks, dtype=torch.float64):
    torch.manual_seed(0)
    act = Activation(kind, d, blocks).to(dtype)
    if act.ln is not None:
        with torch.no_grad():
            act.ln.w.normal_()
            act.ln.b.normal_()
    return act


def _params(act):
    return [act.ln.w, act.ln.b] if act.ln is not None else []


@pytest.mark.parametrize("implementation", [
    "fused", pytest.param("native", marks=needs_native),
    pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("kind", FUSED)
@pytest.mark.parametrize("rows, d, blocks", [(1, 7, 1), (6, 33, 1), (4, 64, 2), (3, 129, 3),
                                             (300, 1024, 1)])
def test_fused_matches_the_reference_forward_and_gradients(implementation, kind, rows, d, blocks):
    if implementation == "triton" and rows * d > 10_000:
        rows = 40  # the interpreter runs one program at a time; more rows than one backward group
    device = device_for(implementation)
    act = _act(kind, d, blocks, torch.float32).to(device)
    x = torch.randn(rows, d) * 3
    x[-1] += 120.0  # a row of large values: no overflow
    x = x.to(device).requires_grad_()
    w, b = (act.ln.w, act.ln.b) if act.ln is not None else (None, None)
    out = IMPLEMENTATIONS[implementation](x, REGISTRY[kind].kind, w, b, blocks)
    grad = torch.randn_like(out)
    out_grads = torch.autograd.grad(out, [x, *_params(act)], grad)
    act64, x64 = act.double().cpu(), x.detach().double().cpu().requires_grad_()  # exact reference
    ref = act64(x64)
    ref_grads = torch.autograd.grad(ref, [x64, *_params(act64)], grad.double().cpu())
    for r, o in zip([ref, *ref_grads], [out, *out_grads]):
        assert (r - o.double().cpu()).abs().max() <= 1e-5 * r.abs().max()


@pytest.mark.parametrize("kind", FUSED)
def test_fused_gradcheck_float64(kind):
    act = _act(kind, 12, 3)
    x = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)
    w, b = (act.ln.w, act.ln.b) if act.ln is not None else (None, None)
    fused_kind = REGISTRY[kind].kind
    fn = (lambda x, w, b: fused_activation(x, fused_kind, w, b, 3)) if w is not None else (
        lambda x: fused_activation(x, fused_kind, None, None, 3))
    assert torch.autograd.gradcheck(fn, (x, w, b) if w is not None else (x,))


@pytest.mark.parametrize("implementation", ["fused", pytest.param("triton", marks=needs_triton)])
def test_fused_bf16_within_bf16_rounding(implementation):
    device = device_for(implementation)
    act = _act("solu_ln", 256, 1, torch.float32).to(device)
    x = (torch.randn(16, 256) * 2).bfloat16().to(device)
    ref = act.reference(x.float())  # the same inputs, computed in float32
    out = IMPLEMENTATIONS[implementation](x, REGISTRY["solu_ln"].kind, act.ln.w, act.ln.b)
    assert out.dtype == torch.bfloat16
    # Half a bf16 ulp when rounding to nearest; Triton's CPU interpreter truncates instead (a
    # whole ulp), where a GPU rounds to nearest.
    ulps = 1.0 if implementation == "triton" and not torch.cuda.is_available() else 0.5
    assert ((out.float() - ref).abs() <= ulps * 2 ** -7 * ref.abs() + 1e-6).all()


def test_model_uses_the_fused_path_and_saves_less_for_backward():
    model = Transformer(ModelConfig(n_layers=1, d_model=64, n_heads=2, n_ctx=32, d_vocab=100))
    tokens = torch.randint(0, 100, (4, 32))
    expected = "native" if load_library() is not None else "fused"
    kind = model.blocks[0].mlp.act.spec.kind
    assert kernels.backend_for(kind, torch.zeros(1)) == expected
    assert kernels.backend_for(kind, torch.zeros(1).double()) == "fused"

    def saved(backend):
        sizes = []
        with kernels.use_backend(backend), torch.autograd.graph.saved_tensors_hooks(
                lambda t: sizes.append(t.numel()) or t, lambda t: t):
            logits = model(tokens)
        return logits, sum(sizes)

    fused_logits, fused_saved = saved("auto")
    ref_logits, ref_saved = saved("reference")
    torch.testing.assert_close(fused_logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert fused_saved < ref_saved - 2 * 4 * 32 * 256  # at least two [rows, d_mlp] fewer
    with pytest.raises(ValueError, match="unknown kernel backend"):
        with kernels.use_backend("cuda-magic"):
            pass


@needs_native
def test_loading_the_c_kernels_keeps_denormals():
    """Fast-math start-up code in a loaded library would make the whole process flush them."""
    from solulab.neurons import c_stats

    load_library()
    c_stats.load_library()
    assert (torch.tensor([1e-39]) * 1).item() > 0


@pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler")
def test_the_c_sources_build_wherever_there_is_a_compiler():
    """A build failure would silently fall back to the PyTorch paths: fail loudly here."""
    from solulab.neurons import c_stats

    assert load_library() is not None
    assert c_stats.load_library() is not None


@needs_native
@pytest.mark.parametrize("kind", [k for k in FUSED if REGISTRY[k].has_ln])
@pytest.mark.parametrize("rows, d, blocks", [(1, 7, 1), (5, 129, 3), (64, 1024, 1)])
def test_one_pass_gives_the_neurons_before_and_after_the_layernorm(kind, rows, d, blocks):
    act = _act(kind, d, blocks, torch.float32)
    x = torch.randn(2, rows, d) * 3
    with torch.no_grad():
        mid, post = kernels.activation_with_mid(x, *act.kernel_arguments())
        ref_mid = act.double().nonlinearity(x.double())
        ref_post = act.ln(ref_mid)
    for r, o in ((ref_mid, mid), (ref_post, post)):
        assert o.shape == x.shape
        assert (r - o.double()).abs().max() <= 1e-5 * r.abs().max()


@pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler")
def test_a_cached_library_is_only_reused_on_a_cpu_with_the_same_instruction_sets(
        tmp_path, monkeypatch):
    """A library built with -march=native, found in a cache shared with another CPU, would
    kill the process there with an illegal instruction: the cache key names the CPU's flags."""
    from solulab.kernels import c_kernels

    monkeypatch.setenv("SOLULAB_CACHE", str(tmp_path))
    source = tmp_path / "tiny.c"
    source.write_text("int answer(void) { return 42; }\n")
    flags = ["-O2", "-fPIC", "-shared"]
    here = c_kernels.compile_source(source, flags)
    assert here is not None
    assert c_kernels.compile_source(source, flags) == here  # reused on the same machine
    identity = c_kernels.cpu_identity()
    assert identity[2]  # the flags line (or the processor's name) is read
    monkeypatch.setattr(c_kernels, "cpu_identity", lambda: [*identity[:2], "flags : sse2"])
    elsewhere = c_kernels.compile_source(source, flags)
    assert elsewhere is not None and elsewhere != here
