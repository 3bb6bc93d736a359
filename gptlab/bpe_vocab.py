"""GPT-2's vocabulary as the strings and merges that other tools read, made offline from the bundled
tiktoken ranks: Hugging Face's vocab.json and merges.txt (gptlab.hub), and llama.cpp's GGUF tokens
(gptlab.gguf_export).

tiktoken stores one rank per token's bytes; both formats store the vocabulary as printable strings
(bytes_to_unicode) and the merges as an ordered list of pairs. Token r (r >= 256) is the merge
listed on line r - 256, and its two halves are what byte-pair encoding of the token's own bytes
produces when only the merges before it are allowed. That recovers GPT-2's original merges.txt.
"""

from __future__ import annotations

from functools import lru_cache

from gptlab.tokenizers import EOT_TEXT, GPT2_RANKS, GPT2Tokenizer


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
