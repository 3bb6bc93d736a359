"""Generations that share one model at once compute what each would alone (issue: 7 of 36
concurrent samples from a dropout-0.3 model gave other text), and leave the model as they found it."""

from concurrent.futures import ThreadPoolExecutor

import torch

from gptlab.config import ModelConfig, SampleConfig
from gptlab.generate import generate, next_token_distribution
from gptlab.model import GPT


def test_concurrent_generations_from_one_model_equal_the_same_generation_alone():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.3))
    assert model.training  # as the app's loaded models were: dropout would be on outside eval mode
    configs = [SampleConfig(strategy="sample", max_new_tokens=40, temperature=1.0, seed=seed) for seed in range(6)]
    alone = [list(generate(model, [1, 2, 3], c)) for c in configs]

    def run(i):
        return list(generate(model, [1, 2, 3], configs[i % len(configs)]))

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(run, range(36)))
    assert together == [alone[i % len(configs)] for i in range(36)]
    assert model.training and model._inference_users == 0  # its own mode back, nothing held
    assert all(getattr(m, "packed_weight", None) is None for m in model.modules())  # the packed copy is freed


def test_next_token_probabilities_are_the_same_while_other_generations_run():
    torch.manual_seed(1)
    model = GPT(ModelConfig(vocab_size=40, block_size=32, n_layer=1, n_head=2, n_embd=32, dropout=0.3))
    config = SampleConfig(strategy="greedy", max_new_tokens=30)
    alone = next_token_distribution(model, [4, 5, 6], config, top_n=5)

    def mixed(i):
        if i % 2:
            return list(generate(model, [1, 2], config))
        return next_token_distribution(model, [4, 5, 6], config, top_n=5)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(mixed, range(24)))
    assert all(r == alone for r in results[0::2])
    assert len({tuple(r) for r in results[1::2]}) == 1
