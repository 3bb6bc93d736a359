"""Surprise: how many bits each token of a passage cost the model, and the passage's bits per character.

A token's surprise is its loss, -ln p(token | the tokens before it), read from one forward pass;
their mean is exactly the cross-entropy training reports. The first token of a passage has nothing
before it to be predicted from, so it is context only and is not scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from gptlab.insight.baselines import bits_per_character
from gptlab.insight.tokens import pieces_of
from gptlab.model import GPT
from gptlab.tokenizers import Tokenizer


class SurpriseError(ValueError):
    pass


def token_pieces(tokenizer: Tokenizer, ids: Sequence[int]) -> tuple[str, ...]:
    """Each token's text, as the token view shows it: a character split across BPE tokens belongs to
    the token that completes it (the earlier ones get ""), so the pieces join to the passage exactly."""
    return tuple(piece.text for piece in pieces_of(tokenizer, ids))


@dataclass(frozen=True)
class Surprise:
    """losses[i] (nats) is the surprise of ids[i + 1], predicted from ids[: i + 1]."""
    ids: tuple[int, ...]
    pieces: tuple[str, ...]  # each id's text (see token_pieces)
    losses: tuple[float, ...]
    vocab_size: int

    @property
    def total_nats(self) -> float:
        return math.fsum(self.losses)

    @property
    def mean_nats(self) -> float:
        return self.total_nats / len(self.losses)

    @property
    def characters(self) -> int:
        """Characters of the scored tokens (all but the first)."""
        return sum(len(p) for p in self.pieces[1:])

    @property
    def bits(self) -> tuple[float, ...]:
        return tuple(loss / math.log(2) for loss in self.losses)

    @property
    def bits_per_character(self) -> float:
        """The loss in bits shared out over the characters: comparable across tokenizers."""
        if self.characters <= 0:
            raise SurpriseError("There are no characters to share the loss over; give a longer passage.")
        return bits_per_character(self.mean_nats, len(self.losses) / self.characters)

    @property
    def random_guess_bits(self) -> float:
        """A token's surprise under uniform guessing: the scale's top."""
        return math.log2(self.vocab_size)


@torch.no_grad()
def token_losses(model: GPT, ids: Sequence[int]) -> torch.Tensor:
    """(len(ids) - 1,) float losses in nats, one forward pass over ids[:-1] scored against ids[1:]."""
    if len(ids) < 2:
        raise SurpriseError("A passage needs at least two tokens: the first is only context for the second.")
    if len(ids) > model.config.block_size + 1:
        raise SurpriseError(f"The model scores at most {model.config.block_size + 1} tokens at once (its context "
                            f"length plus one); this passage has {len(ids)}. Cut it first.")
    idx = torch.tensor([list(ids)], dtype=torch.long, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(idx[:, :-1])
    finally:
        model.train(was_training)
    return F.cross_entropy(logits[0].float(), idx[0, 1:], reduction="none").cpu()


def surprise(model: GPT, tokenizer: Tokenizer, ids: Sequence[int]) -> Surprise:
    ids = tuple(int(i) for i in ids)
    losses = token_losses(model, ids)
    return Surprise(ids, token_pieces(tokenizer, ids), tuple(losses.tolist()), model.config.vocab_size)


def cap_passage(ids: Sequence[int], block_size: int) -> tuple[list[int], bool]:
    """The first block_size + 1 tokens (one forward pass scores them all), and whether any were cut."""
    return list(ids[: block_size + 1]), len(ids) > block_size + 1
