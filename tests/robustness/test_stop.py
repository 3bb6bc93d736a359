"""Stop is honoured wherever the time goes: inside an evaluation (between its batches) and inside one
optimiser step (between its micro-batches). The run then ends within about a second, as 'stopped',
at the last completed optimiser step: the partial accumulation is discarded, the random states go
back to where that step began, and last/ is saved from that consistent state, so a resume repeats
the abandoned step exactly."""

import threading
import time

import pytest
import torch

from gptlab.checkpoint import load_checkpoint
from gptlab.config import ModelConfig, TrainConfig
from gptlab.events import CheckpointEvent, DoneEvent, StepEvent
from gptlab.data import TokenDataset
from gptlab.model import GPT
from gptlab.runfolder import read_events
from gptlab.trainer import StopFlag, Trainer
from gptlab.training import TrainingRun

TIMEOUT = 60.0  # only reached when the stop is not honoured
PROMPT = 1.5  # seconds from the stop to the run's end: well under it on an idle machine


def config(**overrides) -> TrainConfig:
    base = dict(batch_size=4, max_steps=10**6, eval_interval=10**6, eval_batches=1, warmup_steps=0,
                sample_interval=0, device="cpu", seed=5)
    return TrainConfig(**{**base, **overrides})


def small_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))


class Watched:
    """A data source that says when the trainer first asks it for `what`, so the test stops the run
    while it is really inside an evaluation or a step."""

    def __init__(self, data, what: str, after: int = 1):
        self.data, self.what, self.after, self.calls = data, what, after, 0
        self.inside = threading.Event()

    def train_batch(self, batch_size, generator=None):
        if self.what == "train":
            self._count()
        return self.data.train_batch(batch_size, generator)

    def eval_batches(self, split, batch_size, *, count=None):
        for batch in self.data.eval_batches(split, batch_size, count=count):
            if self.what == "eval":
                self._count()
            yield batch

    def _count(self):
        self.calls += 1
        if self.calls == self.after:
            self.inside.set()


def run_and_stop(trainer, stop, inside: threading.Event) -> tuple[list, float]:
    """Train in a thread, set the stop flag once the trainer is inside the slow part, and return
    the events and the seconds from the stop to the DoneEvent."""
    events, ended = [], []

    def train():
        for event in trainer.run(stop):
            events.append(event)
        ended.append(time.perf_counter())

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    assert inside.wait(TIMEOUT), "the trainer never reached the slow part"
    time.sleep(0.2)  # well inside it
    stopped_at = time.perf_counter()
    stop.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the run did not end after Stop"
    return events, ended[0] - stopped_at


def test_stop_inside_a_huge_evaluation_ends_the_run_promptly():
    data = TokenDataset(torch.arange(4000) % 64, 16)
    watched = Watched(data, "eval")
    saved = []
    # The step-0 evaluation of 10^5 batches would take minutes.
    trainer = Trainer(small_gpt(), config(eval_batches=10**5), watched,
                      save=lambda label, state, metrics: saved.append((label, state["step"])) or label)
    events, seconds = run_and_stop(trainer, StopFlag(), watched.inside)
    assert seconds < PROMPT, f"the run took {seconds:.2f} s to end after Stop"
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.status == "stopped" and done.step == 0
    assert "stopped by request" in done.reason
    assert saved == [("last", 0)] and trainer.model.training  # the evaluation put train mode back


def test_stop_inside_a_huge_gradient_accumulation_ends_the_run_and_discards_the_partial_step():
    data = TokenDataset(torch.arange(4000) % 64, 16)
    watched = Watched(data, "train")
    model = small_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states = []
    trainer = Trainer(model, config(grad_accum_steps=65_536), watched,
                      save=lambda label, state, metrics: states.append((label, state)) or label)
    rng_before = trainer.data_rng.get_state()
    events, seconds = run_and_stop(trainer, StopFlag(), watched.inside)
    assert seconds < PROMPT, f"the run took {seconds:.2f} s to end after Stop"
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.status == "stopped" and done.step == 0 and done.tokens_seen == 0
    assert not any(isinstance(e, StepEvent) for e in events)
    assert [label for label, _ in states] == ["last"] and states[0][1]["step"] == 0
    assert all(p.grad is None for p in model.parameters())  # the partial accumulation is gone
    assert torch.equal(trainer.data_rng.get_state(), rng_before)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_a_stop_between_micro_batches_resumes_exactly_like_an_uninterrupted_run(tmp_path, tiny_text):
    """Steps of two micro-batches, with dropout (so the global random state matters too); the stop
    lands after the first micro-batch of step 4, and the resumed run repeats step 4 from scratch."""
    (tmp_path / "text.txt").write_text(tiny_text, encoding="utf-8")
    model = ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.1)
    train = config(max_steps=6, grad_accum_steps=2, eval_interval=3, eval_batches=2)

    def losses(run, stop=None):
        return {e.step: e.loss for e in run.events(stop) if isinstance(e, StepEvent)}, run

    full, _ = losses(TrainingRun.new(model, train, tmp_path / "full", data_paths=[tmp_path / "text.txt"]))
    run = TrainingRun.new(model, train, tmp_path / "split", data_paths=[tmp_path / "text.txt"])
    stop = StopFlag()
    run.trainer.data = watched = Watched(run.trainer.data, "train", after=7)  # step 4's first micro-batch
    watched.inside = stop  # the stop is set right there, before the second one is drawn
    first, _ = losses(run, stop)
    assert max(first) == 3
    last = load_checkpoint(tmp_path / "split" / "last")
    assert last.step == 3 and last.trainer_state()["step"] == 3
    done = read_events(tmp_path / "split")[-1]
    assert isinstance(done, DoneEvent) and done.status == "stopped" and done.step == 3
    rest, _ = losses(TrainingRun.resume(tmp_path / "split"))
    assert sorted(rest) == [4, 5, 6]
    for step in range(1, 7):
        assert first.get(step, rest.get(step)) == pytest.approx(full[step], rel=1e-6, abs=1e-6), step


def test_the_stop_flag_can_say_why_and_the_done_event_gives_the_reason():
    stop = StopFlag()
    stop.set("the process received SIGTERM")
    stop.set("a second request")  # the first reason stands
    trainer = Trainer(small_gpt(), config(), TokenDataset(torch.arange(4000) % 64, 16),
                      save=lambda label, state, metrics: label)
    events = list(trainer.run(stop))
    assert isinstance(events[-2], CheckpointEvent) and events[-2].label == "last"
    assert events[-1].status == "stopped"
    assert events[-1].reason == "stopped by request at step 0: the process received SIGTERM"
