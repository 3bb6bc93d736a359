"""Streaming ids to text: never half a UTF-8 character (GPT-2 BPE splits emoji and CJK characters
across tokens), pieces that join up to tokenizer.decode, and stop strings that may span pieces."""

import random

import pytest

from gptlab.textstream import TextStream, stream_text
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer

WIDE_TEXT = "Hello 🌍🎉 你好世界, naïve café 😀👍🏽 — ok. 日本語のテキスト 🦄✨"


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer()


def pushed(tokenizer, ids) -> list[str]:
    stream = TextStream(tokenizer)
    return [stream.push(i) for i in ids] + [stream.flush()]


def test_gpt2_tokens_that_split_characters_are_held_back(gpt2):
    ids = gpt2.encode(WIDE_TEXT)
    partial = [i for i in ids if _not_utf8(gpt2.decode_bytes([i]))]
    assert len(partial) >= 4  # the text really has tokens that are pieces of characters
    pieces = pushed(gpt2, ids)
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == WIDE_TEXT
    assert any(p == "" for p in pieces)  # held back while a character was incomplete


def test_pieces_join_up_to_decode_for_any_ids(gpt2):
    # Random ids give invalid byte sequences too; they must turn into U+FFFD just as decode does.
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.choice([rng.randrange(256), rng.randrange(gpt2.vocab_size)]) for _ in range(rng.randrange(1, 12))]
        assert "".join(pushed(gpt2, ids)) == gpt2.decode(ids)


def test_an_unfinished_character_at_the_end_becomes_a_replacement_on_flush(gpt2):
    first_byte = [i for i in gpt2.encode("🦄") if _not_utf8(gpt2.decode_bytes([i]))][0]
    stream = TextStream(gpt2)
    assert stream.push(first_byte) == ""
    assert stream.flush() == "\ufffd" == gpt2.decode([first_byte])


def test_char_tokenizer_streams_one_character_per_token():
    tok = CharTokenizer.from_text("héllo wörld ✨")
    assert pushed(tok, tok.encode("wö✨")) == ["w", "ö", "✨", ""]


def test_stream_text_without_stop_strings_is_the_decoded_text(gpt2):
    pieces = list(stream_text(gpt2.encode(WIDE_TEXT), gpt2))
    assert "".join(pieces) == WIDE_TEXT
    assert all(pieces) and all("\ufffd" not in p for p in pieces)


def test_stop_string_spanning_pieces_is_cut_with_everything_after():
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz .#")
    pieces = list(stream_text(tok.encode("hello world. the end"), tok, stop=("d. t",)))
    assert "".join(pieces) == "hello worl"
    # Text that might start a stop string is held back until the next token settles it.
    assert list(stream_text(tok.encode("a#b##c"), tok, stop=("###",))) == ["a", "#b", "##c"]


def test_earliest_stop_string_wins_and_partial_match_at_end_is_released():
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz .#")
    assert "".join(stream_text(tok.encode("xx ab b"), tok, stop=("b", "ab"))) == "xx "
    assert "".join(stream_text(tok.encode("one##"), tok, stop=("###",))) == "one##"


def test_stop_string_inside_a_multibyte_stream(gpt2):
    pieces = list(stream_text(gpt2.encode(WIDE_TEXT), gpt2, stop=("世界",)))
    assert "".join(pieces) == "Hello 🌍🎉 你好"
    pieces = list(stream_text(gpt2.encode(WIDE_TEXT), gpt2, stop=("🏽",)))
    assert "".join(pieces) == "Hello 🌍🎉 你好世界, naïve café 😀👍"


def test_stop_ends_reading_ids_and_closes_the_generator():
    tok = CharTokenizer.from_text("abc.")
    state = {"read": 0, "closed": False}

    def ids():
        try:
            for i in tok.encode("abc.abc.abc."):
                state["read"] += 1
                yield i
        finally:
            state["closed"] = True

    assert "".join(stream_text(ids(), tok, stop=(".",))) == "abc"
    assert state == {"read": 4, "closed": True}


def test_empty_stop_string_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        list(stream_text([0], CharTokenizer("a"), stop=("",)))


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
