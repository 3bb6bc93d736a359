"""Per-token surprise: the losses sum to the model's cross-entropy, bits per character by hand, token
pieces that join back to the passage, and a surprise map whose text is escaped."""

import math

import pytest
import torch
import torch.nn.functional as F

from gptlab.config import ModelConfig
from gptlab.insight.model_views import surprise_html, surprise_legend
from gptlab.insight.baselines import bits_per_character
from gptlab.insight.surprise import Surprise, SurpriseError, cap_passage, surprise, token_losses, token_pieces
from gptlab.model import GPT
from gptlab.tokenizers import build_tokenizer

TEXT = "the cat sat on the mat; <b>the</b> dog & the fox — naïve café.\n"


@pytest.fixture(scope="module")
def gpt2():
    return build_tokenizer("gpt2")


@pytest.fixture(scope="module")
def char():
    return build_tokenizer("char", TEXT)


def model_for(tokenizer, block_size=64):
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16,
                           dropout=0.0)).eval()


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_per_token_losses_sum_to_the_models_cross_entropy(kind, gpt2, char):
    tokenizer = gpt2 if kind == "gpt2" else char
    model = model_for(tokenizer)
    ids = tokenizer.encode(TEXT)
    losses = token_losses(model, ids)
    idx = torch.tensor([ids])
    with torch.no_grad():
        logits, loss = model(idx[:, :-1], idx[:, 1:])
        expected = F.cross_entropy(logits[0], idx[0, 1:], reduction="sum")
    assert losses.shape == (len(ids) - 1,)
    torch.testing.assert_close(losses.sum(), expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(losses.mean(), loss, atol=1e-5, rtol=1e-5)
    result = surprise(model, tokenizer, ids)
    assert result.total_nats == pytest.approx(expected.item(), rel=1e-5)
    assert result.mean_nats == pytest.approx(loss.item(), rel=1e-5)
    assert result.bits == pytest.approx([x / math.log(2) for x in losses.tolist()])


def test_bits_per_character_by_hand():
    # 4 tokens each guessed uniformly among 16: 4 bits a token, 16 bits over 8 characters = 2 bits each.
    assert bits_per_character(math.log(16), 4 / 8) == pytest.approx(2.0)
    known = Surprise(ids=(0, 1, 2), pieces=("a", "bc", "d"), losses=(math.log(8), math.log(2)), vocab_size=16)
    assert known.characters == 3  # the scored tokens only: "bc" and "d"
    assert known.bits == pytest.approx((3.0, 1.0))
    assert known.bits_per_character == pytest.approx(4 / 3)
    assert known.random_guess_bits == pytest.approx(4.0)
    with pytest.raises(SurpriseError, match="no characters"):
        Surprise(ids=(0, 1), pieces=("a", ""), losses=(1.0,), vocab_size=16).bits_per_character


def test_token_pieces_join_back_to_the_passage_even_when_bpe_splits_a_character(gpt2):
    text = "naïve 🦊 café"
    ids = gpt2.encode(text)
    pieces = token_pieces(gpt2, ids)
    assert "".join(pieces) == text and len(pieces) == len(ids)
    assert "" in pieces  # the fox emoji spans several byte tokens; only the last one holds it
    assert "\ufffd" not in "".join(pieces)


def test_a_passage_is_capped_to_the_context_plus_one_and_short_ones_are_refused(char):
    model = model_for(char, block_size=8)
    ids = char.encode(TEXT)
    capped, cut = cap_passage(ids, 8)
    assert capped == ids[:9] and cut and cap_passage(ids[:9], 8) == (ids[:9], False)
    assert len(token_losses(model, capped)) == 8
    with pytest.raises(SurpriseError, match="at most 9 tokens"):
        token_losses(model, ids[:10])
    with pytest.raises(SurpriseError, match="at least two tokens"):
        token_losses(model, ids[:1])


def test_the_surprise_map_escapes_text_and_shows_the_loss_on_hover(char):
    model = model_for(char)
    result = surprise(model, char, char.encode(TEXT))
    page = surprise_html(result, "trained <yours>")
    body = page.split("</p>", 1)[1]
    assert "<b>" not in body and "&lt;</span>" in body and "&amp;" in body and "&lt;yours&gt;" in page
    assert page.count("<span") == len(result.ids)
    assert page.count(" bits\"") == len(result.losses)  # a title with the bits on every scored token
    assert f"{result.bits_per_character:.3f} bits per character" in page
    assert f"{math.log2(char.vocab_size):.1f}" in surprise_legend(char.vocab_size)
