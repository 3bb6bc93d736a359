"""The next-token distribution before and after each decoding processor, on the same candidates.

`stages` runs the very processors gptlab.sampling.process_logits chains (sampling.processors), one at
a time, and keeps the probabilities of a fixed set of candidate tokens after each, so a chart can
show what every control does to the same bars. Greedy decoding and beam search do not warp (no
temperature, top-k, top-p or min-p): only the penalties apply, and beam search applies them to
log-probabilities, as it does when it searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptlab.config import SampleConfig
from gptlab.sampling import processors

MODEL = "model"  # the name of the first stage: the model's own distribution


@dataclass(frozen=True)
class Stage:
    name: str  # "model", then the processor, e.g. "top-k 20"
    probs: tuple[float, ...]  # probability of each candidate after this stage (0 when filtered)
    kept: int  # tokens of the whole vocabulary still possible after this stage
    covered: float  # the candidates' share of this stage's probability


@dataclass(frozen=True)
class Stages:
    candidates: tuple[int, ...]  # token ids, most likely under the model first
    stages: tuple[Stage, ...]  # the model's distribution first, then one per processor that is on
    strategy: str
    warped: bool  # whether the warpers could apply (only when sampling)


def stages(logits: torch.Tensor, ids, config: SampleConfig, top_n: int = 10) -> Stages:
    """The distribution of next-token `logits` (V,) after each processor config turns on, given the
    sequence so far `ids` (T,). Candidates: the model's top_n, then any of the final top_n
    that the processors lifted into it."""
    if top_n <= 0:
        raise ValueError(f"top_n must be a positive whole number, got {top_n}.")
    scores = logits.detach().float().reshape(1, -1)  # (1, V)
    seq = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.long).reshape(1, -1)
    if config.strategy == "beam":
        scores = F.log_softmax(scores, dim=-1)  # what beam search hands to the processors
    warp = config.strategy == "sample"
    dists = [(MODEL, scores.softmax(dim=-1)[0])]
    for name, step in processors(config, warp=warp):
        scores = step(scores, seq)
        dists.append((name, scores.softmax(dim=-1)[0]))
    n = min(top_n, scores.size(-1))
    first = torch.topk(dists[0][1], n).indices.tolist()
    last = [i for i in torch.topk(dists[-1][1], n).indices.tolist() if dists[-1][1][i] > 0]
    candidates = first + [i for i in last if i not in first]
    index = torch.tensor(candidates)
    out = tuple(Stage(name, tuple(p[index].tolist()), int((p > 0).sum()), float(p[index].sum()))
                for name, p in dists)
    return Stages(tuple(candidates), out, config.strategy, warp)
