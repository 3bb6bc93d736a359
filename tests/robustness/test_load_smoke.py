"""A short run of bench/load.py: samplers while one trains, and three Starts at once with room for one."""

from bench.load import run_load


def test_samplers_while_training_get_their_own_text_and_one_of_three_starts_trains():
    report = run_load(seconds=4.0, samplers=3, new_tokens=20, warmup_s=0.0)
    assert report.errors == []
    assert report.latencies_s and report.distinct_texts == 1  # same prompt and seed: the same text for all
    assert report.alone_tokens_per_s > 0 and report.loaded_tokens_per_s > 0
    assert sorted(report.starts, key=lambda s: s != "trained")[0] == "trained"
    refused = [s for s in report.starts if s != "trained"]
    assert len(refused) == 2 and all("already training 1 model(s), its limit. Try again" in s for s in refused)
