"""Text in, token windows out: reading and checking files, the train/validation split, batches.

Training batches are random windows, as nanoGPT samples them; evaluation walks fixed windows, so
two evaluations of the same weights give the same number.
"""

from __future__ import annotations

import math
from fractions import Fraction
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from gptlab.insight.baselines import Baselines, baselines
from gptlab.tokenizers import ASSETS, Tokenizer, build_tokenizer

DEFAULT_CORPUS = ASSETS / "shakespeare.txt"
TEXT_SUFFIXES = (".txt", ".md")
CHAR_DOCUMENT_SEPARATOR = "\n\n"


class DataError(ValueError):
    pass


class TextTooShortError(DataError):
    def __init__(self, n_tokens: int, block_size: int, min_tokens: int, largest_block_size: int):
        self.n_tokens, self.block_size = n_tokens, block_size
        self.min_tokens, self.largest_block_size = min_tokens, largest_block_size
        fix = (f"use a context length (block_size) of at most {largest_block_size:,}, or add more text"
               if largest_block_size >= 1 else "add more text")
        super().__init__(f"The text is too short for a context length of {block_size:,}: it has {n_tokens:,} "
                         f"token{'' if n_tokens == 1 else 's'}, and training plus validation need at least "
                         f"{min_tokens:,}. To fix it, {fix}.")


# --------------------------------------------------------------------------------------------
# Reading text


def clean_text(text: str) -> str:
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


# Files people upload by mistake, recognised by their first bytes, so the message can say what it is.
MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
         (b"%PDF", "a PDF"), (b"PK\x03\x04", "a zip archive (a .zip, .docx or .epub)"),
         (b"\x1f\x8b", "gzip-compressed"), (b"\x7fELF", "a program"))
# Longest first: UTF-32 LE's mark starts with UTF-16 LE's.
BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
        (b"\xfe\xff", "UTF-16"))
SNIFF_BYTES = 65536
# 200 MB: a bookshelf of plain text. Tokenised it takes a few GB of memory, so a shared server
# passes a lower cap (the app checks its upload limit first).
DEFAULT_MAX_BYTES = 200 * 2**20


def _size(n_bytes: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if n_bytes >= scale:
            return f"{round(n_bytes / scale, 1):g} {unit}"
    return f"{n_bytes} bytes"


def _wide_encoding(sample: bytes) -> str | None:
    """The encoding's name (UTF-16 or UTF-32) where NULs sit where those encodings leave them for
    Latin text (the high bytes of each code unit) and almost nowhere else; None otherwise. Windows'
    Notepad and PowerShell write UTF-16, sometimes without a byte-order mark."""
    for width, codecs in ((2, ("utf-16-le", "utf-16-be")), (4, ("utf-32-le", "utf-32-be"))):
        units = len(sample) // width
        if units < 4:  # "ab\x00c" is no evidence of anything
            continue
        nuls = [sample[i:units * width:width].count(0) for i in range(width)]
        # Little-endian text has its low byte first (no NUL there), big-endian last.
        for codec, low in zip(codecs, (0, width - 1)):
            high = [nuls[i] for i in range(width) if i != low]
            if nuls[low] < 0.05 * units and min(high) > max(0.3 * units, 3):
                try:
                    sample[:units * width].decode(codec)
                except UnicodeDecodeError:
                    continue
                return codec[:6].upper()
    return None


def decode_text(raw: bytes, name: str = "the text") -> str:
    """Bytes to clean text, or a DataError that says what is wrong with them. A UTF-8 byte-order
    mark is dropped; UTF-16 and UTF-32 are named rather than called binary, since saving as UTF-8
    is the fix for them."""
    for magic, kind in MAGIC:
        if raw.startswith(magic):
            raise DataError(f"{name} looks like a binary file ({kind}, not text); give a plain-text .txt or .md file.")
    sample = raw[:SNIFF_BYTES]
    wide = next((kind for bom, kind in BOMS if raw.startswith(bom)), None)
    if wide is None and b"\x00" in sample:
        wide = _wide_encoding(sample)
        if wide is None:
            raise DataError(f"{name} looks like a binary file (it contains NUL bytes); give a plain-text .txt or .md "
                            "file.")
    if wide is not None:
        raise DataError(f"{name} looks like {wide} text; save it as UTF-8 and try again (in most editors: "
                        "Save As, then choose the UTF-8 encoding).")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not valid UTF-8 text (byte 0x{raw[e.start]:02x} at position {e.start}). "
                        "Save it as UTF-8 and try again.") from None
    text = clean_text(text)
    if not text.strip():
        raise DataError(f"{name} is empty (or only whitespace); give it some text to learn from.")
    return text


