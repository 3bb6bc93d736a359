"""Bad input a user can give, through the library (data.py, config.py) and through the CLI: each
case ends in one sentence that names what is wrong and says what to do, never a traceback, a hang,
a blank message or a silently changed value. Each case was a finding against main, or is one of
the cases the robustness brief lists (files, settings) and pins the message a user now sees."""

import contextlib
import io
import math
import time
import zipfile
from dataclasses import fields

import pytest

from gptlab.cli import EXIT_USAGE, main
from gptlab.config import ConfigError, ModelConfig, SampleConfig, TrainConfig
from gptlab.data import DataError, TextTooShortError, TokenDataset, read_documents, tokenize_corpus

NUMBERS = ("int", "int | None", "float", "float | None")
MODEL_AND_TRAIN = [(cls, f) for cls in (ModelConfig, TrainConfig) for f in fields(cls) if f.type in NUMBERS]
SIZE_NAMES = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "batch_size", "grad_accum_steps", "max_steps",
              "eval_interval", "eval_batches", "sample_interval", "sample_tokens", "snapshot_tokens", "warmup_steps",
              "checkpoint_interval", "log_interval", "patience")
SIZES = [(cls, f) for cls, f in MODEL_AND_TRAIN if f.name in SIZE_NAMES]
# Zero is a valid value of these (an "off", a rate, or a count that may be none).
ZERO_OK = {"dropout", "weight_decay", "beta1", "beta2", "grad_clip", "min_lr", "warmup_steps", "sample_interval",
           "checkpoint_interval", "seed", "snapshot_tokens"}
TEXT = "the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n" * 30


