"""The oneDNN Linear must compute what nn.Linear computes: outputs and all three gradients, for every
shape and layout the model gives it, and it must step aside where it does not apply."""

import pytest
import torch
import torch.nn.functional as F

from gptlab import kernels
from gptlab.config import ModelConfig
from gptlab.model import GPT

pytestmark = pytest.mark.skipif(not kernels.ONEDNN_AVAILABLE, reason="this PyTorch build has no oneDNN")


@pytest.fixture(autouse=True)
def onednn_on(monkeypatch):
    """The kernels run wherever oneDNN is built in; the app uses them only on AVX-512 CPUs, where they
    are faster, so these tests switch them on wherever they run."""
    monkeypatch.setattr(kernels, "ONEDNN_LINEAR", True)


def grads(fn, x, weight, bias):
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    bias = bias.detach().requires_grad_() if bias is not None else None
    out = fn(x, weight, bias)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return out, x.grad, weight.grad, bias.grad if bias is not None else None


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 7), (1, 1, 7), (2, 3, 4, 7)])
@pytest.mark.parametrize("out_features", [3, 11])  # weight gradient computed both ways round
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_equal_f_linear(shape, out_features, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    weight = torch.randn(out_features, shape[-1], generator=g)
    b = torch.randn(out_features, generator=g) if bias else None
    assert kernels.use_onednn(x, weight)
    ours, theirs = grads(kernels.linear, x, weight, b), grads(F.linear, x, weight, b)
    for a, e in zip(ours, theirs):
        if e is None:
            assert a is None
        else:
            assert a.shape == e.shape
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_strided_input_and_weight():
    x = torch.randn(7, 10)[:, ::2]  # (7, 5), every other column
    weight = torch.randn(5, 3).t()  # (3, 5), transposed
    assert not x.is_contiguous() and not weight.is_contiguous()
    torch.testing.assert_close(kernels.linear(x, weight), F.linear(x, weight))


def test_falls_back_where_onednn_does_not_apply():
    x, w = torch.randn(4, 8), torch.randn(2, 8)
    assert not kernels.use_onednn(x.double(), w.double())
    assert not kernels.use_onednn(x[:0], w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not kernels.use_onednn(x, w)
        assert kernels.linear(x, w).dtype == torch.bfloat16  # autocast did its job
    torch.testing.assert_close(kernels.linear(x.double(), w.double()), F.linear(x.double(), w.double()))


def test_switch_off(monkeypatch):
    monkeypatch.setattr(kernels, "ONEDNN_LINEAR", False)
    assert not kernels.use_onednn(torch.randn(2, 3), torch.randn(4, 3))


def test_without_avx512_onednn_takes_only_a_few_rows_times_a_large_weight_outside_autograd(monkeypatch):
    monkeypatch.setattr(kernels, "ONEDNN_LINEAR", False)
    monkeypatch.setattr(kernels, "ONEDNN_STREAMING", True)
    g = torch.Generator().manual_seed(0)
    large = torch.randn(kernels.STREAM_BYTES // 4 // 256, 256, generator=g)  # STREAM_BYTES of float32
    small = large[:-1]
    rows = torch.randn(kernels.STREAM_ROWS, 256, generator=g)
    with torch.no_grad():
        assert kernels.use_onednn(rows, large) and kernels.use_onednn(rows[:1], large)
        torch.testing.assert_close(kernels.linear(rows, large), F.linear(rows, large), rtol=1e-5, atol=1e-4)
        assert not kernels.use_onednn(torch.randn(kernels.STREAM_ROWS + 1, 256), large)  # a batch: MKL
        assert not kernels.use_onednn(rows, small)
        assert not kernels.use_onednn(rows.bfloat16(), large.bfloat16(), (torch.float32, torch.bfloat16))
    assert not kernels.use_onednn(rows, large)  # autograd may be recording: training stays on MKL


def test_model_trains_the_same_with_and_without_onednn(monkeypatch):
    """A few optimiser steps of the whole model: the kernel swap must not change what is learned."""
    config = ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, activation="gelu")
    idx = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(1))

    def train(enabled: bool) -> list[torch.Tensor]:
        monkeypatch.setattr(kernels, "ONEDNN_LINEAR", enabled)
        torch.manual_seed(0)
        model = GPT(config)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)  # Adam would magnify float noise on zero gradients
        for _ in range(3):
            _, loss = model(idx, idx)
            loss.backward()
            opt.step()
            opt.zero_grad()
        return [p.detach().clone() for p in model.parameters()]

    for ours, theirs in zip(train(True), train(False)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))


def linears(model: GPT) -> list[kernels.Linear]:
    return [m for m in model.modules() if isinstance(m, kernels.Linear)]


def test_packed_weights_compute_the_same_and_are_released_after_the_block():
    model = tiny_model()
    idx = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = model(idx)
    with kernels.packed_weights(model):
        assert all(m.packed_weight is not None and m.packed_weight.is_mkldnn for m in linears(model))
        with torch.no_grad():
            packed, _ = model(idx)
        # With gradients on, the layers compute from the parameters, so training inside still learns.
        _, loss = model(idx, idx)
        loss.backward()
    torch.testing.assert_close(packed, expected, rtol=1e-5, atol=1e-5)
    assert all(m.packed_weight is None for m in linears(model))
    assert all(p.grad is not None for p in model.parameters())

    with pytest.raises(RuntimeError, match="boom"), kernels.packed_weights(model):
        raise RuntimeError("boom")
    assert all(m.packed_weight is None for m in linears(model))


def test_packed_weights_leave_other_dtypes_alone():
    model = tiny_model().double()
    with kernels.packed_weights(model):
        assert all(m.packed_weight is None for m in linears(model))


def test_bf16_weights_are_packed_only_where_the_cpu_computes_bf16_natively():
    """oneDNN refuses to pack bf16 on a CPU without native bf16 (an AVX2 one): such weights stay as
    they are, and compute through F.linear."""
    assert (torch.bfloat16 in kernels.PACKABLE) == kernels.native_bf16()
    model = tiny_model().to(torch.bfloat16)
    with kernels.packed_weights(model):
        assert all((m.packed_weight is not None) == kernels.native_bf16() for m in linears(model))


@pytest.mark.skipif(not kernels.native_bf16(), reason="this CPU has no native bf16, so bf16 is not packed")
def test_bf16_weights_are_packed_and_compute_what_f_linear_computes_in_bf16():
    model = tiny_model().to(torch.bfloat16)
    idx = torch.randint(0, 11, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, _ = model(idx)
        with kernels.packed_weights(model):
            assert all(m.packed_weight is not None and m.packed_weight.dtype == torch.bfloat16 for m in linears(model))
            packed, _ = model(idx)
    torch.testing.assert_close(packed, expected)
