"""Data: files are read as clean UTF-8 or refused with a sentence naming the file; documents are
joined the way each tokenizer expects; the split is contiguous; batches are windows of the train
split only; evaluation windows are fixed; and the minimum-size arithmetic matches brute force."""

import math

import pytest
import torch

from gptlab.data import (
    CHAR_DOCUMENT_SEPARATOR,
    DEFAULT_CORPUS,
    DataError,
    TextTooShortError,
    TokenDataset,
    clean_text,
    decode_text,
    encode_documents,
    largest_block_size,
    load_texts,
    min_tokens_for,
    prepare_data,
    read_documents,
    read_text_file,
    split_sizes,
    tokenize_corpus,
)
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer

GPT2_EOT = 50256


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------------
# Reading files


@pytest.mark.parametrize("name", ["notes.txt", "notes.md", "NOTES.TXT"])
def test_reads_txt_and_md_as_utf8(tmp_path, name):
    text = "héllo wörld — ünïcode 😀\nsecond line\n"
    assert read_text_file(write(tmp_path, name, text)) == text


def test_a_byte_order_mark_is_accepted_and_dropped(tmp_path):
    path = write(tmp_path, "bom.txt", b"\xef\xbb\xbfhello\n")
    assert read_text_file(path) == "hello\n"


def test_crlf_and_lone_cr_become_newlines(tmp_path):
    path = write(tmp_path, "dos.txt", b"one\r\ntwo\rthree\n\r\nfour")
    assert read_text_file(path) == "one\ntwo\nthree\n\nfour"
    assert clean_text("\ufeffa\r\nb\rc") == "a\nb\nc"


def test_latin1_bytes_are_refused_with_the_file_name(tmp_path):
    path = write(tmp_path, "latin.txt", "café au lait".encode("latin-1"))
    with pytest.raises(DataError, match="latin.txt") as e:
        read_text_file(path)
    message = str(e.value)
    assert "UTF-8" in message and "0xe9" in message and "position 3" in message


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",  # a PNG header
    b"plain text with one \x00 NUL byte",
])
def test_binary_data_is_refused_with_the_file_name(tmp_path, data):
    with pytest.raises(DataError, match=r"image\.txt looks like a binary file"):
        read_text_file(write(tmp_path, "image.txt", data))


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  ", b"\xef\xbb\xbf\n"])
def test_empty_and_whitespace_only_files_are_refused(tmp_path, data):
    with pytest.raises(DataError, match=r"blank\.txt is empty"):
        read_text_file(write(tmp_path, "blank.txt", data))


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.txt"
    with pytest.raises(DataError, match=r"^nowhere\.txt does not exist") as e:
        read_text_file(path)
    assert str(tmp_path) not in str(e.value)  # on a server that folder means nothing to the user


def test_folder_with_a_text_suffix(tmp_path):
    (tmp_path / "corpus.txt").mkdir()
    with pytest.raises(DataError, match=r"corpus\.txt is a folder"):
        read_text_file(tmp_path / "corpus.txt")


def test_plain_folder_is_called_a_folder(tmp_path):
    (tmp_path / "my_notes").mkdir()
    with pytest.raises(DataError, match=r"my_notes is a folder"):
        read_text_file(tmp_path / "my_notes")


@pytest.mark.parametrize("name", ["report.pdf", "book.docx", "README"])
def test_wrong_suffix_is_refused_with_the_file_name(tmp_path, name):
    path = write(tmp_path, name, "perfectly good text")
    with pytest.raises(DataError, match="is not a .txt or .md file") as e:
        read_text_file(path)
    assert name in str(e.value)


def test_data_errors_are_value_errors():
    assert issubclass(DataError, ValueError) and issubclass(TextTooShortError, DataError)


def test_decode_text_names_what_it_was_given():
    with pytest.raises(DataError, match="the pasted text is empty"):
        decode_text(b"  \n", "the pasted text")


def test_the_bundled_corpus_loads_by_default():
    [text] = read_documents()
    assert DEFAULT_CORPUS.name == "shakespeare.txt" and DEFAULT_CORPUS.is_file()
    assert 900_000 < len(text) < 1_200_000
    assert "Gutenberg" not in text and "\r" not in text and not text.startswith("\ufeff")
    assert "HAMLET" in text


