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
        fix = (f"use a context length (block_size) of at most {largest_block_size}, or add more text"
               if largest_block_size >= 1 else "add more text")
        super().__init__(f"The text is too short for a context length of {block_size}: it has {n_tokens} tokens, "
                         f"and training plus validation need at least {min_tokens}. To fix it, {fix}.")


# --------------------------------------------------------------------------------------------
# Reading text


def clean_text(text: str) -> str:
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def decode_text(raw: bytes, name: str = "the text") -> str:
    """Bytes to clean text, or a DataError that says what is wrong with them."""
    if b"\x00" in raw[:65536]:
        raise DataError(f"{name} looks like a binary file (it contains NUL bytes); give a plain-text .txt or .md file.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not valid UTF-8 text (byte 0x{raw[e.start]:02x} at position {e.start}). "
                        "Save it as UTF-8 and try again.") from None
    text = clean_text(text)
    if not text.strip():
        raise DataError(f"{name} is empty; it needs some text to learn from.")
    return text


def read_text_file(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the text files inside it.")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(f"{path.name} is not a .txt or .md file; give plain-text files with one of those endings.")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; give the text files inside it.") from None
    except OSError as e:
        raise DataError(f"{path} cannot be read: {e.strerror}.") from None
    return decode_text(raw, path.name)


def read_documents(paths: Sequence[str | os.PathLike] | None = None) -> list[str]:
    """The documents in the given files, or the bundled Shakespeare when no file is given."""
    if not paths:
        return [read_text_file(DEFAULT_CORPUS)]
    return [read_text_file(p) for p in paths]


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
