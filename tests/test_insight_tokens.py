"""The token view: pieces that join back to the text with the tokenizer's own ids, characters split
across BPE tokens shown on the token that completes them, counts and characters per token by hand,
escaped HTML, the Data tab's side-by-side comparison, and the service's `tokens` (without gradio)."""

import re

import pytest
from hypothesis import given, settings, strategies as st

from gptlab.checkpoint import zip_for_sharing
from gptlab.data import DataError
from gptlab.insight.token_views import CSS, SPLIT, chip, comparison_html, summary, token_chips_html
from gptlab.insight.tokens import TokenPiece, chars_per_token, compare_tokenizers, token_pieces
from gptlab.service import UPLOADED, Lab, Limits
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer, UnknownCharactersError

GPT2 = GPT2Tokenizer()
MIXED = "héllo wörld 🙂 日本語\n\tend"


def test_char_pieces_are_the_characters_with_their_ids():
    tokenizer = CharTokenizer.from_text("hello world")
    view = token_pieces(tokenizer, "hello world")
    assert [p.text for p in view.pieces] == list("hello world")
    assert [p.id for p in view.pieces] == tokenizer.encode("hello world")
    assert view.count == view.characters == 11 and view.chars_per_token == 1.0 and not view.truncated


def test_gpt2_pieces_by_hand_and_characters_per_token():
    view = token_pieces(GPT2, "hello world")
    assert [(p.id, p.text) for p in view.pieces] == [(31373, "hello"), (995, " world")]
    assert view.count == 2 and view.characters == 11 and view.chars_per_token == 5.5
    assert chars_per_token(11, 2) == 5.5 and chars_per_token(5, 0) is None


def test_a_character_split_across_bpe_tokens_shows_on_the_token_that_completes_it():
    view = token_pieces(GPT2, MIXED)
    assert "".join(p.text for p in view.pieces) == MIXED
    assert [p.id for p in view.pieces] == GPT2.encode(MIXED)
    assert all("\ufffd" not in p.text for p in view.pieces)  # never a replacement character for half a letter
    # GPT-2 cuts 日 (e6 97 a5) into ' '+e6, 97, a5: the first two end inside it, the third shows it.
    i = next(k for k, p in enumerate(view.pieces) if p.text == "日")
    before = view.pieces[i - 2:i]
    assert [p.split for p in before] == [True, True] and before[0].text == " " and before[1].text == ""
    assert "".join(p.bytes_hex for p in view.pieces[i - 2:i + 1]) == " 日".encode().hex()
    assert not view.pieces[i].split
    # the chips mark a split token, so an empty piece never looks like nothing
    assert f">{SPLIT}</span>" in chip(before[1], 0) and "ends inside a character" in chip(before[1], 0)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_bpe_pieces_join_back_to_any_text(text):
    view = token_pieces(GPT2, text)
    assert "".join(p.text for p in view.pieces) == text
    assert [p.id for p in view.pieces] == GPT2.encode(text)
    assert bytes.fromhex("".join(p.bytes_hex for p in view.pieces)) == text.encode("utf-8")


def test_a_limit_cuts_the_text_before_it_is_tokenised():
    view = token_pieces(GPT2, "hello world, hello world", limit=5)
    assert view.truncated and view.characters == 5 and "".join(p.text for p in view.pieces) == "hello"
    assert "(the first 5 characters)" in summary(view)


def test_empty_text_has_no_tokens_and_a_char_tokenizer_names_unknown_characters():
    view = token_pieces(GPT2, "")
    assert view.count == 0 and view.chars_per_token is None and summary(view) == "no tokens"
    assert "(empty)" in token_chips_html(view)
    with pytest.raises(UnknownCharactersError, match="'z'"):
        token_pieces(CharTokenizer.from_text("abc"), "abz")


def test_html_escapes_the_users_text_in_chips_and_hovers():
    text = '<script>alert("x")</script> & \'q\''
    html = token_chips_html(token_pieces(GPT2, text), title="<i>t</i>")
    assert "<script>" not in html and "<i>t</i>" not in html and "&lt;" in html and "&amp;" in html
    titles = re.findall(r'title="([^"]*)"', html)
    assert len(titles) == len(GPT2.encode(text))  # no quote in the text ended an attribute early
    assert all("<" not in t and ">" not in t for t in titles)


def test_white_space_is_visible_and_a_new_line_still_breaks_the_line():
    html = token_chips_html(token_pieces(CharTokenizer.from_text("a b\n"), "a b\n"))
    assert ">␣</span>" in html and ">⏎</span><br>" in html
    assert 'title="id 3 · &#x27;b&#x27;' in html  # the id and the text on hover


def test_chips_alternate_colours():
    html = token_chips_html(token_pieces(CharTokenizer.from_text("ab"), "abab"))
    assert re.findall(r'class="token (t\d)"', html) == ["t0", "t1", "t2", "t3"]
    assert ".token.t0{background:" in CSS and ".token.t3{background:" in CSS


def test_the_comparison_counts_the_whole_text_with_both_tokenizers():
    documents = ["hello world\n" * 300, "the end"]
    comparison = compare_tokenizers(documents, limit=100)
    char, bpe = comparison.totals
    assert char.characters == bpe.characters == sum(map(len, documents))
    assert char.tokens == len("\n\n".join(documents))  # a char run joins documents with a blank line
    assert bpe.tokens == len(GPT2.encode(documents[0])) + 1 + len(GPT2.encode(documents[1]))  # and an end-of-text
    assert all(v.characters == 100 and v.truncated for v in comparison.views)
    assert bpe.chars_per_token > 2 > char.chars_per_token
    # a count the caller already has is used as given, not counted again
    assert compare_tokenizers(documents, known={"gpt2": 7}).totals[1].tokens == 7
    html = comparison_html(comparison)
    assert "Characters (char)" in html and "GPT-2 BPE (gpt2)" in html and f"{bpe.tokens:,} tokens" in html


# ------------------------------------------------------------------------------------------------
# The service's token view of a prompt and output


@pytest.fixture
def uploaded(tiny_run, tmp_path):
    return str(zip_for_sharing(tiny_run / "best", tmp_path / "tiny.zip"))


def test_the_service_shows_the_output_with_the_checkpoints_tokenizer(tmp_path, uploaded):
    lab = Lab(tmp_path / "runs")
    view = lab.tokens(owner=None, run_id=None, which=UPLOADED, upload=uploaded, prompt="the", output="the quick")
    assert view.tokenizer == "char" and view.count == 9 and view.html.count('class="token t') == 9
    assert lab.tokens(owner=None, run_id=None, which=UPLOADED, upload=uploaded, prompt="the", output="").count == 3


def test_the_service_explains_what_it_cannot_show(tmp_path, uploaded):
    lab = Lab(tmp_path / "runs", limits=Limits(max_prompt_chars=10, max_new_tokens=1))
    with pytest.raises(DataError, match="Type a prompt or generate some text first"):
        lab.tokens(owner=None, run_id=None, which=UPLOADED, upload=uploaded, prompt="", output=None)
    with pytest.raises(ValueError, match="Choose a run first"):
        lab.tokens(owner=None, run_id=None, which="best", upload=None, prompt="the", output="")
    with pytest.raises(UnknownCharactersError, match="'Z'"):
        lab.tokens(owner=None, run_id=None, which=UPLOADED, upload=uploaded, prompt="Zebra", output="")
    long = lab.tokens(owner=None, run_id=None, which=UPLOADED, upload=uploaded, prompt="", output="the " * 100)
    assert long.count == lab.max_token_view_chars == 26 and "(the first 26 characters)" in long.summary
