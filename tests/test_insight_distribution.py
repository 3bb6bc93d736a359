"""The next-token distribution stage by stage: each stage is softmax of the matching processor applied
by hand, the last is softmax(process_logits(...)), kept tokens sum to 1, and greedy and beam search
do not warp."""

import pytest
import torch
import torch.nn.functional as F

from gptlab.config import SampleConfig
from gptlab.insight.distribution import MODEL, stages
from gptlab.sampling import (apply_repetition_penalty, apply_temperature, block_repeated_ngrams, min_p_filter,
                             process_logits, top_k_filter, top_p_filter)

V = 50


def case(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(V, generator=g) * 1.5
    ids = torch.randint(0, V, (12,), generator=g)
    ids[-2:] = ids[3:5]  # the last two tokens occurred before, so 3-gram blocking bans something
    return logits, ids


ALL = dict(strategy="sample", repetition_penalty=1.5, no_repeat_ngram_size=3, temperature=0.7, top_k=20, top_p=0.9,
           min_p=0.05)


def by_hand(logits, ids):
    x, seq = logits[None], ids[None]
    steps = [x]
    for fn in (lambda x: apply_repetition_penalty(x, seq, 1.5), lambda x: block_repeated_ngrams(x, seq, 3),
               lambda x: apply_temperature(x, 0.7), lambda x: top_k_filter(x, 20), lambda x: top_p_filter(x, 0.9),
               lambda x: min_p_filter(x, 0.05)):
        steps.append(fn(steps[-1]))
    return [s.softmax(-1)[0] for s in steps]


@pytest.mark.parametrize("seed", range(3))
def test_each_stage_is_its_processor_applied_by_hand(seed):
    logits, ids = case(seed)
    config = SampleConfig(**ALL)
    result = stages(logits, ids, config, top_n=V)  # every token a candidate
    assert [s.name for s in result.stages] == [MODEL, "repetition penalty 1.5", "no-repeat 3-gram", "temperature 0.7",
                                               "top-k 20", "top-p 0.9", "min-p 0.05"]
    index = torch.tensor(result.candidates)
    assert sorted(result.candidates) == list(range(V))
    for stage, expected in zip(result.stages, by_hand(logits, ids)):
        assert torch.allclose(torch.tensor(stage.probs), expected[index], atol=1e-6), stage.name
        assert stage.kept == int((expected > 0).sum())
        assert sum(stage.probs) == pytest.approx(1.0, abs=1e-5)
    final = process_logits(logits[None], ids[None], config).softmax(-1)[0]
    assert torch.allclose(torch.tensor(result.stages[-1].probs), final[index], atol=1e-6)
    kept = [s.kept for s in result.stages[4:]]  # from top-k on, each filter only removes
    assert kept == sorted(kept, reverse=True) and kept[0] == 20 and kept[-1] < 20
    assert result.warped


def test_the_candidates_are_the_same_across_stages_and_include_what_the_processors_lift():
    logits = torch.linspace(5, 0, V)  # token 0 most likely, then 1, 2, ...
    ids = torch.tensor([0, 1, 2, 3, 4, 5])
    result = stages(logits, ids, SampleConfig(strategy="sample", repetition_penalty=2.0, temperature=1.0), top_n=6)
    assert result.candidates[:6] == (0, 1, 2, 3, 4, 5)
    assert set(result.candidates[6:]) == {6, 7, 8, 9, 10, 11}  # penalised tokens fell behind these
    assert all(len(s.probs) == len(result.candidates) for s in result.stages)
    assert result.stages[1].probs[0] < result.stages[0].probs[0]  # the penalty lowered a repeated token


@pytest.mark.parametrize("strategy, extra", [("greedy", {}), ("beam", {"num_beams": 3})])
def test_greedy_and_beam_do_not_warp(strategy, extra):
    logits, ids = case(1)
    config = SampleConfig(strategy=strategy, repetition_penalty=1.3, temperature=0.5, **extra)
    result = stages(logits, ids, config, top_n=V)
    assert not result.warped and [s.name for s in result.stages] == [MODEL, "repetition penalty 1.3"]
    index = torch.tensor(result.candidates)
    # Beam search penalises log-probabilities, greedy the logits: each stage shows what its search sees.
    start = F.log_softmax(logits, -1) if strategy == "beam" else logits
    expected = apply_repetition_penalty(start[None], ids[None], 1.3).softmax(-1)[0]
    assert torch.allclose(torch.tensor(result.stages[-1].probs), expected[index], atol=1e-6)
    warp = False if strategy == "greedy" else None
    assert torch.allclose(expected, process_logits(start[None], ids[None], config, warp=warp).softmax(-1)[0])


def test_with_every_control_off_there_is_only_the_model():
    logits, ids = case(2)
    result = stages(logits, ids, SampleConfig(strategy="sample", temperature=1.0), top_n=5)
    assert [s.name for s in result.stages] == [MODEL] and len(result.candidates) == 5
    assert result.stages[0].probs == tuple(sorted(result.stages[0].probs, reverse=True))
