"""GPT-2's tokenizer files in Hugging Face's format (vocab.json + merges.txt), made offline from the
bundled tiktoken ranks.

tiktoken stores one rank per token's bytes; Hugging Face stores the vocabulary as printable strings
(bytes_to_unicode) and the merges as an ordered list of pairs. Token r (r >= 256) is the merge
listed on line r - 256, and its two halves are what byte-pair encoding of the token's own bytes
produces when only the merges before it are allowed. That recovers GPT-2's original merges.txt.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from gptlab.tokenizers import EOT_TEXT, GPT2_RANKS, GPT2Tokenizer

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters: printable Latin-1
    bytes map to themselves, the rest to code points from 256 up, so no token string holds
    whitespace or control characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def token_string(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def _split(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """Byte-pair encode `token` using only the merges ranked below max_rank (tiktoken's algorithm:
    repeatedly merge the adjacent pair whose concatenation has the lowest rank)."""
    parts = [bytes([b]) for b in token]
    while True:
        best_i, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_i, best_rank = i, rank
        if best_i < 0:
            return parts
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]


@lru_cache(maxsize=1)
def gpt2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's vocab.json mapping (token string -> id, end-of-text included) and its merges in order."""
    from tiktoken.load import load_tiktoken_bpe

    eot = GPT2Tokenizer().eot  # also checks that the ranks file is there, with a clear message if not
    ranks = load_tiktoken_bpe(str(GPT2_RANKS))
    vocab, merges = {}, []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        vocab[token_string(token)] = rank
        if len(token) > 1:
            parts = _split(token, ranks, rank)
            assert len(parts) == 2, f"rank {rank} is not a merge of two earlier tokens"
            merges.append((token_string(parts[0]), token_string(parts[1])))
    vocab[EOT_TEXT] = eot
    return vocab, merges


def write_gpt2_tokenizer(folder, model_max_length: int) -> list[str]:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into `folder`,
    so that transformers.AutoTokenizer.from_pretrained(folder) loads GPT-2's tokenizer.
    Returns the file names written."""
    folder = Path(folder)
    vocab, merges = gpt2_vocab_and_merges()
    (folder / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / MERGES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": model_max_length,
              "add_prefix_space": False, **special}
    (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / SPECIAL_TOKENS_FILE).write_text(json.dumps(special, indent=2), encoding="utf-8")
    return [VOCAB_FILE, MERGES_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE]


def is_gpt2_vocab(vocab: dict) -> bool:
    """Whether a vocab.json mapping is GPT-2's (so the GPT-2 BPE can stand in for its tokenizer)."""
    return vocab == gpt2_vocab_and_merges()[0]
