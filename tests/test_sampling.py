"""Logits processors against transformers' own (same filtered logits, bit for bit, ties included),
their order in process_logits, and the sampler's invariants."""

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from gptlab.config import SampleConfig
from gptlab.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    block_repeated_ngrams,
    greedy_next,
    min_p_filter,
    process_logits,
    sample_next,
    top_k_filter,
    top_p_filter,
)


def random_logits(seed: int, rows: int = 6, vocab: int = 50, ties: bool = True) -> torch.Tensor:
    """Logits rounded to a few values, so that ties at every threshold are common."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * 2
    return logits.round() if ties else logits


def random_ids(seed: int, rows: int = 6, length: int = 12, vocab: int = 50, alphabet: int = 5) -> torch.Tensor:
    """Ids from a small alphabet, so that repeated tokens and n-grams are common."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, min(alphabet, vocab), (rows, length), generator=g)


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


SEEDS = range(4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [True, False])
def test_filters_match_transformers(seed, ties):
    logits = random_logits(seed, ties=ties)
    ids = random_ids(seed)
    for t in (0.3, 0.7, 1.0, 1.9):
        same(apply_temperature(logits, t), TemperatureLogitsWarper(t)(ids, logits))
    for k in (1, 2, 3, 10, 49, 50, 80):
        same(top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits))
    for p in (0.01, 0.1, 0.5, 0.9, 0.99, 1.0):
        same(top_p_filter(logits, p), TopPLogitsWarper(p)(ids, logits))
    for m in (0.0, 0.01, 0.1, 0.5, 1.0):
        same(min_p_filter(logits, m), MinPLogitsWarper(m)(ids, logits))


@pytest.mark.parametrize("seed", SEEDS)
def test_sequence_processors_match_transformers(seed):
    logits = random_logits(seed)
    for length in (1, 2, 3, 12):
        ids = random_ids(seed, length=length)
        for penalty in (0.5, 1.0, 1.3, 2.0):
            same(apply_repetition_penalty(logits, ids, penalty), RepetitionPenaltyLogitsProcessor(penalty)(ids, logits))
        for n in (1, 2, 3, 4):
            same(block_repeated_ngrams(logits, ids, n), NoRepeatNGramLogitsProcessor(n)(ids, logits.clone()))


def test_repetition_penalty_counts_each_token_once():
    logits = torch.tensor([[2.0, -2.0, 1.0, 4.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1, 1, 0]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 4.0]]  # positive divided, negative multiplied, once


def test_no_repeat_ngram_bans_only_completions_of_seen_ngrams():
    ids = torch.tensor([[3, 4, 5, 3, 4]])  # "3 4" was followed by 5 before
    out = block_repeated_ngrams(torch.zeros(1, 8), ids, 3)
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [5]
    assert torch.isinf(block_repeated_ngrams(torch.zeros(1, 8), ids, 1)).nonzero()[:, 1].tolist() == [3, 4, 5]


CONFIGS = [
    dict(),
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_p=0.8, repetition_penalty=1.4),
    dict(temperature=0.9, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2, no_repeat_ngram_size=2),
    dict(temperature=1.0, min_p=0.2, no_repeat_ngram_size=3),
]


def transformers_chain(c: SampleConfig, warp: bool) -> LogitsProcessorList:
    """The processors transformers' generate builds for the same settings, in its order."""
    chain = LogitsProcessorList()
    if c.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(c.repetition_penalty))
    if c.no_repeat_ngram_size:
        chain.append(NoRepeatNGramLogitsProcessor(c.no_repeat_ngram_size))
    if warp:
        if c.temperature != 1.0:
            chain.append(TemperatureLogitsWarper(c.temperature))
        if c.top_k:
            chain.append(TopKLogitsWarper(c.top_k))
        if c.top_p is not None and c.top_p < 1.0:
            chain.append(TopPLogitsWarper(c.top_p))
        if c.min_p is not None:
            chain.append(MinPLogitsWarper(c.min_p))
    return chain


@pytest.mark.parametrize("settings", CONFIGS)
@pytest.mark.parametrize("strategy", ["sample", "greedy"])
def test_process_logits_matches_transformers_chain(settings, strategy):
    config = SampleConfig(strategy=strategy, **settings)
    for seed in SEEDS:
        logits, ids = random_logits(seed), random_ids(seed)
        before = logits.clone()
        ours = process_logits(logits, ids, config)
        same(ours, transformers_chain(config, warp=strategy == "sample")(ids, logits.clone()))
        assert torch.equal(logits, before)  # pure: the input is left alone


def test_greedy_ignores_warpers():
    logits, ids = random_logits(0, ties=False), random_ids(0)
    config = SampleConfig(strategy="greedy", temperature=0.3, top_k=2, top_p=0.5, min_p=0.5)
    same(process_logits(logits, ids, config), logits)
    assert torch.equal(greedy_next(process_logits(logits, ids, config)), logits.argmax(-1))


def test_top_k_one_sampling_is_greedy():
    logits, ids = random_logits(1, rows=32, ties=False), random_ids(1, rows=32)
    config = SampleConfig(strategy="sample", temperature=1.7, top_k=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert torch.equal(sample_next(process_logits(logits, ids, config), g), logits.argmax(-1))


def test_low_temperature_sampling_is_greedy():
    logits = random_logits(2, rows=32, ties=False)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(apply_temperature(logits, 1e-4), g), logits.argmax(-1))


def test_sampling_is_reproducible_with_a_seeded_generator():
    logits = random_logits(3, rows=16, ties=False)
    draws = [sample_next(logits, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*draws)
    other = torch.stack([sample_next(logits, torch.Generator().manual_seed(s)) for s in range(8, 12)])
    assert not all(torch.equal(row, draws[0]) for row in other)


def test_samples_stay_inside_the_filtered_set():
    logits = random_logits(4, rows=4, vocab=30, ties=False)
    g = torch.Generator().manual_seed(0)
    for filtered in (top_k_filter(logits, 3), top_p_filter(logits, 0.6), min_p_filter(logits, 0.3)):
        allowed = ~torch.isinf(filtered)
        for _ in range(50):
            token = sample_next(filtered, g)
            assert allowed.gather(1, token[:, None]).all()


def test_sample_frequencies_follow_the_distribution():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, g) for _ in range(3000)])
    freq = torch.bincount(draws.view(-1), minlength=3).float() / 3000
    torch.testing.assert_close(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.03, rtol=0)


def test_bad_arguments_raise_value_errors():
    logits, ids = random_logits(0), random_ids(0)
    for call in (lambda: apply_temperature(logits, 0.0), lambda: top_k_filter(logits, 0),
                 lambda: top_p_filter(logits, 0.0), lambda: top_p_filter(logits, 1.5),
                 lambda: min_p_filter(logits, -0.1), lambda: apply_repetition_penalty(logits, ids, 0.0),
                 lambda: block_repeated_ngrams(logits, ids, 0)):
        with pytest.raises(ValueError):
            call()
