"""Tokenizers: GPT-2 ids pinned to the reference, lossless round trips, clear errors, save/load."""

import json

import pytest

from gptlab.tokenizers import (
    EOT_TEXT,
    TOKENIZER_FILE,
    CharTokenizer,
    GPT2Tokenizer,
    TokenizerError,
    UnknownCharactersError,
    build_tokenizer,
    load_tokenizer,
)

# Text that trips up naive tokenizers: astral-plane emoji (4 UTF-8 bytes, a ZWJ family), CJK,
# a combining accent (two code points that render as one), right-to-left Hebrew and Arabic,
# and whitespace that must survive exactly.
UNICODE_SAMPLES = [
    "Hello, world",
    "emoji 😀 and a family 👨‍👩‍👧 and a flag 🇫🇷",
    "日本語のテキストと中文",
    "cafe\u0301 vs café",  # decomposed and precomposed é are different strings and must stay so
    "שלום עולם and مرحبا",
    "line one\nline two\r\n\ttabbed  double  spaces\n\n",
    "",
]


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer()


# --------------------------------------------------------------------------------------------
# GPT-2


def test_gpt2_ids_match_the_reference(gpt2):
    # Pinned against OpenAI's GPT-2 tokenizer (and nanoGPT/LLMs-from-scratch examples).
    assert gpt2.encode("Hello, world") == [15496, 11, 995]
    assert gpt2.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    assert gpt2.eot == 50256
    assert gpt2.vocab_size == 50257
    assert gpt2.name == "gpt2"


def test_gpt2_literal_endoftext_is_ordinary_text(gpt2):
    ids = gpt2.encode(f"a{EOT_TEXT}b")
    assert gpt2.eot not in ids
    assert len(ids) > 3  # spelled out in pieces, not one special token
    assert gpt2.decode(ids) == f"a{EOT_TEXT}b"


def test_gpt2_eot_decodes_to_its_marker(gpt2):
    assert gpt2.decode([gpt2.eot]) == EOT_TEXT


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_gpt2_round_trip(gpt2, text):
    ids = gpt2.encode(text)
    assert all(isinstance(i, int) and 0 <= i < gpt2.vocab_size for i in ids)
    assert gpt2.decode(ids) == text
    assert gpt2.decode_bytes(ids) == text.encode("utf-8")


def test_gpt2_decode_accepts_a_tensor(gpt2):
    import torch

    ids = gpt2.encode("Hello, world")
    assert gpt2.decode(torch.tensor(ids)) == "Hello, world"


def test_gpt2_decode_bytes_of_a_partial_character(gpt2):
    # One emoji is 4 UTF-8 bytes split across BPE tokens; the first token alone is an incomplete
    # character: decode_bytes returns the raw prefix, decode shows a replacement character.
    emoji = "😀"
    ids = gpt2.encode(emoji)
    assert len(ids) >= 2
    first = gpt2.decode_bytes(ids[:1])
    assert emoji.encode("utf-8").startswith(first) and 0 < len(first) < 4
    with pytest.raises(UnicodeDecodeError):
        first.decode("utf-8")
    assert "\ufffd" in gpt2.decode(ids[:1])
    assert b"".join(gpt2.decode_bytes([i]) for i in ids) == emoji.encode("utf-8")


@pytest.mark.parametrize("make", [GPT2Tokenizer, lambda: CharTokenizer("abc")], ids=["gpt2", "char"])
@pytest.mark.parametrize("bad", [-1, 10**9])
def test_decode_rejects_ids_outside_the_vocabulary(make, bad):
    tok = make()
    with pytest.raises(TokenizerError, match=str(bad)):
        tok.decode([0, bad])


@pytest.mark.parametrize("make", [GPT2Tokenizer, lambda: CharTokenizer("abc")], ids=["gpt2", "char"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, "one"], ids=repr)
def test_decode_names_ids_that_are_not_numbers_as_a_tokenizer_error(make, bad):
    with pytest.raises(TokenizerError, match="^Token ids must be whole numbers"):
        make().decode([0, bad])


# --------------------------------------------------------------------------------------------
# Characters


def test_char_from_text_has_sorted_distinct_vocab():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world")) == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    assert tok.eot is None
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.name == "char"


@pytest.mark.parametrize("text", [t for t in UNICODE_SAMPLES if t])
def test_char_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one id per code point
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


def test_char_decode_bytes_of_a_part_of_the_text():
    tok = CharTokenizer.from_text("a😀b")
    assert tok.decode_bytes(tok.encode("😀")) == "😀".encode("utf-8")


