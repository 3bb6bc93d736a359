"""Inside the network: one head's attention weights, and the logit lens (what each layer would predict).

Both read the model's own forward pass: attention is the weights GPT.forward(return_attention=True)
returns, and the lens replays that pass block by block, reading the residual stream after each one
through the final norm and the output head, exactly as the last layer is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from gptlab.model import GPT

MAX_ATTENTION_TOKENS = 48  # beyond this the token labels on a 1280-pixel screen overlap
MAX_LENS_POSITIONS = 12  # table columns that fit beside each other on one screen
LENS_TOP = 3


class LensError(ValueError):
    pass


def _check(model: GPT, ids: Sequence[int]) -> torch.Tensor:
    if not ids:
        raise LensError("There are no tokens to look at; type a prompt first.")
    if len(ids) > model.config.block_size:
        raise LensError(f"The model reads at most {model.config.block_size} tokens at once; this has {len(ids)}. "
                        "Crop it to the last ones first.")
    return torch.tensor([list(ids)], dtype=torch.long, device=next(model.parameters()).device)


def check_layer_head(model: GPT, layer: int, head: int) -> None:
    """Layers and heads count from 1, as the panel shows them; a sentence names the valid range."""
    n_layer, n_head = model.config.n_layer, model.config.n_head
    if not 1 <= layer <= n_layer:
        raise LensError(f"This model has {n_layer} layer{'s' if n_layer > 1 else ''}: choose a layer from 1 to "
                        f"{n_layer} (got {layer}).")
    if not 1 <= head <= n_head:
        raise LensError(f"This model has {n_head} head{'s' if n_head > 1 else ''} per layer: choose a head from 1 "
                        f"to {n_head} (got {head}).")


@dataclass(frozen=True)
class AttentionMap:
    """One head's attention over the last tokens: weights[q][k] is how much query position q reads
    key position k (both counted within the shown tokens). Each full row sums to 1; a row that is
    cropped (offset > 0) sums to less, the rest going to tokens not shown."""
    layer: int  # 1-based
    head: int  # 1-based
    labels: tuple[str, ...]  # the shown tokens, white space made visible
    weights: tuple[tuple[float, ...], ...]
    offset: int  # tokens before the shown ones, left out so the labels stay readable
    n_layer: int
    n_head: int


@torch.no_grad()
def attention_weights(model: GPT, ids: Sequence[int]) -> list[torch.Tensor]:
    """Every layer's attention weights, [(n_head, T, T)], from the model's own forward pass."""
    was_training = model.training
    model.eval()
    try:
        _, _, attentions = model(_check(model, ids), return_attention=True)
    finally:
        model.train(was_training)
    return [a[0].float().cpu() for a in attentions]


def attention_map(model: GPT, ids: Sequence[int], labels: Sequence[str], *, layer: int, head: int,
                  max_tokens: int = MAX_ATTENTION_TOKENS) -> AttentionMap:
    """The attention of head `head` in layer `layer` (both from 1) over the last `max_tokens` tokens."""
    check_layer_head(model, layer, head)
    if len(labels) != len(ids):
        raise LensError(f"Got {len(labels)} labels for {len(ids)} tokens; give one label per token.")
    weights = attention_weights(model, ids)[layer - 1][head - 1]  # (T, T): query rows, key columns
    offset = max(0, len(ids) - max_tokens)
    shown = weights[offset:, offset:]
    return AttentionMap(layer, head, tuple(labels[offset:]), tuple(tuple(row) for row in shown.tolist()), offset,
                        model.config.n_layer, model.config.n_head)


@torch.no_grad()
def residual_streams(model: GPT, ids: Sequence[int]) -> list[torch.Tensor]:
    """The residual stream [(T, C)] after the embeddings (index 0) and after each block (1..n_layer),
    by the same steps as GPT.forward."""
    idx = _check(model, ids)
    was_training = model.training
    model.eval()
    try:
        x, rope = model.embed(idx)  # (1, T, C)
        streams = [x[0]]
        for i, block in enumerate(model.transformer.h):
            x, _ = block(x, i, rope=rope)
            streams.append(x[0])
    finally:
        model.train(was_training)
    return streams


@torch.no_grad()
def lens_logits(model: GPT, ids: Sequence[int]) -> torch.Tensor:
    """(n_layer + 1, T, vocab): each residual stream read through ln_f and the head."""
    streams = torch.stack(residual_streams(model, ids))
    return model.head(streams).float()


@dataclass(frozen=True)
class LogitLens:
    """For each layer (0: the embeddings; i: after block i) and each shown position, the `top`
    likeliest next tokens as (token id, probability), likeliest first."""
    ids: tuple[int, ...]  # the shown positions' own tokens
    offset: int  # positions before the shown ones
    top: tuple[tuple[tuple[tuple[int, float], ...], ...], ...]  # [layer][position][rank]

    @property
    def n_layers(self) -> int:
        return len(self.top)


def logit_lens(model: GPT, ids: Sequence[int], *, top: int = LENS_TOP,
               max_positions: int = MAX_LENS_POSITIONS) -> LogitLens:
    """What each layer's residual stream would predict at the last `max_positions` positions."""
    probs = lens_logits(model, ids).softmax(dim=-1)  # (L + 1, T, vocab)
    offset = max(0, len(ids) - max_positions)
    values, indices = probs[:, offset:].topk(min(top, probs.size(-1)), dim=-1)
    table = tuple(tuple(tuple(zip(map(int, i), map(float, v))) for i, v in zip(layer_i, layer_v))
                  for layer_i, layer_v in zip(indices.tolist(), values.tolist()))
    return LogitLens(tuple(int(i) for i in ids[offset:]), offset, table)
