"""The GPT network: exact parameter counts, GPT-2 names and init, the KV cache and attention-map
paths against the plain forward, and logits equal to Hugging Face's GPT-2 with the same weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from gptlab.config import ModelConfig
from gptlab.model import GPT, KVCache, apply_rotary, rotary


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)
    return ModelConfig(**{**base, **kw})


def make(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny(**kw)).eval()


# --------------------------------------------------------------------------------------------
# Shape of the network


@pytest.mark.parametrize("kw", [
    {}, dict(bias=False), dict(n_layer=1, n_head=1, n_embd=8, vocab_size=3, block_size=4),
    dict(n_layer=3, n_head=4, n_embd=48, vocab_size=1000, block_size=17, bias=False), dict(dropout=0.2),
    dict(architecture="nanochat"), dict(architecture="nanochat", n_layer=3, n_head=4, n_embd=48, vocab_size=1000),
])
def test_param_count_matches_config(kw):
    config = tiny(**kw)
    model = GPT(config)
    assert model.num_params() == config.num_params()
    assert sum(p.numel() for p in model.parameters()) == config.num_params()


def test_bias_false_has_no_biases():
    names = [n for n, _ in make(bias=False).named_parameters()]
    assert not any(n.endswith(".bias") for n in names)
    assert "transformer.h.0.ln_1.weight" in names


def test_gpt2_parameter_names():
    names = set(dict(make().named_parameters()))
    sd = set(make().state_dict())
    for name in ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias",
                 "transformer.h.0.ln_1.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
                 "transformer.h.0.attn.c_proj.weight", "transformer.h.1.ln_2.bias", "transformer.h.1.mlp.c_fc.weight",
                 "transformer.h.1.mlp.c_proj.weight"]:
        assert name in names
    assert "lm_head.weight" in sd  # shared, so listed once among parameters but present in the state dict


def test_lm_head_is_tied_to_wte():
    model = make()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    with torch.no_grad():
        model.transformer.wte.weight[3, 0] = 42.0
    assert model.lm_head.weight[3, 0].item() == 42.0


def test_init_stds():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config)
    sd = dict(model.named_parameters())
    scaled = 0.02 / math.sqrt(2 * config.n_layer)
    for name, p in sd.items():
        if name.endswith("c_proj.weight"):
            assert abs(p.std().item() - scaled) < 0.1 * scaled, name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert abs(p.std().item() - 0.02) < 0.002, name
        elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            assert torch.all(p == 1), name
        elif name.endswith(".bias"):
            assert torch.all(p == 0), name
    assert abs(sd["transformer.h.0.attn.c_proj.weight"].mean().item()) < 1e-3


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
@pytest.mark.parametrize("vocab_size", [65, 1000])
def test_initial_loss_is_uniform_guess(vocab_size, architecture):
    # A fresh model knows nothing, so its loss on random targets is about ln(vocab).
    model = make(vocab_size=vocab_size, architecture=architecture)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(vocab_size, (8, 32), generator=g)
    targets = torch.randint(vocab_size, (8, 32), generator=g)
    with torch.no_grad():
        logits, loss = model(idx, targets)
    assert logits.shape == (8, 32, vocab_size)
    assert loss.ndim == 0
    assert abs(loss.item() - math.log(vocab_size)) < 0.15


def test_forward_without_targets_returns_no_loss():
    logits, loss = make()(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, 65) and loss is None


def test_ignore_index_minus_one():
    model = make()
    idx = torch.randint(65, (2, 10), generator=torch.Generator().manual_seed(0))
    targets = idx.roll(-1, 1)
    masked = targets.clone()
    masked[:, 5:] = -1
    with torch.no_grad():
        logits, loss = model(idx, masked)
    expected = F.cross_entropy(logits[:, :5].reshape(-1, 65), targets[:, :5].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_too_long_sequence_raises():
    model = make()
    model(torch.zeros(1, 32, dtype=torch.long))  # exactly block_size is fine
    with pytest.raises(ValueError, match="context length 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_cache_overflow_raises_value_error():
    model = make()
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="crop"):
            model(torch.zeros(1, 3, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
def test_causality(architecture):
    # Changing a later token must not change earlier logits.
    model = make(architecture=architecture)
    idx = torch.randint(65, (1, 16), generator=torch.Generator().manual_seed(3))
    changed = idx.clone()
    changed[0, 10] = (changed[0, 10] + 1) % 65
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


# --------------------------------------------------------------------------------------------
# KV cache and attention maps against the plain forward


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
@pytest.mark.parametrize("chunks", [[12, 5, 3, 1, 1, 1, 1], [1] * 10, [32], [1, 31]])
def test_kv_cache_equals_full_forward(chunks, architecture):
    model = make(seed=4, architecture=architecture)
    B, T = 3, sum(chunks)
    idx = torch.randint(65, (B, T), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full, _ = model(idx)  # (B, T, vocab)
        cache = KVCache(model.config, batch_size=B)
        parts, start = [], 0
        for n in chunks:
            logits, _ = model(idx[:, start:start + n], cache=cache)
            parts.append(logits)
            start += n
        assert cache.pos == T
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
def test_kv_cache_reorder_keeps_chosen_rows(architecture):
    model = make(architecture=architecture, seed=6)
    idx = torch.randint(65, (3, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        cache = KVCache(model.config, batch_size=3)
        model(idx[:, :8], cache=cache)
        cache.reorder(torch.tensor([2, 2, 0]))
        step, _ = model(idx[[2, 2, 0], 8:], cache=cache)
        full, _ = model(idx[[2, 2, 0]])
    torch.testing.assert_close(step[:, -1], full[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
def test_attention_maps_are_causal_distributions(architecture):
    model = make(architecture=architecture, seed=8, n_layer=3)
    idx = torch.randint(65, (2, 12), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        plain, _ = model(idx)
        logits, loss, atts = model(idx, return_attention=True)
    assert loss is None
    assert len(atts) == 3
    upper = torch.ones(12, 12, dtype=torch.bool).triu(1)
    for att in atts:
        assert att.shape == (2, 2, 12, 12)  # (B, nh, T, T)
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, 12))
        assert torch.all(att[..., upper] == 0)
        assert torch.all(att >= 0)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
def test_attention_maps_with_cache(architecture):
    model = make(architecture=architecture, seed=10)
    idx = torch.randint(65, (1, 10), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        _, _, full_atts = model(idx, return_attention=True)
        cache = KVCache(model.config, batch_size=1)
        model(idx[:, :6], cache=cache)
        logits, _, atts = model(idx[:, 6:], cache=cache, return_attention=True)
    for att, full in zip(atts, full_atts):
        assert att.shape == (1, 2, 4, 10)  # the new queries against every position so far
        torch.testing.assert_close(att, full[:, :, 6:, :], atol=1e-5, rtol=0)


def test_dropout_only_in_train_mode():
    model = make(seed=12, dropout=0.5)
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        model.eval()
        a, _ = model(idx)
        b, _ = model(idx)
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        for return_attention in (False, True):
            model.train()
            torch.manual_seed(1)
            c = model(idx, return_attention=return_attention)[0]
            torch.manual_seed(2)
            d = model(idx, return_attention=return_attention)[0]
            assert not torch.allclose(c, d)
            assert not torch.allclose(c, a)
        model.eval()
        e, _ = model(idx)
    torch.testing.assert_close(a, e, atol=0, rtol=0)


def test_zero_dropout_train_equals_eval():
    model = make(seed=14, dropout=0.0)
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        a, _ = model.eval()(idx)
        b, _ = model.train()(idx)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
def test_gradients_reach_every_parameter(architecture):
    model = make(architecture=architecture, seed=16).train()
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(17))
    _, loss = model(idx, idx.roll(-1, 1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------------------------
# It learns


def test_tiny_model_memorises_a_short_text():
    torch.manual_seed(0)
    text = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
            "First Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved. "
            "First Citizen: First, you know Caius Marcius")[:200]
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    config = ModelConfig(vocab_size=len(chars), block_size=len(text), n_layer=2, n_head=2, n_embd=64)
    model = GPT(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    x, y = data[None, :-1], data[None, 1:]  # (1, 199): the whole text as one sequence
    losses = []
    for _ in range(200):
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.5
    assert losses[-1] < 0.1, losses[-10:]  # typically about 0.005
    model.eval()
    with torch.no_grad():
        logits, _ = model(x)
    assert (logits.argmax(-1) == y).float().mean() > 0.95


# --------------------------------------------------------------------------------------------
# Hugging Face reference


@pytest.fixture(scope="module")
def hf_pair():
    transformers = pytest.importorskip("transformers")
    from gptlab.hub import from_hf_state_dict

    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=3, n_head=4,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                        bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # HF initialises LayerNorms to (1, 0); make them non-trivial so a mix-up shows
        for name, p in hf.named_parameters():
            if "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn_like(p))
    config = ModelConfig(vocab_size=97, block_size=24, n_layer=3, n_head=4, n_embd=32)
    ours = GPT(config).eval()
    missing, unexpected = ours.load_state_dict(from_hf_state_dict(hf.state_dict()), strict=True)
    assert not missing and not unexpected
    return hf, ours


def test_logits_match_hugging_face(hf_pair):
    hf, ours = hf_pair
    idx = torch.randint(97, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, _ = ours(idx)
        explicit, _, _ = ours(idx, return_attention=True)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, expected, atol=1e-5, rtol=1e-5)


def test_loss_and_greedy_tokens_match_hugging_face(hf_pair):
    hf, ours = hf_pair
    idx = torch.randint(97, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = hf(idx, labels=idx)
        # HF shifts the labels inside; ours takes targets already shifted.
        _, loss = ours(idx[:, :-1], idx[:, 1:])
        torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=1e-5)
        hf_ids = ours_ids = idx
        for _ in range(8):
            hf_ids = torch.cat([hf_ids, hf(hf_ids).logits[:, -1:].argmax(-1)], dim=1)
            ours_ids = torch.cat([ours_ids, ours(ours_ids)[0][:, -1:].argmax(-1)], dim=1)
    assert torch.equal(hf_ids, ours_ids)


# --------------------------------------------------------------------------------------------
# Adjusting a trained model


def test_crop_block_size_keeps_the_first_positions():
    model = make(seed=18)
    idx = torch.randint(65, (2, 8), generator=torch.Generator().manual_seed(19))
    with torch.no_grad():
        before, _ = model(idx)
        model.crop_block_size(8)
        after, _ = model(idx)
    assert model.config.block_size == 8
    assert model.transformer.wpe.weight.shape == (8, 32)
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert model.num_params() == model.config.num_params()
    with pytest.raises(ValueError, match="context length 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_set_dropout_switches_every_dropout():
    model = make(seed=20, dropout=0.0).train()
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(21))
    with torch.no_grad():
        a, _ = model(idx)
        model.set_dropout(0.5)
        assert model.config.dropout == 0.5
        torch.manual_seed(1)
        b, _ = model(idx)
        model.set_dropout(0.0)
        c, _ = model(idx)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, c, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# nanochat


def test_nanochat_has_no_position_table_biases_or_norm_weights_and_an_untied_head():
    model = make(architecture="nanochat", bias=True)  # bias is ignored: nanochat has none
    names = set(dict(model.named_parameters()))
    assert names == {"transformer.wte.weight", "lm_head.weight"} | {
        f"transformer.h.{i}.{n}.weight" for i in range(2) for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    assert set(model.state_dict()) == names  # no buffers: the rotary angles are computed per call


def test_nanochat_init_follows_transformers():
    model = make(architecture="nanochat", n_layer=4, n_embd=64, n_head=4)
    sd = dict(model.named_parameters())
    assert sd["transformer.h.0.attn.c_proj.weight"].std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    for name in ("transformer.h.0.mlp.c_proj.weight", "transformer.h.0.attn.c_attn.weight", "lm_head.weight",
                 "transformer.wte.weight"):
        assert sd[name].std().item() == pytest.approx(0.02, rel=0.1), name


def test_nanochat_logits_are_soft_capped_and_the_context_crops():
    model = make(architecture="nanochat")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 3.0)
        logits, _ = model(torch.randint(65, (2, 16)))
    assert 10.0 < logits.abs().max() < 15.0
    crop = make(architecture="nanochat")
    crop.crop_block_size(16)
    assert crop.config.block_size == 16 and crop(torch.zeros(1, 16, dtype=torch.long))[0].shape == (1, 16, 65)


def test_nanochat_matches_transformers_logits():
    transformers = pytest.importorskip("transformers")
    from gptlab.hub import from_hf_state_dict
    torch.manual_seed(0)
    hf = transformers.NanoChatForCausalLM(transformers.NanoChatConfig(
        vocab_size=65, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=32, pad_token_id=None, initializer_range=0.5)).eval()
    ours = make(architecture="nanochat")
    ours.load_state_dict(from_hf_state_dict(hf.state_dict()))  # the wide init makes any slip show
    idx = torch.randint(65, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, rtol=0, atol=1e-5)


def test_nanochat_trains_under_bf16_autocast():
    # The rotary angles are float32; cast to q's dtype, they keep q, k and v one dtype for attention.
    model = make(architecture="nanochat").train()
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx.roll(-1, 1))
    loss.backward()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_nanochat_rotary_table_made_while_generating_serves_training_and_stays_out_of_the_state_dict():
    """The rotary angles are computed once and kept beside the model; one made while generating
    (under inference mode) must still serve a training step, whose backward saves it."""
    model = make(architecture="nanochat")
    idx = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before, _ = model(idx)
    _, loss = model(idx, idx)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    cos, sin = model._rotary
    fresh_cos, fresh_sin = rotary(torch.arange(model.config.block_size), model.config.head_size)
    assert torch.equal(cos, fresh_cos) and torch.equal(sin, fresh_sin)
    with torch.no_grad():
        assert torch.equal(model(idx)[0], before)
    assert "_rotary" not in "".join(model.state_dict())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nanochat_rotation_by_roll_equals_the_textbook_rotation_bit_for_bit(dtype):
    """apply_rotary rolls each head by half and lets the sin table's negated half give the sign; it
    must compute nanochat's x * cos + cat(x2, -x1) * sin exactly."""
    hs = 16
    cos, signed_sin = rotary(torch.arange(10), hs)
    sin = torch.cat((signed_sin[:, :hs // 2], -signed_sin[:, hs // 2:]), dim=-1)
    assert torch.equal(sin, torch.cat((signed_sin[:, :hs // 2],) * 2, dim=-1))  # the plain sin, twice
    x = torch.randn(2, 3, 10, hs, generator=torch.Generator().manual_seed(0)).to(dtype)
    x1, x2 = x.chunk(2, dim=-1)
    textbook = x * cos.to(dtype) + torch.cat((x2, -x1), dim=-1) * sin.to(dtype)
    assert torch.equal(apply_rotary(x, cos, signed_sin), textbook)