def test_char_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UnknownCharactersError) as info:
        tok.encode("abXcYX😀")
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, TokenizerError)
    assert err.chars == sorted({"X", "Y", "😀"})
    message = str(err)
    for c in ("X", "Y", "😀"):
        assert repr(c) in message
    assert "3 character" in message


def test_char_unknown_characters_message_is_capped():
    tok = CharTokenizer("a")
    unknown = "".join(chr(0x4E00 + i) for i in range(30))
    with pytest.raises(UnknownCharactersError) as info:
        tok.encode(unknown)
    assert len(info.value.chars) == 30
    assert "..." in str(info.value) and "30 character" in str(info.value)


@pytest.mark.parametrize("chars", [[], "", ["a", "a"], ["ab"], ["a", ""], "aba"])
def test_char_invalid_vocab_rejected(chars):
    with pytest.raises(TokenizerError):
        CharTokenizer(chars)


@pytest.mark.parametrize("chars", [[1, 2], None, ["a", None]])
def test_char_non_text_vocab_rejected(chars):
    with pytest.raises(TokenizerError):
        CharTokenizer(chars)


def test_build_tokenizer():
    assert build_tokenizer("gpt2").name == "gpt2"
    assert build_tokenizer("char", "ba").chars == ["a", "b"]
    with pytest.raises(TokenizerError, match="training text"):
        build_tokenizer("char", "")
    with pytest.raises(TokenizerError, match="char"):
        build_tokenizer("bpe")


# --------------------------------------------------------------------------------------------
# Save / load


def test_char_save_load_round_trip(tmp_path):
    text = "Hello 😀 世界\n\té"
    tok = CharTokenizer.from_text(text)
    tok.save(tmp_path)
    assert (tmp_path / TOKENIZER_FILE).is_file()
    assert not list(tmp_path.glob("*.tmp"))
    back = load_tokenizer(tmp_path)
    assert isinstance(back, CharTokenizer)
    assert back.chars == tok.chars
    assert back.encode(text) == tok.encode(text)
    # Stored readably: the characters themselves, not escapes, so the file can be inspected.
    assert "世" in (tmp_path / TOKENIZER_FILE).read_text(encoding="utf-8")


def test_gpt2_save_load_round_trip(tmp_path, gpt2):
    gpt2.save(tmp_path)
    back = load_tokenizer(tmp_path)
    assert isinstance(back, GPT2Tokenizer)
    assert back.encode("Hello, world") == [15496, 11, 995]
    assert back.eot == 50256


def test_save_overwrites(tmp_path):
    CharTokenizer("ab").save(tmp_path)
    CharTokenizer("xyz").save(tmp_path)
    assert load_tokenizer(tmp_path).chars == ["x", "y", "z"]


def _write(tmp_path, content: str | bytes):
    path = tmp_path / TOKENIZER_FILE
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def test_load_missing_file(tmp_path):
    with pytest.raises(TokenizerError, match="missing"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("content", ["{not json", b"\xff\xfe\x00garbage"])
def test_load_bad_json(tmp_path, content):
    _write(tmp_path, content)
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("spec", [{"type": "sentencepiece"}, {}, ["char"], "char"])
def test_load_unknown_type(tmp_path, spec):
    _write(tmp_path, json.dumps(spec))
    with pytest.raises(TokenizerError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("spec", [{"type": "char"}, {"type": "char", "chars": None}, {"type": "char", "chars": 5}])
def test_load_char_without_chars(tmp_path, spec):
    _write(tmp_path, json.dumps(spec))
    with pytest.raises(TokenizerError, match="chars"):
        load_tokenizer(tmp_path)


def test_load_char_with_invalid_chars(tmp_path):
    _write(tmp_path, json.dumps({"type": "char", "chars": ["a", "a"]}))
    with pytest.raises(TokenizerError):
        load_tokenizer(tmp_path)


def test_prompt_ids_start_unconditional_generation_sensibly():
    from gptlab.tokenizers import prompt_ids

    assert prompt_ids(GPT2Tokenizer()) == [50256]
    assert prompt_ids(GPT2Tokenizer(), "Hello, world") == [15496, 11, 995]
    with_newline, without = CharTokenizer("\nab"), CharTokenizer("ab")
    assert prompt_ids(with_newline) == [0] and prompt_ids(with_newline, "ba") == [2, 1]
    assert prompt_ids(without) == [0]
