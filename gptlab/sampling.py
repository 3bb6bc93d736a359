"""Logits processors and the sampler: small pure functions over next-token logits (B, V).

Each function returns a new tensor and leaves its input alone. They follow the semantics of the
matching transformers processors (RepetitionPenaltyLogitsProcessor, NoRepeatNGramLogitsProcessor,
TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper), and
process_logits chains them in the order transformers' generate does: first the processors that
look at the sequence (repetition penalty, no-repeat n-gram), then, when sampling, the warpers
(temperature, top-k, top-p, min-p). Filtered tokens get -inf.
"""

from __future__ import annotations

from typing import Callable

import torch

from gptlab.config import SampleConfig

FILTERED = float("-inf")
Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (B, V), ids (B, T)) -> logits


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Below 1 sharpens the distribution, above 1 flattens it."""
    if temperature <= 0:
        raise ValueError(f"temperature must be above 0, got {temperature}; use greedy decoding for temperature 0.")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits per row. Ties with the k-th value are all kept, as transformers does."""
    if k <= 0:
        raise ValueError(f"top_k must be a positive whole number, got {k}.")
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, FILTERED)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches p.

    Like transformers, it works on an ascending sort and drops the tokens whose cumulative
    probability, counted from the least likely, stays at or below 1 - p; the most likely token
    always survives.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}.")
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, FILTERED)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the most likely token's probability."""
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}.")
    probs = logits.softmax(dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    # The most likely token always survives, even when rounding pushes it under the threshold.
    remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, FILTERED)


def apply_repetition_penalty(logits: torch.Tensor, ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019), as transformers applies it: every distinct token already in
    `ids` (B, T) (the prompt included) has its logit divided by `penalty` when positive and
    multiplied by it when negative, once however often it occurred."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be above 0, got {penalty}.")
    if ids.numel() == 0:
        return logits
    seen = torch.gather(logits, -1, ids)  # (B, T); repeated ids read the same value
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, ids, seen)  # repeated ids write the same value, so once per token


def block_repeated_ngrams(logits: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would complete an n-gram already present in `ids` (B, T)."""
    if n <= 0:
        raise ValueError(f"no_repeat_ngram_size must be a positive whole number, got {n}.")
    T, V = ids.size(-1), logits.size(-1)
    if T < n:
        return logits
    windows = ids.unfold(-1, n, 1)  # (B, T - n + 1, n): every n-gram so far
    prefix = ids[:, T - n + 1:]  # (B, n - 1): the n-gram the next token would complete
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (B, T - n + 1)
    # Non-matching windows point at an extra column V that is cut off afterwards.
    banned = torch.zeros(ids.size(0), V + 1, dtype=torch.bool, device=logits.device)
    banned.scatter_(1, torch.where(matches, windows[..., -1], V), True)
    return logits.masked_fill(banned[:, :V], FILTERED)


def processors(config: SampleConfig, *, warp: bool | None = None) -> list[tuple[str, Processor]]:
    """The processors config turns on, in the order process_logits applies them, each as
    (name, fn(logits, ids) -> logits). Exposed so a view can show the distribution after each one.

    The warpers (temperature, top-k, top-p, min-p) only shape a distribution to sample from, so
    they are included only when `warp` is true, which defaults to config.strategy == 'sample'.
    """
    if warp is None:
        warp = config.strategy == "sample"
    chain: list[tuple[str, Processor]] = []
    if config.repetition_penalty != 1.0:
        chain.append((f"repetition penalty {config.repetition_penalty:g}",
                      lambda x, ids: apply_repetition_penalty(x, ids, config.repetition_penalty)))
    if config.no_repeat_ngram_size > 0:
        chain.append((f"no-repeat {config.no_repeat_ngram_size}-gram",
                      lambda x, ids: block_repeated_ngrams(x, ids, config.no_repeat_ngram_size)))
    if warp:
        if config.temperature != 1.0:
            chain.append((f"temperature {config.temperature:g}",
                          lambda x, ids: apply_temperature(x, config.temperature)))
        if config.top_k is not None:
            chain.append((f"top-k {config.top_k}", lambda x, ids: top_k_filter(x, config.top_k)))
        if config.top_p is not None and config.top_p < 1.0:
            chain.append((f"top-p {config.top_p:g}", lambda x, ids: top_p_filter(x, config.top_p)))
        if config.min_p is not None:
            chain.append((f"min-p {config.min_p:g}", lambda x, ids: min_p_filter(x, config.min_p)))
    return chain


def process_logits(logits: torch.Tensor, ids: torch.Tensor, config: SampleConfig, *,
                   warp: bool | None = None) -> torch.Tensor:
    """All of config's processors on next-token logits (B, V), given the sequences so far (B, T).

    The warpers (temperature, top-k, top-p, min-p) only shape a distribution to sample from, so
    they run only when `warp` is true, which defaults to config.strategy == 'sample'.
    """
    return logits_processor(config, warp=warp)(logits, ids)


def logits_processor(config: SampleConfig, *, warp: bool | None = None) -> Processor:
    """process_logits for this config as one function of (logits, ids), the chain built once: a
    decoding loop calls it on every token."""
    chain = [step for _, step in processors(config, warp=warp)]

    def process(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        for step in chain:
            logits = step(logits, ids)
        return logits
    return process


def sample_next(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from softmax(logits) (B, V); returns (B,) ids."""
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def greedy_next(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token per row (the first of equals); returns (B,) ids."""
    return logits.argmax(dim=-1)