def test_read_documents_keeps_the_order_of_the_files(tmp_path):
    a, b = write(tmp_path, "a.txt", "first"), write(tmp_path, "b.md", "second")
    assert read_documents([b, a]) == ["second", "first"]


# --------------------------------------------------------------------------------------------
# Pasted text (load_texts)


def test_pasted_text_is_cleaned_like_a_file():
    assert load_texts(texts=["\ufeffone\r\ntwo\rthree"]) == ["one\ntwo\nthree"]


def test_pasted_text_alone_does_not_pull_in_the_default_corpus():
    assert load_texts(texts=["a", "b"]) == ["a", "b"]


def test_files_come_before_pasted_text(tmp_path):
    path = write(tmp_path, "f.txt", "from a file")
    assert load_texts([path], ["pasted"]) == ["from a file", "pasted"]


def test_empty_pasted_text_is_refused():
    with pytest.raises(DataError, match="the pasted text is empty"):
        load_texts(texts=["   \n  "])


def test_neither_files_nor_text_means_the_bundled_corpus():
    assert load_texts() == read_documents()


# --------------------------------------------------------------------------------------------
# Joining documents


def test_gpt2_documents_are_joined_with_the_real_end_of_text_token():
    tok = GPT2Tokenizer()
    assert tok.eot == GPT2_EOT
    docs = ["Hello there.", "General Kenobi!", "A third one."]
    ids = encode_documents(docs, tok)
    expected = tok.encode(docs[0]) + [GPT2_EOT] + tok.encode(docs[1]) + [GPT2_EOT] + tok.encode(docs[2])
    assert ids == expected
    _, ids2 = tokenize_corpus(docs, "gpt2")
    assert ids2 == expected


def test_a_literal_end_of_text_string_in_user_text_is_plain_text():
    ids = encode_documents(["before <|endoftext|> after"], GPT2Tokenizer())
    assert GPT2_EOT not in ids


def test_a_single_gpt2_document_has_no_end_of_text():
    tok = GPT2Tokenizer()
    assert encode_documents(["just one"], tok) == tok.encode("just one")


def test_char_documents_are_joined_with_a_blank_line():
    tok, ids = tokenize_corpus(["abc", "de"], "char")
    assert isinstance(tok, CharTokenizer) and tok.eot is None
    assert CHAR_DOCUMENT_SEPARATOR == "\n\n"
    assert tok.decode(ids) == "abc\n\nde"
    assert "\n" in tok.chars  # the separator is part of the vocabulary


def test_tokenize_corpus_needs_some_text():
    with pytest.raises(DataError, match="no text to train on"):
        tokenize_corpus([], "char")
    with pytest.raises(DataError, match="no text to train on"):
        tokenize_corpus(["  ", "\n"], "char")


# --------------------------------------------------------------------------------------------
# Split and statistics


def test_default_split_is_contiguous_90_10():
    ids = list(range(1000))
    ds = TokenDataset(ids, block_size=8)
    assert ds.splits["train"].tolist() == ids[:900]
    assert ds.splits["val"].tolist() == ids[900:]


@pytest.mark.parametrize("n, val_fraction, n_train", [(1000, 0.25, 750), (1000, 0.5, 500), (1001, 0.1, 900),
                                                      (200, 0.05, 190), (1000, 0.3, 700)])
def test_split_ratio_is_configurable_and_exact(n, val_fraction, n_train):
    ids = torch.randperm(n)
    ds = TokenDataset(ids, block_size=4, val_fraction=val_fraction)
    assert len(ds.splits["train"]) == n_train and len(ds.splits["val"]) == n - n_train
    assert torch.equal(torch.cat([ds.splits["train"], ds.splits["val"]]), ids)  # a prefix and the suffix
    assert split_sizes(n, val_fraction) == (n_train, n - n_train)


def test_split_sizes_follow_the_decimal_fraction_exactly():
    assert split_sizes(90, 0.3) == (63, 27)
    assert split_sizes(170, 0.3) == (119, 51)


def test_stats_count_what_they_say():
    text = "abcabcabd" * 50  # 450 characters, 4 distinct
    tok, ids = tokenize_corpus([text], "char")
    ds = TokenDataset(ids, block_size=10, val_fraction=0.2)
    stats = ds.stats(characters=len(text), vocab_size=tok.vocab_size)
    assert stats.characters == 450 and stats.tokens == 450
    assert stats.vocab_size == 4 and stats.vocab_used == 4
    assert (stats.train_tokens, stats.val_tokens) == (360, 90)
    assert stats.windows_per_epoch == (360 - 1) // 10
    assert stats.as_dict()["windows_per_epoch"] == 35


