"""How much of a sample the model copied from its training text: the longest span it reproduced word
for word, and the share of its n-grams that never occur in the training text.

Both come from matching statistics: for every position i of the sample, the length of the longest
prefix of sample[i:] that occurs somewhere in the corpus. A suffix array of the corpus's token ids
answers each in a binary search (the suffix sharing the longest prefix with a query sits next to
where the query would be inserted), so a sample of m tokens costs O(m log n) comparisons, whatever
the size n of the corpus. The array is built once per run by prefix doubling in numpy, refining only
the groups of suffixes still tied, and only up to `depth` tokens: the longest copy it can report (so
matches are "at least depth" long, which the result says). It is kept as plain numpy arrays, saved
and loaded without pickle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

try:
    from pydivsufsort import divsufsort
except ImportError:  # the slower numpy build below serves
    divsufsort = None

DEPTH = 1024  # longer than any sample this app makes (max_new_tokens is at most 1000 by default)
NGRAM = 8


@dataclass(frozen=True)
class CorpusIndex:
    tokens: np.ndarray  # (n,) uint16 (or int32 for a vocabulary past 65,536): the corpus's token ids
    suffixes: np.ndarray  # (n,) int32 or int64: start positions, sorted by their first `depth` tokens
    depth: int
    key: str = ""  # what it was built from (the caller's fingerprint), so a stale file is noticed


@dataclass(frozen=True)
class Copy:
    start: int  # where the copied span starts in the sample, in tokens
    length: int  # its length in tokens (0: nothing of the sample occurs in the corpus)
    source: int  # where it starts in the corpus, in tokens


@dataclass(frozen=True)
class Memorisation:
    tokens: int  # the sample's length in tokens
    longest: Copy  # the longest span of the sample found in the corpus (the first, among equals)
    capped: bool  # the longest copy reached the index's depth: it may be longer still
    n: int  # the n of the n-grams
    ngrams: int  # the sample's n-grams
    novel: int  # those that never occur in the corpus

    @property
    def novel_share(self) -> float | None:
        """The share of the sample's n-grams that are new; None for a sample shorter than n."""
        return self.novel / self.ngrams if self.ngrams else None


def build_index(tokens: Sequence[int] | np.ndarray, depth: int = DEPTH, key: str = "", *,
                fast: bool = True) -> CorpusIndex:
    """The suffix array of `tokens`, sorted by each suffix's first `depth` tokens (ties in any order).

    libdivsufsort (pydivsufsort) sorts 20 MB in about two seconds where the numpy prefix doubling
    below, kept as the path the fast one is tested against and for a machine without the package,
    takes one to three minutes."""
    if depth < 1:
        raise ValueError(f"depth must be a positive whole number, got {depth}.")
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    n = tokens.size
    dtype = np.int32 if n < 2**31 - 1 else np.int64
    if n == 0:
        return CorpusIndex(tokens, np.zeros(0, dtype), depth, key)
    if tokens.min() < 0:
        raise ValueError("Token ids must not be negative.")
    # Most vocabularies fit 16 bits (GPT-2's 50,257 tokens do): half the memory of the cached index.
    small = tokens.astype(np.uint16) if int(tokens.max()) < 2**16 else tokens
    if fast and divsufsort is not None:
        return CorpusIndex(small, np.asarray(divsufsort(tokens.copy()), dtype), depth, key)  # fully sorted
    return CorpusIndex(small, _prefix_doubling(tokens, depth).astype(dtype), depth, key)


