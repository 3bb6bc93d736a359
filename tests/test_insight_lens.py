"""Attention weights and the logit lens, against oracles: a softmax(QKᵀ/√d) with the causal mask worked
out by hand from a block's c_attn weights, transformers' GPT-2 (output_attentions=True) with the same
random weights, and the model's own logits for the last layer of the lens."""

import math

import pytest
import torch

from gptlab.config import ModelConfig
from gptlab.insight.lens import (AttentionMap, LensError, attention_map, attention_weights, lens_logits, logit_lens,
                                 residual_streams)
from gptlab.insight.model_views import attention_figure, lens_html
from gptlab.model import GPT

CONFIG = ModelConfig(vocab_size=50, block_size=16, n_layer=3, n_head=4, n_embd=32, dropout=0.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(CONFIG).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mix-up of them shows
        for name, p in m.named_parameters():
            if "ln_" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


IDS = [3, 14, 15, 9, 2, 6, 5, 35, 8, 9, 7, 9]


def manual_attention(block, x):
    """softmax(QKᵀ/√d) with the causal mask, per head, from the block's own weights: (nh, T, T)."""
    h = block.ln_1(x)
    qkv = h @ block.attn.c_attn.weight.T + block.attn.c_attn.bias
    q, k, _ = qkv.split(CONFIG.n_embd, dim=-1)
    d = CONFIG.n_embd // CONFIG.n_head
    heads = []
    for i in range(CONFIG.n_head):
        qi, ki = q[:, i * d:(i + 1) * d], k[:, i * d:(i + 1) * d]
        scores = qi @ ki.T / math.sqrt(d)
        future = torch.ones_like(scores, dtype=torch.bool).triu(1)
        heads.append(scores.masked_fill(future, float("-inf")).softmax(-1))
    return torch.stack(heads)


def test_attention_weights_equal_a_softmax_worked_out_by_hand(model):
    attentions = attention_weights(model, IDS)
    streams = residual_streams(model, IDS)
    with torch.no_grad():
        for layer, block in enumerate(model.transformer.h):
            expected = manual_attention(block, streams[layer])
            torch.testing.assert_close(attentions[layer], expected, atol=1e-6, rtol=1e-5)
    assert all(torch.allclose(a.sum(-1), torch.ones(CONFIG.n_head, len(IDS))) for a in attentions)
    assert all(torch.all(a.triu(1) == 0) for a in attentions)  # nothing reads the future


def test_attention_weights_equal_hugging_face_output_attentions():
    transformers = pytest.importorskip("transformers")
    from gptlab.hub import from_hf_state_dict

    torch.manual_seed(1)
    hf_config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=3, n_head=4,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                        eos_token_id=0, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    ours = GPT(CONFIG).eval()
    ours.load_state_dict(from_hf_state_dict(hf.state_dict()), strict=True)
    with torch.no_grad():
        expected = hf(torch.tensor([IDS]), output_attentions=True).attentions
    for ours_layer, hf_layer in zip(attention_weights(ours, IDS), expected):
        torch.testing.assert_close(ours_layer, hf_layer[0], atol=1e-5, rtol=1e-5)


def test_attention_map_picks_the_layer_and_head_and_crops_to_the_last_tokens(model):
    labels = [f"t{i}" for i in IDS]
    full = attention_weights(model, IDS)
    m = attention_map(model, IDS, labels, layer=2, head=3)
    assert (m.layer, m.head, m.offset, m.n_layer, m.n_head) == (2, 3, 0, 3, 4)
    torch.testing.assert_close(torch.tensor(m.weights), full[1][2])
    cropped = attention_map(model, IDS, labels, layer=3, head=1, max_tokens=5)
    assert cropped.offset == len(IDS) - 5 and cropped.labels == tuple(labels[-5:])
    torch.testing.assert_close(torch.tensor(cropped.weights), full[2][0][-5:, -5:])


@pytest.mark.parametrize("layer, head, words", [(0, 1, "layer from 1 to 3"), (4, 1, "layer from 1 to 3"),
                                                (1, 0, "head from 1 to 4"), (1, 5, "head from 1 to 4")])
def test_a_layer_or_head_out_of_range_is_a_sentence_naming_the_range(model, layer, head, words):
    with pytest.raises(LensError, match=words):
        attention_map(model, IDS, [""] * len(IDS), layer=layer, head=head)


def test_no_tokens_or_too_many_are_refused_with_a_sentence(model):
    with pytest.raises(LensError, match="type a prompt"):
        logit_lens(model, [])
    with pytest.raises(LensError, match="at most 16 tokens"):
        attention_weights(model, [1] * 17)


@pytest.mark.parametrize("architecture", ["gpt2", "nanochat"])
def test_the_lens_of_the_last_layer_is_the_models_own_logits(model, architecture):
    if architecture == "nanochat":  # rotary positions, a norm after the embedding, a soft-capped head
        torch.manual_seed(0)
        model = GPT(CONFIG.replace(architecture="nanochat")).eval()
    lens = lens_logits(model, IDS)
    assert lens.shape == (CONFIG.n_layer + 1, len(IDS), CONFIG.vocab_size)
    with torch.no_grad():
        logits, _ = model(torch.tensor([IDS]))
    torch.testing.assert_close(lens[-1], logits[0], atol=1e-5, rtol=1e-5)


def test_the_lens_of_a_middle_layer_is_ln_f_and_the_head_after_that_block(model):
    with torch.no_grad():
        t = model.transformer
        x = t.wte(torch.tensor([IDS])) + t.wpe(torch.arange(len(IDS)))
        embeddings = x[0]
        x, _ = t.h[0](x)  # after block 1 by hand
        expected = t.ln_f(x[0]) @ t.wte.weight.T  # the head is tied to the embeddings
        expected_0 = t.ln_f(embeddings) @ t.wte.weight.T
    lens = lens_logits(model, IDS)
    torch.testing.assert_close(lens[1], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lens[0], expected_0, atol=1e-5, rtol=1e-5)


def test_the_untrained_embeddings_row_echoes_the_input_only_where_the_head_is_tied():
    """What the Sample tab's lens panel tells the user: GPT-2 ties its head to the embeddings, nanochat does not."""
    firsts = {}
    for architecture in ("gpt2", "nanochat"):
        torch.manual_seed(0)
        untrained = GPT(CONFIG.replace(architecture=architecture)).eval()
        firsts[architecture] = lens_logits(untrained, IDS)[0].argmax(-1).tolist()
    assert firsts["gpt2"] == IDS
    assert sum(a == b for a, b in zip(firsts["nanochat"], IDS)) <= 2


def test_logit_lens_tables_the_top_tokens_per_layer_and_position(model):
    table = logit_lens(model, IDS, top=3, max_positions=5)
    probs = lens_logits(model, IDS).softmax(-1)
    assert table.n_layers == CONFIG.n_layer + 1 and table.offset == len(IDS) - 5 and table.ids == tuple(IDS[-5:])
    for layer in range(table.n_layers):
        for j, top in enumerate(table.top[layer]):
            p = probs[layer, table.offset + j]
            assert [t for t, _ in top] == p.topk(3).indices.tolist()
            assert top[0][1] == pytest.approx(p.max().item(), rel=1e-6)
            assert top[0][1] >= top[1][1] >= top[2][1]


def test_views_escape_token_text_and_draw_both_sides(model):
    evil = "<script>alert(1)</script>"
    html = lens_html(logit_lens(model, IDS[:4]), lambda i: evil if i == IDS[0] else f"t{i}", title="a<b")
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&lt;b" in html
    assert html.count("<tr>") == CONFIG.n_layer + 2  # the header and a row per layer
    m = attention_map(model, IDS, [evil] * len(IDS), layer=1, head=1)
    fig = attention_figure([("untrained", m), ("trained", m)])
    heatmaps = [ax for ax in fig.axes if ax.images and ax.get_xlabel()]
    assert len(heatmaps) == 2 and heatmaps[0].get_ylabel().startswith("query")
    assert isinstance(m, AttentionMap) and "head 1" in fig._suptitle.get_text()
