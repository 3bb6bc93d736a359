"""Baselines a language model must beat, measured on the user's own text.

Two models that a table of counts can be: the unigram model (how often each token occurs) and the
bigram model (which token follows which). Both are counted exactly on the TRAINING split and
measured on the VALIDATION split, as the GPT's validation loss is: the cross-entropy of the
validation tokens, in nats per token, so the lines sit on the loss chart's own scale.

Unseen events need smoothing, or one unseen pair makes the loss infinite. Both use Witten-Bell
interpolation, which has no knob to tune: a context followed by T different tokens in N occurrences
gives the lower-order model the weight T / (N + T), the chance that the next event is a new one.
The unigram model falls back to the uniform distribution over the vocabulary, the bigram model to the
unigram model (and to it alone after a token the training split never shows):

    p1(w)     = (c(w) + T * 1/V) / (N + T)                 T: distinct tokens, N: training tokens
    p2(w | h) = (c(h, w) + T(h) * p1(w)) / (c(h) + T(h))   T(h): distinct tokens after h

The computation is counting with numpy: bigrams are keys prev * V + next (int64), counted densely when
V * V is small (characters) and with np.unique otherwise (GPT-2's 50,257 tokens), never a V x V table.
This module imports nothing from gptlab, so gptlab.data can compute it where the split is made
(once per preview and at a run's start; never in the training loop).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

SMOOTHING = "Witten-Bell interpolation (bigram with unigram, unigram with uniform)"
_DENSE_KEYS = 1 << 22  # below this many possible bigrams a bincount beats sorting


@dataclass(frozen=True)
class Baselines:
    """What the loss chart draws beside ln(V). Losses are in nats per validation token."""
    unigram: float  # knows only how often each token occurs
    bigram: float  # knows the previous token
    tokens_per_char: float  # of the validation split: converts nats/token to bits/character
    vocab_size: int
    unit: str = "token"  # "character" for a character tokenizer: the captions name it

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> Baselines | None:
        """A run's stored baselines, or None where there are none (a run from before they existed)
        or they are not what this version wrote."""
        if not isinstance(d, dict):
            return None
        try:
            b = cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
        except TypeError:
            return None
        numbers = (b.unigram, b.bigram, b.tokens_per_char)
        if not all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in numbers):
            return None
        return b if b.tokens_per_char > 0 and isinstance(b.vocab_size, int) and b.vocab_size > 0 else None


def bits_per_character(loss: float, tokens_per_char: float) -> float:
    """A loss in nats per token as bits per character: nats/token x tokens/character / ln 2. For a
    character tokenizer tokens_per_char is 1, so it is the loss / ln 2."""
    return loss * tokens_per_char / math.log(2)


def ngram_entropies(train, val, vocab_size: int) -> tuple[float, float]:
    """(unigram, bigram) cross-entropy in nats per token of `val` under models counted on `train`,
    smoothed by Witten-Bell interpolation (see the module's docstring). The bigram model predicts the
    first validation token from the last training token, so both average over every validation token."""
    train = np.asarray(train, dtype=np.int64).ravel()
    val = np.asarray(val, dtype=np.int64).ravel()
    V = int(vocab_size)
    if train.size < 2 or val.size < 1:
        raise ValueError("The baselines need at least two training tokens and one validation token.")
    if V < 1 or min(train.min(), val.min()) < 0 or max(train.max(), val.max()) >= V:
        raise ValueError(f"The token ids must lie in the vocabulary (0 to {V - 1}).")

    counts = np.bincount(train, minlength=V).astype(np.float64)
    seen = np.count_nonzero(counts)
    p1 = (counts + seen / V) / (train.size + seen)  # (V,)
    unigram = float(-np.log(p1[val]).mean())

    prev = np.concatenate([train[:-1], train[-1:], val[:-1]])
    nxt = np.concatenate([train[1:], val])
    n_train = train.size - 1  # the first n_train pairs are counted; the rest are measured
    keys = prev * V + nxt
    train_keys, val_keys = keys[:n_train], keys[n_train:]
    if V * V <= _DENSE_KEYS:
        pair_counts = np.bincount(train_keys, minlength=V * V)
        c_hw = pair_counts[val_keys].astype(np.float64)
        followers = np.bincount(np.flatnonzero(pair_counts) // V, minlength=V)
    else:
        unique, unique_counts = np.unique(train_keys, return_counts=True)
        where = np.minimum(np.searchsorted(unique, val_keys), unique.size - 1)
        c_hw = np.where(unique[where] == val_keys, unique_counts[where], 0).astype(np.float64)
        followers = np.bincount(unique // V, minlength=V)
    c_h = np.bincount(prev[:n_train], minlength=V).astype(np.float64)
    h = prev[n_train:]
    t_h = followers[h].astype(np.float64)
    denominator = c_h[h] + t_h
    p2 = np.where(denominator > 0, (c_hw + t_h * p1[nxt[n_train:]]) / np.maximum(denominator, 1), p1[nxt[n_train:]])
    bigram = float(-np.log(p2).mean())
    return unigram, bigram


def baselines(train, val, vocab_size: int, *, val_characters: int, unit: str = "token") -> Baselines:
    """The unigram and bigram baselines of a split, and its validation tokens per character."""
    unigram, bigram = ngram_entropies(train, val, vocab_size)
    n_val = int(np.asarray(val).size)
    return Baselines(unigram=unigram, bigram=bigram, tokens_per_char=n_val / max(1, int(val_characters)),
                     vocab_size=int(vocab_size), unit=unit)