def read_text_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """A .txt or .md file as clean text. Messages name the file, never its folder: on a server the
    folder is an upload directory the user has never seen. A file over `max_bytes` is refused
    before it is read, so it never sits in memory."""
    path = Path(path)
    name = path.name or str(path)
    if path.is_dir():
        raise DataError(f"{name} is a folder; give the text files inside it.")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(f"{name} is not a .txt or .md file; give plain-text files with one of those endings.")
    too_big = f"the limit is {_size(max_bytes)}. Give a smaller file, or split it into several."
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DataError(f"{name} is {_size(size)}; {too_big}")
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)  # a file that grew since stat(), or one stat() cannot size
    except FileNotFoundError:
        raise DataError(f"{name} does not exist; check its name and where it is.") from None
    except IsADirectoryError:
        raise DataError(f"{name} is a folder; give the text files inside it.") from None
    except OSError as e:
        raise DataError(f"{name} cannot be read ({e.strerror}); check that it is a file you may read.") from None
    if len(raw) > max_bytes:
        raise DataError(f"{name} is over {_size(max_bytes)}; {too_big}")
    return decode_text(raw, name)


def read_documents(paths: Sequence[str | os.PathLike] | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """The documents in the given files, or the bundled Shakespeare when no file is given. Each file
    may hold at most `max_bytes` (default 200 MB); a larger one is refused before it is read."""
    if not paths:
        return [read_text_file(DEFAULT_CORPUS)]
    return [read_text_file(p, max_bytes) for p in paths]


def load_texts(paths: Sequence[str | os.PathLike] | None = None, texts: Sequence[str] | None = None) -> list[str]:
    """Documents from files, from pasted text, or (given neither) the bundled corpus."""
    documents = [decode_text(t.encode("utf-8"), "the pasted text") for t in texts or ()]
    if paths or not documents:
        documents = read_documents(paths) + documents
    return documents


def encode_documents(documents: Sequence[str], tokenizer: Tokenizer) -> list[int]:
    """Token ids of all documents, joined by end-of-text (BPE) or a blank line (char models)."""
    if tokenizer.eot is None:
        return tokenizer.encode(CHAR_DOCUMENT_SEPARATOR.join(documents))
    ids: list[int] = []
    for i, doc in enumerate(documents):
        if i:
            ids.append(tokenizer.eot)
        ids.extend(tokenizer.encode(doc))
    return ids


def tokenize_corpus(documents: Sequence[str], tokenizer_kind: str) -> tuple[Tokenizer, list[int]]:
    if not documents or not any(d.strip() for d in documents):
        raise DataError("There is no text to train on; give at least one non-empty file or some pasted text.")
    tokenizer = build_tokenizer(tokenizer_kind, CHAR_DOCUMENT_SEPARATOR.join(documents))
    return tokenizer, encode_documents(documents, tokenizer)


# --------------------------------------------------------------------------------------------
# Split, windows and batches


def _exact(val_fraction: float) -> Fraction:
    try:
        f = Fraction(str(val_fraction))  # exact: 90 * 0.7 is 63, not 62.99
    except (ValueError, TypeError):  # nan, inf, text
        f = None
    if f is None or not 0 < f < 1:
        raise DataError(f"val_fraction must be between 0 and 1 (e.g. 0.1), got {val_fraction}.")
    return f


def split_sizes(n_tokens: int, val_fraction: float) -> tuple[int, int]:
    n_train = math.floor(n_tokens * (1 - _exact(val_fraction)))
    return n_train, n_tokens - n_train


def largest_block_size(n_tokens: int, val_fraction: float = 0.1) -> int:
    """The longest context that still leaves one whole (input, target) window in each split."""
    return max(0, min(split_sizes(n_tokens, val_fraction)) - 1)


def min_tokens_for(block_size: int, val_fraction: float = 0.1) -> int:
    """The fewest tokens whose split holds a window of block_size + 1 tokens on each side.

    Solved exactly rather than searched: a search steps one token at a time, and a context length
    of 1e22 from a form kept it (and the GIL) busy forever. With q = 1 - f, the train split
    floor(n q) reaches b + 1 from n = ceil((b + 1) / q) on, and the validation split
    n - floor(n q) = ceil(n f) does from n = floor(b / f) + 1 on."""
    f, b = _exact(val_fraction), max(0, int(block_size))
    return max(math.ceil((b + 1) / (1 - f)), math.floor(b / f) + 1)


@dataclass(frozen=True)
class DataStats:
    characters: int
    tokens: int
    vocab_size: int
    vocab_used: int
    train_tokens: int
    val_tokens: int
    windows_per_epoch: int  # non-overlapping training windows of block_size tokens

    def as_dict(self) -> dict:
        return asdict(self)


class TokenDataset:
    def __init__(self, ids: Sequence[int] | torch.Tensor, block_size: int, val_fraction: float = 0.1):
        ids = torch.as_tensor(ids, dtype=torch.long)
        n = ids.numel()
        if largest_block_size(n, val_fraction) < block_size:
            raise TextTooShortError(n, block_size, min_tokens_for(block_size, val_fraction),
                                    largest_block_size(n, val_fraction))
        n_train, _ = split_sizes(n, val_fraction)
        self.block_size = block_size
        self.ids = ids
        self.splits = {"train": ids[:n_train], "val": ids[n_train:]}
        self._offsets = torch.arange(block_size + 1)

    def _windows(self, data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = data[starts[:, None] + self._offsets]  # (B, T+1), gathered without a Python loop
        return w[:, :-1], w[:, 1:]

    def train_batch(self, batch_size: int, generator: torch.Generator | None = None):
        data = self.splits["train"]
        starts = torch.randint(len(data) - self.block_size, (batch_size,), generator=generator)
        return self._windows(data, starts)

    def window_starts(self, split: str, stride: int | None = None, count: int | None = None) -> torch.Tensor:
        """Start positions of evaluation windows: every `stride` tokens (default block_size), or
        `count` windows spread evenly over the whole split."""
        last = len(self.splits[split]) - self.block_size - 1
        if count is not None:
            return torch.linspace(0, last, steps=count).round().long()
        stride = stride or self.block_size
        if stride < 1:
            raise DataError(f"The evaluation stride must be at least 1 token, got {stride}.")
        return torch.arange(0, last + 1, stride)

    def eval_batches(self, split: str, batch_size: int, *, stride: int | None = None,
                     count: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Deterministic (input, target) batches over fixed windows of the split."""
        data = self.splits[split]
        starts = self.window_starts(split, stride, count)
        for chunk in starts.split(batch_size):
            yield self._windows(data, chunk)

    def stats(self, characters: int, vocab_size: int) -> DataStats:
        train, val = self.splits["train"], self.splits["val"]
        return DataStats(characters=characters, tokens=self.ids.numel(), vocab_size=vocab_size,
                         vocab_used=int(self.ids.unique().numel()), train_tokens=train.numel(),
                         val_tokens=val.numel(), windows_per_epoch=(train.numel() - 1) // self.block_size)


# --------------------------------------------------------------------------------------------
# Documents to a dataset, as a training run and the app's preview both need them


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    dataset: TokenDataset
    stats: DataStats
    description: dict  # what the run was trained on; "baselines" holds Baselines.as_dict()
    baselines: Baselines


def split_baselines(dataset: TokenDataset, tokenizer: Tokenizer) -> Baselines:
    """The unigram and bigram baselines of the split, and the validation split's tokens per character
    (end-of-text tokens count as tokens but hold no characters)."""
    train, val = dataset.splits["train"].numpy(), dataset.splits["val"].numpy()
    if tokenizer.eot is None:
        characters = val.size  # one token, one character
    else:
        characters = len(tokenizer.decode_bytes(val[val != tokenizer.eot].tolist()).decode("utf-8", errors="replace"))
    return baselines(train, val, tokenizer.vocab_size, val_characters=characters,
                     unit="character" if tokenizer.name == "char" else "token")


def prepare_data(documents: Sequence[str], tokenizer: Tokenizer | str, block_size: int, val_fraction: float,
                 sources: Sequence[str] = ()) -> PreparedData:
    """A tokenizer's name builds a new one from the documents; a Tokenizer (a resumed or fine-tuned
    run's) is kept, since its ids are what the weights learnt."""
    if isinstance(tokenizer, str):
        tokenizer, ids = tokenize_corpus(documents, tokenizer)
    else:
        ids = encode_documents(documents, tokenizer)
    dataset = TokenDataset(ids, block_size, val_fraction)
    characters = sum(len(d) for d in documents)
    stats = dataset.stats(characters, tokenizer.vocab_size)
    found = split_baselines(dataset, tokenizer)
    description = {"sources": list(sources) or [DEFAULT_CORPUS.name], "documents": len(documents),
                   "characters": characters, "tokens": stats.tokens, "tokenizer": tokenizer.name,
                   "baselines": found.as_dict()}
    return PreparedData(tokenizer, dataset, stats, description, found)
