"""Fuzzing with hypothesis: the tokenizers give back exactly what they were given, and the configs,
given anything a form or an API caller can send, either build a valid config or raise a ConfigError
that names a field: never another exception type, never a hang.

Kept small (200 examples a property, no deadline) so the file runs in seconds on two shared cores.
"""

import math
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlab.config import ConfigError, ModelConfig, SampleConfig, TrainConfig, to_dict
from gptlab.data import DataError, decode_text, largest_block_size, min_tokens_for
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What a form box, a JSON body or an API client can put in any one field.
ANY_VALUE = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(),
                      st.booleans())


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer()


# --------------------------------------------------------------------------------------------
# Tokenizers


@FAST
@given(st.text(min_size=1))
def test_the_char_tokenizer_round_trips_any_text_over_its_own_vocabulary(text):
    tokenizer = CharTokenizer.from_text(text)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and len(ids) == len(text)
    assert tokenizer.decode_bytes(ids) == text.encode("utf-8")
    assert all(0 <= i < tokenizer.vocab_size for i in ids)


@FAST
@given(st.text())
def test_gpt2_round_trips_any_text(gpt2, text):
    ids = gpt2.encode(text)
    assert gpt2.decode(ids) == text
    assert gpt2.decode_bytes(ids) == text.encode("utf-8")
    # Token by token the bytes add up, even where a token ends inside a character (what streaming relies on).
    assert b"".join(gpt2.decode_bytes([i]) for i in ids) == text.encode("utf-8")


@FAST
@given(st.binary())
def test_gpt2_round_trips_any_bytes(gpt2, data):
    # Byte-level BPE has a token for every byte, so any bytes at all (invalid UTF-8 included) are ids.
    ids = [gpt2.encoding.encode_single_token(bytes([b])) for b in data]
    assert gpt2.decode_bytes(ids) == data
    assert gpt2.decode(ids) == data.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------
# Configs from forms


def _names_a_field(cls, message: str) -> bool:
    return any(f.name in message for f in fields(cls))


def _form(cls):
    """A few of the config's fields, each with any value (the rest keep their defaults, so one bad
    value is not hidden behind another)."""
    return st.dictionaries(st.sampled_from([f.name for f in fields(cls)]), ANY_VALUE, max_size=3)


def _build_or_config_error(cls, values):
    try:
        config = cls.from_form(values)
    except ConfigError as e:
        message = str(e)
        assert message and _names_a_field(cls, message), message
        return None
    # Anything accepted is sane: each number of its declared kind, finite, and within what torch and
    # the data code can take (an inf learning rate or a 1e22 context once got through), and it
    # survives a round trip like a config built directly.
    for f in fields(cls):
        value = getattr(config, f.name)
        if f.type in ("int", "int | None") and value is not None:
            assert type(value) is int and 0 <= value < 2**63, (f.name, value)
        elif f.type in ("float", "float | None") and value is not None:
            assert type(value) is float and math.isfinite(value), (f.name, value)
    assert type(config).from_dict(to_dict(config)) == config
    return config


@FAST
@given(_form(ModelConfig))
def test_model_config_from_any_form_builds_or_names_a_field(values):
    config = _build_or_config_error(ModelConfig, values)
    if config is not None:
        assert config.num_params() > 0 and config.training_memory_bytes(1) > 0


@FAST
@given(_form(TrainConfig))
def test_train_config_from_any_form_builds_or_names_a_field(values):
    config = _build_or_config_error(TrainConfig, values)
    if config is not None:
        assert 0 < config.lr_at(0) <= config.learning_rate


@FAST
@given(_form(SampleConfig))
def test_sample_config_from_any_form_builds_or_names_a_field(values):
    _build_or_config_error(SampleConfig, values)


# --------------------------------------------------------------------------------------------
# Data


@FAST
@given(st.binary(max_size=512))
def test_any_bytes_decode_to_text_or_a_data_error_that_names_the_file(data):
    try:
        text = decode_text(data, "notes.txt")
    except DataError as e:
        assert str(e).startswith("notes.txt "), str(e)
    else:
        assert text.strip() and "\r" not in text


@FAST
@given(st.integers(min_value=1, max_value=10**30), st.sampled_from([0.5, 0.1, 0.05, 0.3, 1 / 3, 0.9, 0.001]))
def test_the_minimum_size_is_the_least_that_fits_for_any_context(block, val_fraction):
    need = min_tokens_for(block, val_fraction)
    assert largest_block_size(need, val_fraction) >= block > largest_block_size(need - 1, val_fraction)
