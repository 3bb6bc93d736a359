"""Tokenizers: characters, or GPT-2's byte-pair encoding through tiktoken (offline, bundled ranks).

Both share one small interface: encode, decode, decode_bytes, vocab_size, eot, save, and
load_tokenizer() to read either back from a checkpoint folder.

Characters outside a char model's vocabulary are an error that names them (UnknownCharactersError):
a silent replacement would hand the model text it has never seen without telling anyone.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol

ASSETS = Path(__file__).resolve().parent.parent / "assets"
GPT2_RANKS = ASSETS / "gpt2.tiktoken"
TOKENIZER_FILE = "tokenizer.json"
EOT_TEXT = "<|endoftext|>"


class TokenizerError(ValueError):
    pass


class UnknownCharactersError(TokenizerError):
    def __init__(self, chars: list[str]):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars[:20]) + (" ..." if len(chars) > 20 else "")
        super().__init__(f"The text has {len(chars)} character(s) this character-level model never saw in "
                         f"training: {shown}. Remove or replace them, or train on text that contains them.")


class Tokenizer(Protocol):
    name: str

    @property
    def vocab_size(self) -> int: ...
    @property
    def eot(self) -> int | None: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids) -> str: ...
    def decode_bytes(self, ids) -> bytes: ...
    def save(self, folder: str | os.PathLike) -> None: ...


def _check_ids(ids, vocab_size: int) -> list[int]:
    try:
        ids = [int(i) for i in ids]
    except (TypeError, ValueError, OverflowError):  # None, nan, inf, text: int() names none of them
        raise TokenizerError("Token ids must be whole numbers (positions in the vocabulary); these ids are not "
                             "tokens at all.") from None
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise TokenizerError(f"Token id(s) {', '.join(map(str, bad[:5]))} are outside this tokenizer's vocabulary "
                             f"(0 to {vocab_size - 1}); the ids come from a different tokenizer or a model "
                             "with a larger vocabulary.")
    return ids


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class CharTokenizer:
    name = "char"

    def __init__(self, chars: list[str] | str):
        if not isinstance(chars, (list, tuple, str)) or not all(isinstance(c, str) for c in chars):
            raise TokenizerError("A character vocabulary must be a list of single characters (text).")
        chars = list(chars)
        if not chars:
            raise TokenizerError("A character vocabulary needs at least one character.")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise TokenizerError("A character vocabulary must list distinct single characters.")
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def eot(self) -> None:
        return None

    def unknown_chars(self, text: str) -> list[str]:
        return sorted(set(text) - self._stoi.keys())

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError:
            raise UnknownCharactersError(self.unknown_chars(text)) from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in _check_ids(ids, len(self.chars)))

    def decode_bytes(self, ids) -> bytes:
        return self.decode(ids).encode("utf-8")

    def save(self, folder) -> None:
        _write_json(Path(folder) / TOKENIZER_FILE, {"type": self.name, "chars": self.chars})


@lru_cache(maxsize=1)
def _gpt2_encoding():
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's pre-tokenizer pattern

    if not GPT2_RANKS.is_file():
        raise TokenizerError(f"The GPT-2 BPE ranks file is missing at {GPT2_RANKS}; reinstall GPT Lab or "
                             "restore assets/gpt2.tiktoken.")
    ranks = load_tiktoken_bpe(str(GPT2_RANKS))
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={EOT_TEXT: len(ranks)})


class GPT2Tokenizer:
    """GPT-2's BPE. A literal '<|endoftext|>' in user text is encoded as plain text; only the
    data pipeline inserts the real end-of-text token, between documents."""

    name = "gpt2"

    def __init__(self):
        self.encoding = _gpt2_encoding()

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab  # 50257

    @property
    def eot(self) -> int:
        return self.encoding.eot_token  # 50256

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.encoding.decode(_check_ids(ids, self.vocab_size))

    def decode_bytes(self, ids) -> bytes:
        return self.encoding.decode_bytes(_check_ids(ids, self.vocab_size))

    def save(self, folder) -> None:
        _write_json(Path(folder) / TOKENIZER_FILE, {"type": self.name})


def prompt_ids(tokenizer: Tokenizer, prompt: str = "") -> list[int]:
    """The prompt's ids; an empty prompt starts from end-of-text (GPT-2's unconditional start), or
    from a newline (else the first character) for a character model."""
    if prompt:
        return tokenizer.encode(prompt)
    if tokenizer.eot is not None:
        return [tokenizer.eot]
    return tokenizer.encode("\n") if "\n" in tokenizer.chars else [0]


def build_tokenizer(kind: str, text: str | None = None) -> Tokenizer:
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        if not text:
            raise TokenizerError("A character tokenizer is built from the training text, and none was given.")
        return CharTokenizer.from_text(text)
    raise TokenizerError(f"Unknown tokenizer {kind!r}; choose 'char' or 'gpt2'.")


def load_tokenizer(folder) -> Tokenizer:
    path = Path(folder) / TOKENIZER_FILE
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"{path} is missing.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path} is not valid JSON ({e}).") from None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        try:
            return CharTokenizer(spec.get("chars"))
        except TokenizerError as e:
            raise TokenizerError(f"{path} has no valid 'chars' list: {e}") from None
    raise TokenizerError(f"{path} names an unknown tokenizer type {kind!r}.")
