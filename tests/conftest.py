"""Fixtures shared by the tests of training runs: a tiny text, tiny configs, and one tiny trained run.

The configs are the `tiny` preset on the CPU without samples: a 2-layer, 32-wide model with a
context of 32 that trains 20 steps in about a second. Tests that change the trained run work on a
copy of it (shutil.copytree), since every test of the session shares it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gptlab.config import ModelConfig, TrainConfig

TINY_TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
             "all that glitters is not gold; to be or not to be, that is the question.\n") * 20  # ~3k chars
TINY_TRAIN = dict(max_steps=20, eval_interval=10, device="cpu", sample_interval=0)


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """A few KB of repeated sentences: enough for a context of 32 and a validation split."""
    return TINY_TEXT


@pytest.fixture(scope="session")
def tiny_model_config():
    """tiny_model_config(**overrides) -> the tiny preset's ModelConfig."""
    def make(**overrides) -> ModelConfig:
        return ModelConfig.preset("tiny", **overrides)
    return make


@pytest.fixture(scope="session")
def tiny_train_config():
    """tiny_train_config(**overrides) -> the tiny preset's TrainConfig: 20 steps on the CPU, evaluated
    every 10, no samples."""
    def make(**overrides) -> TrainConfig:
        return TrainConfig.preset("tiny", **{**TINY_TRAIN, **overrides})
    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_text, tiny_model_config, tiny_train_config) -> Path:
    """The folder of a finished 20-step run with evaluations at steps 0, 10 and 20: init/, best/, last/,
    metrics.jsonl and loss.png. It trained on tiny_text from the file tiny_run.parent / "tiny.txt"."""
    import torch  # here, not above: tests that train nothing need not import torch to collect

    from gptlab.training import TrainingRun

    root = tmp_path_factory.mktemp("tiny-run")
    data = root / "tiny.txt"
    data.write_text(tiny_text, encoding="utf-8")
    torch.manual_seed(0)
    run = TrainingRun.new(tiny_model_config(), tiny_train_config(), root / "run", data_paths=[data])
    for _ in run.events():
        pass
    return root / "run"