def cli(argv) -> tuple[int, str]:
    """main(argv) in-process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors
            code = e.code
    return code, err.getvalue()


def cli_error(argv) -> str:
    """The one `error: ...` line a bad command prints, without its prefix."""
    code, err = cli(argv)
    assert code == EXIT_USAGE and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0].removeprefix("error: ")


def _id(param):
    return f"{param[0].__name__}.{param[1].name}" if isinstance(param, tuple) else repr(param)


def _flag(f) -> str:
    return "--" + f.name.replace("_", "-")


# --------------------------------------------------------------------------------------------
# Files


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("notes.txt", TEXT)
    return buffer.getvalue()


# (content, what the message must say): the file's name comes first in each.
FILES = {
    "empty": (b"", "data.txt is empty (or only whitespace); give it some text to learn from."),
    "whitespace only": (b"  \n\t \r\n ", "data.txt is empty (or only whitespace); give it some text to learn from."),
    "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
            "data.txt looks like a binary file (a PNG image, not text); give a plain-text .txt or .md file."),
    "zip": (_zip(), "data.txt looks like a binary file (a zip archive (a .zip, .docx or .epub), not text); give a "
                    "plain-text .txt or .md file."),
    "nul bytes": (b"some text\x00\x07\x00\x00 and more",
                  "data.txt looks like a binary file (it contains NUL bytes); give a plain-text .txt or .md file."),
    "not utf-8": ("caf\u00e9 cr\u00e8me".encode("latin-1"),
                  "data.txt is not valid UTF-8 text (byte 0xe9 at position 3). Save it as UTF-8 and try again."),
    "utf-16 with a bom": (TEXT[:500].encode("utf-16"), "data.txt looks like UTF-16 text; save it as UTF-8 and try again"),
    "utf-16 without a bom": (TEXT[:500].encode("utf-16-le"), "data.txt looks like UTF-16 text; save it as UTF-8"),
    "one character": (b"a", "The text is too short for a context length of 32: it has 1 token, and training plus "
                            "validation need at least 321. To fix it, add more text."),
    "shorter than a context": ("abcdefghij" * 10, "The text is too short for a context length of 32: it has 100 "
                               "tokens, and training plus validation need at least 321. To fix it, use a context "
                               "length (block_size) of at most 9, or add more text."),
    "over the size cap": (b"x" * 5000, "data.txt is 4.9 KB; the limit is 4 KB. Give a smaller file, or split it"),
}


def library_error(path, max_bytes=4096) -> str:
    with pytest.raises(DataError) as e:
        documents = read_documents([path], max_bytes=max_bytes)
        _, ids = tokenize_corpus(documents, "char")
        TokenDataset(ids, block_size=32)
    return str(e.value)


@pytest.mark.parametrize("case", list(FILES))
def test_a_bad_file_through_the_library_says_what_to_do(tmp_path, case):
    data, expected = FILES[case]
    path = tmp_path / "data.txt"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    message = library_error(path)
    assert message.startswith(expected), message
    assert str(tmp_path) not in message


@pytest.mark.parametrize("case", [c for c in FILES if c != "over the size cap"])  # the CLI's cap is 200 MB
def test_a_bad_file_through_the_cli_is_one_line(tmp_path, case):
    data, expected = FILES[case]
    path = tmp_path / "data.txt"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    message = cli_error(["train", "--data", path, "--preset", "tiny", "--out", tmp_path / "run"])
    assert message.startswith(expected), message
    assert not (tmp_path / "run").exists()


def test_a_file_over_the_cli_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.txt"
    with path.open("wb") as f:
        f.truncate(300 * 2**20)  # sparse, so nothing is written; read whole it would be 300 MB of NULs
    message = cli_error(["train", "--data", path, "--preset", "tiny", "--out", tmp_path / "run"])
    assert message == "huge.txt is 300 MB; the limit is 200 MB. Give a smaller file, or split it into several."


@pytest.mark.parametrize("tokenizer", ["char", "gpt2"])
def test_one_very_long_line_works_and_is_not_slow(tmp_path, tokenizer):
    path = tmp_path / "one-line.txt"
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    path.write_text((words * (2 * 2**20 // len(words) + 1))[: 2 * 2**20], encoding="utf-8")  # 2 MB, no newline
    start = time.perf_counter()
    [text] = read_documents([path])
    _, ids = tokenize_corpus([text], tokenizer)
    dataset = TokenDataset(ids, block_size=256)
    assert "\n" not in text and len(text) == 2 * 2**20 and dataset.stats(len(text), 100).tokens == len(ids)
    assert time.perf_counter() - start < 20


# --------------------------------------------------------------------------------------------
# Settings


def test_a_width_that_the_heads_do_not_divide_suggests_one_that_works(tmp_path):
    expected = "n_embd (100) must be divisible by n_head (6); try n_embd=102."
    with pytest.raises(ConfigError) as e:
        ModelConfig(n_embd=100, n_head=6)
    assert str(e.value) == expected
    assert cli_error(["train", "--preset", "tiny", "--n-embd", 100, "--n-head", 6, "--out", tmp_path / "r"]) == expected


def test_a_context_larger_than_the_data_names_the_largest_that_fits(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 10, encoding="utf-8")
    message = cli_error(["train", "--data", path, "--preset", "tiny", "--block-size", 1000, "--out", tmp_path / "r"])
    assert message == ("The text is too short for a context length of 1,000: it has 100 tokens, and training plus "
                       "validation need at least 10,001. To fix it, use a context length (block_size) of at most "
                       "9, or add more text.")


def _expected(name: str, value, how: str) -> str | None:
    """The start of the message a field given `value` gets, or None where the value is valid."""
    kind = next(f.type for cls, f in MODEL_AND_TRAIN if f.name == name)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a whole number, got " if kind.startswith("int") else f"{name} must be a finite number"
    if value == 0 and (name in ZERO_OK or (how == "form" and name in ("patience", "max_time"))):
        return None  # 0 is a valid value, or a form's "off"
    return "beta1 and beta2 must be" if name.startswith("beta") else f"{name} must be "


def _attempt(cls, name, value, how, tmp_path):
    """The message the value gets (None where it is accepted), through one way in."""
    if how == "cli":
        # Valid settings get as far as the data, which is missing, so no test ever trains.
        message = cli_error(["train", "--preset", "tiny", "--out", tmp_path / "run", "--data", tmp_path / "none.txt",
                             f"--{name.replace('_', '-')}={value}"])
        return None if message.startswith("none.txt does not exist") else message
    make = {"dict": cls.from_dict, "form": cls.from_form}[how]
    try:
        make({name: value})
    except ConfigError as e:
        return str(e)
    return None


def _ways_in(params):
    """(config, field, way in) for each field; the vocabulary comes from the tokenizer, so it has no flag."""
    return [(cls, f, how) for cls, f in params for how in ("dict", "form", "cli")
            if not (how == "cli" and f.name == "vocab_size")]


def _way_id(param):
    return f"{param[0].__name__}.{param[1].name}-{param[2]}"


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, -math.inf], ids=repr)
@pytest.mark.parametrize("param", _ways_in(MODEL_AND_TRAIN), ids=_way_id)
def test_zero_negative_nan_and_infinite_numbers_in_every_field(param, value, tmp_path):
    cls, f, how = param
    message = _attempt(cls, f.name, value, how, tmp_path)
    expected = _expected(f.name, value, how)
    if expected is None:
        assert message is None, message
    else:
        assert message is not None and message.startswith(expected), (message, expected)
        assert message.endswith(".") and "got " in message, message


@pytest.mark.parametrize("param", _ways_in(SIZES), ids=_way_id)
def test_huge_values_in_every_size_field_name_the_range(param, tmp_path):
    cls, f, how = param
    low, high = f.metadata.get("bounds") or (None, None)
    start = time.perf_counter()
    message = _attempt(cls, f.name, 1e22, how, tmp_path)
    assert message == f"{f.name} must be between {low:,} and {high:,}, got 1e+22."
    assert time.perf_counter() - start < 5  # refused, not attempted


@pytest.mark.parametrize("block_size, expected", [
    (1e22, "block_size must be between 1 and 65,536, got 1e+22."),
    (1e300, "block_size must be between 1 and 65,536, got 1e+300."),
    (math.inf, "block_size must be a whole number, got inf."),
])
def test_the_data_tabs_preview_answers_a_huge_context_at_once(tmp_path, block_size, expected):
    # /preview with a block_size of 1e22 never returned: the data code searched for its minimum
    # size one token at a time, holding the GIL. A thread, so a regression fails instead of hanging.
    import threading

    from gptlab.service import SOURCES, Lab

    answer = []
    worker = threading.Thread(target=lambda: answer.append(Lab(tmp_path / "runs").preview(
        source=SOURCES[2], files=None, pasted=TEXT, tokenizer="char", block_size=block_size)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert answer and answer[0].message == f"**Problem**: {expected}"


def test_a_long_context_string_on_the_command_line_is_refused_not_hung(tmp_path):
    # argparse's int() takes any number of digits; this one hung the data code's search.
    message = cli_error(["train", "--preset", "tiny", "--block-size", "1" + "0" * 22, "--out", tmp_path / "r"])
    assert message == "block_size must be between 1 and 65,536, got 1e+22."


@pytest.mark.parametrize("flag, value, expected", [
    ("--learning-rate", "inf", "learning_rate must be a finite number, got inf."),
    ("--learning-rate", "nan", "learning_rate must be a finite number, got nan."),
    ("--patience", "1.5", "patience must be a whole number, got 1.5."),
    ("--max-steps", "2.5", "max_steps must be a whole number, got 2.5."),
    ("--seed", "1e30", "seed must be between 0 and 9,223,372,036,854,775,807, got 1e+30."),
    ("--n-layer", "many", "n_layer must be a whole number, got 'many'."),
])
def test_the_cli_passes_numbers_as_typed_and_the_config_names_the_field(tmp_path, flag, value, expected):
    assert cli_error(["train", "--preset", "tiny", flag, value, "--out", tmp_path / "run"]) == expected


def test_a_seed_torch_cannot_take_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"^seed must be between 0 and 9,223,372,036,854,775,807, got 1e\+30\.$"):
        TrainConfig.from_form({"seed": 1e30})


def test_warmup_longer_than_the_run_is_allowed_and_says_so_in_the_help(tmp_path):
    config = TrainConfig.preset("tiny", max_steps=5)  # the preset's warmup is 10
    assert config.warmup_steps > config.max_steps and config.lr_at(4) < config.learning_rate
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "more than max_steps is allowed" in " ".join(out.getvalue().split())


@pytest.mark.parametrize("values, expected", [
    (dict(strategy="beam", num_beams=1e22), "num_beams must be between 1 and 64, got 1e+22."),
    (dict(strategy="sample", top_k=math.nan), "top_k must be a whole number, got nan."),
    (dict(no_repeat_ngram_size=math.inf), "no_repeat_ngram_size must be a whole number, got inf."),
    (dict(seed=math.nan), "seed must be a whole number, got nan."),
    (dict(seed=1e30), "seed must be between 0 and 9,223,372,036,854,775,807, got 1e+30."),
    (dict(temperature=math.inf), "temperature must be a finite number, got inf."),
    (dict(max_new_tokens=1e22), "max_new_tokens must be between 1 and 100,000, got 1e+22."),
])
def test_bad_decoding_settings_name_the_field(values, expected):
    for make in (SampleConfig.from_form, SampleConfig.from_dict):
        with pytest.raises(ConfigError) as e:
            make(values)
        assert str(e.value) == expected