def test_stats_vocab_used_counts_only_tokens_present():
    ds = TokenDataset([3, 3, 7, 7, 9] * 40, block_size=4)
    stats = ds.stats(characters=200, vocab_size=50257)
    assert stats.vocab_used == 3 and stats.vocab_size == 50257


def test_prepare_data_stats_for_several_documents():
    docs = ["hello world " * 30, "goodbye moon " * 30]
    data = prepare_data(docs, "char", block_size=16, val_fraction=0.1, sources=["a.txt", "b.txt"])
    s = data.stats
    assert s.characters == sum(len(d) for d in docs)
    assert s.tokens == s.characters + len(CHAR_DOCUMENT_SEPARATOR)  # the blank line between them
    assert s.vocab_used == s.vocab_size == len(set("".join(docs) + "\n"))
    assert s.train_tokens + s.val_tokens == s.tokens
    assert data.description["sources"] == ["a.txt", "b.txt"] and data.description["documents"] == 2


# --------------------------------------------------------------------------------------------
# Training batches


def distinct_ids(n: int, seed: int = 0) -> torch.Tensor:
    """Every id different, so a window's position in the corpus can be read off its first id."""
    return torch.randperm(10 * n, generator=torch.Generator().manual_seed(seed))[:n]


def test_train_batch_shapes_and_shift():
    ids = distinct_ids(500)
    ds = TokenDataset(ids, block_size=12)
    where = {int(t): i for i, t in enumerate(ids)}
    x, y = ds.train_batch(7, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (7, 12) and x.dtype == y.dtype == torch.long
    for row_x, row_y in zip(x, y):
        start = where[int(row_x[0])]
        assert torch.equal(row_x, ids[start:start + 12])
        assert torch.equal(row_y, ids[start + 1:start + 13])


def test_train_batches_never_touch_validation_tokens():
    n_train = 60
    ids = torch.cat([torch.arange(n_train), 1000 + torch.arange(40)])  # val ids are all >= 1000
    ds = TokenDataset(ids, block_size=8, val_fraction=0.4)
    assert len(ds.splits["train"]) == n_train
    gen = torch.Generator().manual_seed(0)
    seen = torch.zeros(n_train, dtype=torch.bool)
    for _ in range(200):
        x, y = ds.train_batch(16, gen)
        assert x.max() < n_train and y.max() < n_train
        seen[x.flatten()] = True
        seen[y.flatten()] = True
    assert seen.all()  # the whole train split is used, up to its last token


def test_train_batch_is_reproducible_with_a_seeded_generator():
    ds = TokenDataset(distinct_ids(400), block_size=8)
    a = ds.train_batch(5, torch.Generator().manual_seed(123))
    b = ds.train_batch(5, torch.Generator().manual_seed(123))
    c = ds.train_batch(5, torch.Generator().manual_seed(124))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


# --------------------------------------------------------------------------------------------
# Evaluation windows


def test_eval_batches_are_deterministic():
    ds = TokenDataset(distinct_ids(600), block_size=8)
    first = [(x.clone(), y.clone()) for x, y in ds.eval_batches("val", 3, count=7)]
    second = list(ds.eval_batches("val", 3, count=7))
    assert len(first) == len(second) == 3
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("stride", [1, 3, 8, 50])
def test_sliding_windows_with_a_stride(stride):
    ids = torch.arange(1000)  # 900 train, 100 val: every id is its own position
    ds = TokenDataset(ids, block_size=8)
    val = ds.splits["val"]
    starts = list(range(0, len(val) - 8, stride))  # the last window ends on the last val token
    assert ds.window_starts("val", stride=stride).tolist() == starts
    xs, ys = zip(*ds.eval_batches("val", 4, stride=stride))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (len(starts), 8) and all(b.shape[0] <= 4 for b in xs)
    for row, s in enumerate(starts):
        assert torch.equal(x[row], val[s:s + 8]) and torch.equal(y[row], val[s + 1:s + 9])


def test_default_stride_is_the_block_size_and_tiles_the_split():
    ds = TokenDataset(torch.arange(1000), block_size=8)
    train = ds.splits["train"]
    x = torch.cat([x for x, _ in ds.eval_batches("train", 16)])
    n_windows = (len(train) - 1) // 8
    assert x.shape == (n_windows, 8)
    assert torch.equal(x.flatten(), train[:n_windows * 8])  # non-overlapping, no gaps


def test_stride_below_one_is_refused():
    ds = TokenDataset(torch.arange(200), block_size=4)
    with pytest.raises(DataError, match="stride must be at least 1"):
        list(ds.eval_batches("val", 2, stride=-1))


@pytest.mark.parametrize("count", [2, 5, 13, 40])
def test_count_spreads_windows_evenly_including_the_last(count):
    ds = TokenDataset(torch.arange(1000), block_size=8)
    last = len(ds.splits["train"]) - 8 - 1
    starts = ds.window_starts("train", count=count)
    assert len(starts) == count
    assert starts[0] == 0 and starts[-1] == last
    gaps = starts.diff()
    assert gaps.min() >= 0 and gaps.max() - gaps.min() <= 1  # evenly spread up to rounding
    x, y = zip(*ds.eval_batches("train", 4, count=count))
    assert sum(b.shape[0] for b in x) == count
    assert torch.equal(torch.cat(x)[:, 0], starts) and torch.equal(torch.cat(y)[:, -1], starts + 8)


def test_count_of_one_is_the_first_window():
    ds = TokenDataset(torch.arange(300), block_size=8)
    assert ds.window_starts("val", count=1).tolist() == [0]


# --------------------------------------------------------------------------------------------
# Too little text


def test_text_too_short_says_the_minimum_and_the_largest_context():
    n, block = 100, 32
    with pytest.raises(TextTooShortError) as e:
        TokenDataset(torch.arange(n), block_size=block)
    err = e.value
    assert err.min_tokens == min_tokens_for(block) and err.largest_block_size == largest_block_size(n) == 9
    message = str(err)
    assert "100 tokens" in message and f"at least {err.min_tokens}" in message
    assert "context length of 32" in message and "at most 9" in message
    TokenDataset(torch.arange(n), block_size=err.largest_block_size)  # the advice works
    TokenDataset(torch.arange(err.min_tokens), block_size=block)


def test_far_too_short_text_only_asks_for_more_text():
    with pytest.raises(TextTooShortError) as e:
        TokenDataset([1, 2, 3], block_size=4)
    assert e.value.largest_block_size == 0
    assert "add more text" in str(e.value) and "at most" not in str(e.value)


def brute_largest(n: int, f: float) -> int:
    """The largest block whose (input, target) window of block + 1 tokens fits in both splits."""
    n_train, n_val = split_sizes(n, f)
    best = 0
    for b in range(1, n + 1):
        if n_train >= b + 1 and n_val >= b + 1:
            best = b
    return best


def brute_min_tokens(block: int, f: float) -> int:
    n = 1
    while brute_largest(n, f) < block:
        n += 1
    return n


@pytest.mark.parametrize("f", [0.1, 0.05, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.9])
def test_minimum_size_arithmetic_matches_brute_force(f):
    for block in (1, 2, 3, 5, 8, 13, 32):
        need = min_tokens_for(block, f)
        assert need == brute_min_tokens(block, f), (block, f)
        assert largest_block_size(need, f) >= block
        assert largest_block_size(need - 1, f) < block
        TokenDataset(torch.arange(need), block, f)  # really enough
        with pytest.raises(TextTooShortError):
            TokenDataset(torch.arange(need - 1), block, f)
    for n in range(0, 400, 7):
        assert largest_block_size(n, f) == brute_largest(n, f), (n, f)


def test_minimum_size_for_a_long_context():
    for f in (0.1, 0.01):
        for block in (256, 1024):
            need = min_tokens_for(block, f)
            assert largest_block_size(need, f) >= block > largest_block_size(need - 1, f)
            assert block / f < need <= math.ceil((block + 1) / f)  # the val split is the binding one


def test_minimum_size_for_a_huge_context_is_exact_and_instant():
    # A context length of 1e22 typed into the Data tab once kept the step-by-step search (and the GIL)
    # busy forever; the closed form answers at once, exactly.
    import signal

    def too_slow(*_):
        raise TimeoutError("min_tokens_for searched instead of solving")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(5)
    try:
        for block in (10**22, 10**100, 2**63 + 1):
            for f in (0.1, 0.01, 1 / 3, 0.9):
                need = min_tokens_for(block, f)
                assert largest_block_size(need, f) >= block > largest_block_size(need - 1, f), (block, f)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("val_fraction", [0, 1, -0.5, 1.5, float("nan"), float("inf")])
def test_split_arithmetic_refuses_a_fraction_outside_0_and_1(val_fraction):
    for call in (lambda: split_sizes(100, val_fraction), lambda: min_tokens_for(8, val_fraction)):
        with pytest.raises(DataError, match=r"val_fraction must be between 0 and 1 \(e\.g\. 0\.1\)"):
            call()


# --------------------------------------------------------------------------------------------
# Encodings, size and names in messages


TEXT_16 = "Hello, world: a line of text\nand another one, with café.\n" * 3


@pytest.mark.parametrize("data, kind", [
    (TEXT_16.encode("utf-16"), "UTF-16"),  # with the byte-order mark Notepad writes
    (b"\xfe\xff" + TEXT_16.encode("utf-16-be"), "UTF-16"),
    (TEXT_16.encode("utf-16-le"), "UTF-16"),  # no mark: NULs in every other byte
    (TEXT_16.encode("utf-16-be"), "UTF-16"),
    (TEXT_16.encode("utf-32"), "UTF-32"),
    (TEXT_16.encode("utf-32-le"), "UTF-32"),
    (TEXT_16.encode("utf-32-be"), "UTF-32"),
    ("hi!\n".encode("utf-16-le"), "UTF-16"),  # four characters
    ("x".encode("utf-16"), "UTF-16"),  # one character, with the mark
], ids=["16-bom", "16be-bom", "16le", "16be", "32-bom", "32le", "32be", "16le-short", "16-one-char"])
def test_utf16_and_utf32_are_named_with_the_fix_not_called_binary(tmp_path, data, kind):
    with pytest.raises(DataError) as e:
        read_text_file(write(tmp_path, "notes.txt", data))
    assert str(e.value).startswith(f"notes.txt looks like {kind} text; save it as UTF-8 and try again"), str(e.value)


@pytest.mark.parametrize("data", [b"ab\x00cd", b"a\x00", b"\x00\x00\x00\x00", b"x\x00y\x00z\x00\xff\xff"])
def test_a_few_nul_bytes_are_no_evidence_of_utf16(tmp_path, data):
    with pytest.raises(DataError, match=r"^data\.txt looks like a binary file \(it contains NUL bytes\)"):
        read_text_file(write(tmp_path, "data.txt", data))


@pytest.mark.parametrize("data, kind", [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF"),
    (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "a zip archive"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
    (b"\x1f\x8b\x08\x00", "gzip-compressed"),
])
def test_common_binary_files_are_named_by_what_they_are(tmp_path, data, kind):
    with pytest.raises(DataError, match=rf"^paper\.txt looks like a binary file \({kind}"):
        read_text_file(write(tmp_path, "paper.txt", data))


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(250 * 2**20)  # sparse: 250 MB to stat(), nothing on the disk

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was opened before its size was checked")

    monkeypatch.setattr(type(big), "open", no_reading)
    monkeypatch.setattr(type(big), "read_bytes", no_reading)
    with pytest.raises(DataError) as e:
        read_documents([big])
    assert str(e.value) == "big.txt is 250 MB; the limit is 200 MB. Give a smaller file, or split it into several."


def test_the_size_cap_is_a_parameter(tmp_path):
    path = write(tmp_path, "notes.txt", "x" * 3000)
    with pytest.raises(DataError, match=r"^notes\.txt is 2\.9 KB; the limit is 2 KB\. Give a smaller file"):
        read_documents([path], max_bytes=2048)
    assert read_documents([path], max_bytes=3000) == ["x" * 3000]


@pytest.mark.parametrize("case", ["missing", "folder", "big"])
def test_no_message_names_the_folder_a_file_is_in(tmp_path, case):
    folder = tmp_path / "uploads" / "8f3a0c"
    folder.mkdir(parents=True)
    path = folder / "corpus.txt"
    if case == "folder":
        path.mkdir()
    elif case == "big":
        path.write_bytes(b"x" * 5000)
    with pytest.raises(DataError) as e:
        read_documents([path], max_bytes=4096)
    message = str(e.value)
    assert message.startswith("corpus.") and "uploads" not in message and "8f3a0c" not in message, message