def _prefix_doubling(tokens: np.ndarray, depth: int) -> np.ndarray:
    n = tokens.size
    # The first sort packs as many leading tokens into one int64 as fit (9 characters of a small
    # vocabulary, 3 BPE tokens), which saves the first, most expensive doubling rounds.
    bits = int(tokens.max()).bit_length() + 1  # + 1: room for "past the end" (0) below every token (+ 1)
    h = max(1, min(depth, 62 // bits))
    packed = np.zeros(n, np.int64)
    for j in range(h):
        shifted = np.zeros(n, np.int64)
        if j < n:
            shifted[:n - j] = tokens[j:].astype(np.int64) + 1
        packed = (packed << bits) | shifted
    order = np.argsort(packed)
    rank = np.empty(n, np.int64)  # each suffix's group: the position in `order` where its group starts
    boundary = np.empty(n, bool)
    boundary[0] = True
    boundary[1:] = packed[order[1:]] != packed[order[:-1]]
    rank[order] = np.maximum.accumulate(np.where(boundary, np.arange(n), 0))
    del packed, shifted
    # Suffixes are now sorted by their first h tokens.
    while h < depth:
        # Only groups of more than one suffix still need sorting.
        starts = np.flatnonzero(boundary)
        sizes = np.diff(np.append(starts, n))
        tied = np.repeat(sizes > 1, sizes)
        if not tied.any():
            break
        where = np.flatnonzero(tied)  # positions in `order` of the tied suffixes
        suffix = order[where]
        after = suffix + h
        second = np.full(suffix.size, -1, np.int64)  # past the end sorts first: a shorter suffix is smaller
        inside = after < n
        second[inside] = rank[after[inside]]
        # One int64 key per suffix: its group, then the group of the suffix h tokens on (< (n + 1) ** 2).
        pair = rank[suffix] * (n + 1) + (second + 1)
        resort = np.argsort(pair)  # groups keep their slots: `where` is ordered by group
        suffix, pair = suffix[resort], pair[resort]
        order[where] = suffix
        new = np.ones(suffix.size, bool)
        new[1:] = pair[1:] != pair[:-1]
        boundary[where] = new
        rank[suffix] = np.maximum.accumulate(np.where(new, where, 0))
        h *= 2
    return order


def matching_lengths(index: CorpusIndex, query: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, sources): for each position i of `query`, the length of the longest prefix of query[i:]
    found in the corpus (at most index.depth), and one corpus position where it starts. Ids absent from
    the corpus (e.g. -1 for a character the tokenizer does not know) never match."""
    q = np.asarray(query, dtype=np.int64)
    m = q.size
    lengths, sources = np.zeros(m, np.int64), np.zeros(m, np.int64)
    tokens, suffixes, n = index.tokens, index.suffixes, index.tokens.size
    if n == 0:
        return lengths, sources
    for i in range(m):
        window = q[i:i + index.depth]
        lo, hi = 0, n
        while lo < hi:  # the first suffix not below the window (comparing at most len(window) tokens)
            mid = (lo + hi) // 2
            common, sign = _compare(tokens, int(suffixes[mid]), window)
            if sign < 0:
                lo = mid + 1
            else:
                hi = mid
        for k in (lo - 1, lo):
            if 0 <= k < n:
                common, _ = _compare(tokens, int(suffixes[k]), window)
                if common > lengths[i]:
                    lengths[i], sources[i] = common, suffixes[k]
    return lengths, sources


def memorisation(index: CorpusIndex, query: Sequence[int] | np.ndarray, n: int = NGRAM) -> Memorisation:
    """The longest copy from the corpus in `query`, and how many of its n-grams the corpus never has."""
    if not 1 <= n <= index.depth:
        raise ValueError(f"n must be between 1 and the index's depth {index.depth}, got {n}.")
    lengths, sources = matching_lengths(index, query)
    m = lengths.size
    best = int(lengths.argmax()) if m else 0
    longest = Copy(best, int(lengths[best]), int(sources[best])) if m else Copy(0, 0, 0)
    ngrams = max(0, m - n + 1)
    novel = int((lengths[:ngrams] < n).sum())  # the n-gram at i occurs iff the match at i is n long
    return Memorisation(m, longest, longest.length >= index.depth, n, ngrams, novel)


def save_index(index: CorpusIndex, path: str | os.PathLike) -> None:
    """Plain arrays in an .npz, written beside and then renamed, so a reader never sees half a file."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, tokens=index.tokens, suffixes=index.suffixes, depth=np.int64(index.depth),
             key=np.str_(index.key))
    os.replace(partial, path)


def load_index(path: str | os.PathLike) -> CorpusIndex:
    with np.load(path, allow_pickle=False) as f:
        return CorpusIndex(f["tokens"], f["suffixes"], int(f["depth"]), str(f["key"]))


def _compare(tokens: np.ndarray, start: int, window: np.ndarray) -> tuple[int, int]:
    """(common prefix length, sign of corpus[start:] against window over len(window) tokens)."""
    piece = tokens[start:start + window.size]
    k = piece.size
    differ = np.flatnonzero(piece != window[:k])
    if differ.size:
        j = int(differ[0])
        return j, -1 if piece[j] < window[j] else 1
    return k, -1 if k < window.size else 0
