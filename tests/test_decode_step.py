"""The one-token decoding step against the model's own forward pass, which stays the reference:
the same logits and the same cache, bit for bit, for both architectures, with and without biases,
for one sequence and for a batch (beam search), in float32 and from the bf16 copy."""

import pytest
import torch

from gptlab import kernels
from gptlab.config import ModelConfig
from gptlab.decode_step import DecodeStep
from gptlab.generate import generation_copy
from gptlab.kernels import packed_weights
from gptlab.model import GPT, KVCache
from tests.steps import model, steps_both_ways

MODELS = {
    "gpt2": dict(architecture="gpt2"),
    "gpt2, no biases, exact gelu": dict(architecture="gpt2", bias=False, activation="gelu"),
    "nanochat": dict(architecture="nanochat"),
}


@pytest.mark.parametrize("settings", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("batch", [1, 3])
def test_the_step_computes_what_the_forward_pass_computes(settings, batch):
    m = model(**settings)
    for expected, got, reference, fast in steps_both_ways(m, batch, prompt_len=5, steps=19):
        assert got.shape == (batch, m.config.vocab_size)
        assert torch.equal(got, expected)
        assert fast.pos == reference.pos
    assert torch.equal(fast.k[:, :, :, :fast.pos], reference.k[:, :, :, :reference.pos])
    assert torch.equal(fast.v[:, :, :, :fast.pos], reference.v[:, :, :, :reference.pos])


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
def test_the_step_equals_the_forward_pass_on_the_bf16_copy_with_packed_weights(architecture):
    copy = generation_copy(model(architecture=architecture), "bf16")
    with packed_weights(copy):
        for expected, got, *_ in steps_both_ways(copy, 2, prompt_len=3, steps=6):
            assert got.dtype == torch.float32
            assert torch.equal(got, expected)


@pytest.mark.skipif(not kernels.ONEDNN_AVAILABLE, reason="this PyTorch build has no oneDNN")
@pytest.mark.parametrize("batch", [1, kernels.STREAM_ROWS + 1])  # oneDNN's rows, and MKL's
def test_the_step_takes_the_forward_passs_kernel_for_a_weight_too_large_for_the_caches(monkeypatch, batch):
    monkeypatch.setattr(kernels, "ONEDNN_LINEAR", False)  # an AVX2 CPU: oneDNN for large weights alone
    monkeypatch.setattr(kernels, "ONEDNN_STREAMING", True)
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=50, block_size=8, n_layer=1, n_head=4, n_embd=384)).eval()
    assert m.transformer.h[0].mlp.c_fc.weight.nbytes >= kernels.STREAM_BYTES
    assert m.transformer.h[0].attn.c_proj.weight.nbytes < kernels.STREAM_BYTES
    for expected, got, *_ in steps_both_ways(m, batch, prompt_len=2, steps=4):
        assert torch.equal(got, expected)


def test_the_step_refuses_to_run_past_the_context_and_leaves_the_cache_alone():
    m = model()
    cache = KVCache(m.config, 1)
    with torch.inference_mode():
        m(torch.zeros(1, m.config.block_size, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="longer than the context length 24; crop it"):
            DecodeStep(m, cache)(torch.zeros(1, dtype=torch.long))
    assert cache.pos == m.config.block_size


def test_the_step_refuses_a_model_in_training_mode():
    m = model().train()
    with pytest.raises(ValueError, match="eval mode"):
        DecodeStep(m, KVCache(m.config, 1))
