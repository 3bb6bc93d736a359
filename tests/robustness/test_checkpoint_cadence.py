"""How much a crash can lose: last/ (with trainer state) is saved at every evaluation whatever the
validation loss did, and at least every checkpoint_seconds of training, but not at every step.

The clock is the trainer's own `time` module, replaced by one that a step hook advances, so no test
waits a minute or depends on the speed of the machine."""

import time
import types

import pytest
import torch
import torch.nn as nn

import gptlab.trainer as trainer_module
from gptlab.checkpoint import load_checkpoint
from gptlab.config import ModelConfig, TrainConfig
from gptlab.data import TokenDataset
from gptlab.events import CheckpointEvent, DoneEvent
from gptlab.trainer import CHECKPOINT_SECONDS, Trainer
from gptlab.training import TrainingRun


class Crash(BaseException):
    """What a kill -9 looks like from inside: nothing after it runs, no checkpoint is saved."""


def config(**overrides) -> TrainConfig:
    base = dict(batch_size=4, max_steps=12, eval_interval=4, eval_batches=1, warmup_steps=0, sample_interval=0,
                device="cpu", seed=3)
    return TrainConfig(**{**base, **overrides})


def data() -> TokenDataset:
    return TokenDataset(torch.arange(2000) % 50, 8)


class Flat(nn.Module):
    """The same loss whatever it learns: after step 0 no evaluation is ever the best."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x, y):
        return None, (self.w * 0 + 1.0).sum()


def saved_lasts(events) -> list[int]:
    return [e.step for e in events if isinstance(e, CheckpointEvent) and e.label == "last"]


def test_last_is_saved_at_every_evaluation_even_when_the_loss_does_not_improve():
    events = list(Trainer(Flat(), config(), data(), save=lambda label, state, metrics: label).run())
    assert [e.step for e in events if isinstance(e, CheckpointEvent) and e.label == "best"] == []
    assert saved_lasts(events) == [4, 8, 12]  # once at the end: the evaluation at 12 already saved it
    assert isinstance(events[-1], DoneEvent) and events[-1].status == "finished"


def test_last_is_saved_every_checkpoint_seconds_between_evaluations(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=time.perf_counter,
                                                                      monotonic=lambda: clock[0]))

    def tick(step):
        clock[0] += 25.0  # each step "takes" 25 s: the default 60 s falls due every third step

    trainer = Trainer(Flat(), config(max_steps=10, eval_interval=10**6), data(),
                      save=lambda label, state, metrics: label, on_step=tick)
    assert trainer.checkpoint_seconds == CHECKPOINT_SECONDS == 60.0
    assert saved_lasts(trainer.run()) == [3, 6, 9, 10]


def test_checkpoint_seconds_none_saves_at_evaluations_only_and_a_bad_value_is_refused():
    trainer = Trainer(Flat(), config(max_steps=6, eval_interval=3), data(), save=lambda *a: "x",
                      checkpoint_seconds=None)
    assert saved_lasts(trainer.run()) == [3, 6]
    with pytest.raises(ValueError, match="checkpoint_seconds must be a number of seconds above 0"):
        Trainer(Flat(), config(), data(), checkpoint_seconds=0)


def test_a_crashed_run_leaves_a_resumable_last_at_its_latest_evaluation(tmp_path, tiny_text):
    (tmp_path / "text.txt").write_text(tiny_text, encoding="utf-8")

    def crash(step):
        if step == 13:
            raise Crash

    model = ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)
    run = TrainingRun.new(model, config(max_steps=100, eval_interval=5, eval_batches=2), tmp_path / "run",
                          data_paths=[tmp_path / "text.txt"], step_hook=crash)
    with pytest.raises(Crash):
        list(run.events())
    last = load_checkpoint(tmp_path / "run" / "last")
    assert last.step == 10 and last.resumable and last.trainer_state()["step"] == 10
    assert not [p.name for p in (tmp_path / "run").iterdir() if ".tmp-" in p.name]  # every save completed


def test_a_real_model_is_saved_with_its_trainer_state_at_each_evaluation(tmp_path, tiny_text):
    (tmp_path / "text.txt").write_text(tiny_text, encoding="utf-8")
    seen = []
    model = ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)
    run = TrainingRun.new(model, config(max_steps=8, eval_interval=4, eval_batches=2), tmp_path / "run",
                          data_paths=[tmp_path / "text.txt"])
    for event in run.events():
        if isinstance(event, CheckpointEvent) and event.label == "last":
            seen.append((event.step, load_checkpoint(event.path).trainer_state()["step"]))
    assert seen == [(4, 4), (8, 8)]
