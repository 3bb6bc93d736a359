"""Beam search's finished hypotheses and their scores, against transformers' sequences_scores on the
same random GPT-2 weights (the tiny-model pair of test_generate; nothing is downloaded)."""

import math

import pytest
import torch

from gptlab.config import SampleConfig
from gptlab.generate import GenerationError, beam_search, generate
from tests.test_generate import liked_tokens, pair, prompt

SETTINGS = [dict(num_beams=3, length_penalty=1.0, early_stopping=True),
            dict(num_beams=4, length_penalty=0.5, early_stopping=False),
            dict(num_beams=3, length_penalty=2.0, early_stopping=True, repetition_penalty=1.4)]


def hf_beams(hf, ids, eos, settings, new):
    x = ids[None]
    out = hf.generate(x, attention_mask=torch.ones_like(x), pad_token_id=eos, eos_token_id=eos, do_sample=False,
                      max_new_tokens=new, num_return_sequences=settings["num_beams"], output_scores=True,
                      return_dict_in_generate=True, **settings)
    seqs = []
    for row in out.sequences[:, x.size(1):].tolist():
        if eos in row:
            row = row[:row.index(eos)]  # the eos and the padding after it
        seqs.append(tuple(row))
    return seqs, out.sequences_scores.tolist()


@pytest.mark.parametrize("settings", SETTINGS)
def test_beam_scores_equal_transformers_sequences_scores(settings):
    hf, ours = pair(1)
    eos = liked_tokens(hf, 1, 1)[0]
    hf.generation_config.eos_token_id = eos
    ended = 0
    for p in range(3):
        ids = prompt(200 + p, length=6)
        seqs, scores = hf_beams(hf, ids, eos, settings, 15)
        beams = beam_search(ours, ids, SampleConfig(strategy="beam", max_new_tokens=15, **settings), eot=eos)
        assert [b.tokens for b in beams] == seqs
        assert [b.score for b in beams] == pytest.approx(scores, abs=1e-4)
        ended += sum(b.ended for b in beams)
        for b in beams:
            assert b.length == len(b.tokens) + b.ended
            assert b.score == pytest.approx(b.sum_logprobs / b.length ** settings["length_penalty"], rel=1e-5)
            assert b.sum_logprobs <= 0
        assert [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)
    assert ended > 0  # some hypotheses finished with eos, so the eos counted in the length mattered


def test_generate_yields_the_best_beam():
    _, ours = pair(2)
    ids = prompt(3)
    config = SampleConfig(strategy="beam", num_beams=3, max_new_tokens=12)
    assert list(generate(ours, ids, config, eot=0)) == list(beam_search(ours, ids, config, eot=0)[0].tokens)


def test_a_raw_sum_is_the_log_probability_of_the_tokens_when_no_processor_is_on():
    _, ours = pair(0)
    ids = prompt(0, length=5).tolist()
    beam = beam_search(ours, ids, SampleConfig(strategy="beam", num_beams=2, max_new_tokens=6), eot=None)[0]
    seq, total = list(ids), 0.0
    with torch.no_grad():
        for t in beam.tokens:
            logits, _ = ours(torch.tensor([seq]))
            total += float(logits[0, -1].log_softmax(-1)[t])
            seq.append(t)
    assert beam.length == 6 and not beam.ended
    assert beam.sum_logprobs == pytest.approx(total, abs=1e-4)
    assert math.isclose(beam.score, total / 6, rel_tol=1e-5, abs_tol=1e-5)


def test_beam_search_needs_the_beam_strategy():
    _, ours = pair(0)
    with pytest.raises(GenerationError, match="strategy 'beam'"):
        beam_search(ours, [1, 2], SampleConfig(strategy="greedy"))
