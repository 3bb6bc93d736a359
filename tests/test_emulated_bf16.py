"""Where a CPU emulates bf16, the bf16 copy of a model attends in float32 (its KV cache is float32)
and runs a prompt's many rows through float32 matmuls; one row at a time stays in bf16. The rules
are switched on here whatever the CPU, and the decoding step must still equal the forward pass bit
for bit, for one sequence and for a batch of beams."""

import pytest
import torch
import torch.nn.functional as F

from gptlab import kernels
from gptlab.config import ModelConfig
from gptlab.decode_step import DecodeStep
from gptlab.generate import generation_copy
from gptlab.model import KVCache
from tests.steps import model, steps_both_ways


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setattr(kernels, "native_bf16", lambda: False)


@pytest.fixture
def native(monkeypatch):
    monkeypatch.setattr(kernels, "native_bf16", lambda: True)


def bf16(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).bfloat16()


def test_the_attention_dtype_is_float32_only_for_emulated_bf16(emulated):
    assert kernels.attention_dtype(torch.bfloat16, "cpu") == torch.float32
    assert kernels.attention_dtype(torch.float32, "cpu") == torch.float32
    assert kernels.attention_dtype(torch.bfloat16, "cuda") == torch.bfloat16  # a GPU's bf16 is its own


def test_native_bf16_attends_in_bf16(native):
    assert kernels.attention_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    assert not kernels.upcast_bf16(bf16(16, 8), bf16(4, 8))


def test_a_bf16_models_cache_holds_the_attention_dtype(emulated):
    config = ModelConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
    cache = KVCache(config, 1, dtype=torch.bfloat16)
    assert cache.k.dtype == cache.v.dtype == torch.float32


def test_only_many_rows_outside_autograd_are_upcast(emulated):
    weight = bf16(4, 8)
    rows = kernels.UPCAST_ROWS
    with torch.no_grad():
        assert kernels.upcast_bf16(bf16(rows + 1, 8), weight)
        assert kernels.upcast_bf16(bf16(1, rows + 1, 8), weight)  # a prompt: (batch, T, C)
        assert not kernels.upcast_bf16(bf16(rows, 8), weight)  # decoding: a row per sequence
        assert not kernels.upcast_bf16(bf16(rows + 1, 8).float(), weight.float())
    assert not kernels.upcast_bf16(bf16(rows + 1, 8), weight)  # autograd on


def test_the_upcast_product_is_the_float32_product_rounded_to_bf16(emulated):
    x, weight, bias = bf16(2, 9, 16, seed=1), bf16(5, 16, seed=2), bf16(5, seed=3)
    with torch.no_grad():
        got = kernels.linear(x, weight, bias)
    expected = F.linear(x.double(), weight.double(), bias.double())
    assert got.dtype == torch.bfloat16 and got.shape == (2, 9, 5)
    torch.testing.assert_close(got.double(), expected, rtol=2 ** -8, atol=1e-5)  # one bf16 rounding


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
@pytest.mark.parametrize("batch", [1, kernels.UPCAST_ROWS + 1])  # the step's rows upcast, or not, as the forward pass's
def test_the_step_equals_the_forward_pass_where_bf16_is_emulated(emulated, architecture, batch):
    copy = generation_copy(model(architecture=architecture), "bf16")
    # A 10-token prompt: more rows than UPCAST_ROWS, so the forward pass upcasts it.
    for expected, got, reference, fast in steps_both_ways(copy, batch, prompt_len=10, steps=4):
        assert torch.equal(got, expected)
    assert fast.k.dtype == torch.float32
    assert torch.equal(fast.k[:, :, :, :fast.pos], reference.k[:, :, :, :reference.pos])


def test_the_step_chooses_its_kernels_again_when_beam_search_grows_the_batch(emulated, monkeypatch):
    upcast = []  # the rows of each upcast product
    plain = kernels.upcast_linear
    monkeypatch.setattr(kernels, "upcast_linear", lambda x, *a, **k: upcast.append(x.size(0)) or plain(x, *a, **k))
    copy = generation_copy(model(), "bf16")
    beams = kernels.UPCAST_ROWS + 1
    tokens = torch.randint(0, 50, (beams, 6), generator=torch.Generator().manual_seed(2))
    reference, fast = (KVCache(copy.config, 1, dtype=torch.bfloat16) for _ in range(2))
    step = DecodeStep(copy, fast)
    with torch.inference_mode():
        copy(tokens[:1, :3], cache=reference)
        copy(tokens[:1, :3], cache=fast)
        expected = copy(tokens[:1, 3:4], cache=reference, last_only=True)[0][:, -1].float()
        upcast.clear()
        assert torch.equal(step(tokens[:1, 3]), expected)
        assert upcast == []  # one row: bf16
        grow = torch.zeros(beams, dtype=torch.long)  # the prompt's cache copied to every beam
        reference.reorder(grow)
        fast.reorder(grow)
        expected = copy(tokens[:, 4:5], cache=reference, last_only=True)[0][:, -1].float()
        upcast.clear()
        assert torch.equal(step(tokens[:, 4]), expected)
        assert upcast == [beams] * (4 * copy.config.n_layer + 1)  # every Linear and the head, as the forward pass
