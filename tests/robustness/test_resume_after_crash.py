"""A run folder left by a crash resumes from its newest complete checkpoint (last/, best/ or step-N/,
by step, then by time), its log is cut back to that step first so every step is logged once, and a
resume into another folder makes that folder a run of its own (its init/ and its history so far)."""

import json
import os
import shutil

import pytest

from gptlab.checkpoint import CONFIG_FILE, load_checkpoint
from gptlab.config import ConfigError, ModelConfig, TrainConfig
from gptlab.events import StepEvent
from gptlab.runfolder import (METRICS_FILE, checkpoint_step, describe_checkpoint, newest_checkpoint, read_events,
                              write_history)
from gptlab.training import TrainingRun

MODEL = ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)


class Crash(BaseException):
    """What a kill -9 looks like from inside: nothing after it runs."""


def train_config(**overrides) -> TrainConfig:
    base = dict(batch_size=4, max_steps=100, eval_interval=5, eval_batches=2, warmup_steps=0, sample_interval=0,
                device="cpu", seed=11)
    return TrainConfig(**{**base, **overrides})


def crashed_run(tmp_path, text, at=13, **train) -> tuple:
    """A run that died right after optimiser step `at`, its events up to there logged."""
    data = tmp_path / "text.txt"
    data.write_text(text, encoding="utf-8")

    def crash(step):
        if step == at:
            raise Crash

    run = TrainingRun.new(MODEL, train_config(**train), tmp_path / "run", data_paths=[data], step_hook=crash)
    with pytest.raises(Crash):
        list(run.events())
    return tmp_path / "run", data


def steps_logged(run_dir) -> list[int]:
    return [e.step for e in read_events(run_dir) if isinstance(e, StepEvent)]


def test_a_crashed_run_resumes_from_its_newest_checkpoint_and_logs_each_step_once(tmp_path, tiny_text):
    run_dir, _ = crashed_run(tmp_path, tiny_text)
    assert steps_logged(run_dir) == list(range(1, 13))  # step 13's hook crashed before its event
    assert newest_checkpoint(run_dir) == run_dir / "last" and checkpoint_step(run_dir / "last") == 10

    run = TrainingRun.resume(run_dir, max_steps=16)
    assert run.resumed_from == run_dir / "last" and run.trainer.step == 10 and run.out_dir == run_dir
    events = list(run.events())
    assert events[0].step == 11 and events[-1].kind == "done" and events[-1].step == 16
    assert steps_logged(run_dir) == list(range(1, 17))
    evals = [e.step for e in read_events(run_dir) if e.kind == "eval"]
    assert evals == [0, 5, 10, 15, 16]


def test_the_newest_checkpoint_may_be_a_step_folder_or_best(tmp_path, tiny_text):
    run_dir, _ = crashed_run(tmp_path, tiny_text, at=13, checkpoint_interval=4)
    assert newest_checkpoint(run_dir) == run_dir / "step-000012"  # step 12 beats last/ at 10
    run = TrainingRun.resume(run_dir, max_steps=14)
    assert run.trainer.step == 12 and run.resumed_from == run_dir / "step-000012"
    list(run.events())
    assert steps_logged(run_dir) == list(range(1, 15))


def test_at_the_same_step_the_later_save_wins_and_incomplete_folders_never_count(tmp_path, tiny_text):
    run_dir, _ = crashed_run(tmp_path, tiny_text, at=8)  # last/ at 5; best/ at 5 too, saved just before
    assert checkpoint_step(run_dir / "best") == checkpoint_step(run_dir / "last") == 5
    os.utime(run_dir / "best" / CONFIG_FILE, (1, 1))
    assert newest_checkpoint(run_dir) == run_dir / "last"
    os.utime(run_dir / "last" / CONFIG_FILE, (0, 0))
    assert newest_checkpoint(run_dir) == run_dir / "best"

    half = run_dir / ".last.tmp-0123456789ab"  # a save cut short: never a candidate
    shutil.copytree(run_dir / "last", half)
    meta = json.loads((half / CONFIG_FILE).read_text())
    (half / CONFIG_FILE).write_text(json.dumps({**meta, "step": 99}))
    broken = run_dir / "step-000050"
    shutil.copytree(run_dir / "last", broken)
    (broken / "model.safetensors").unlink()
    assert newest_checkpoint(run_dir) == run_dir / "best"
    assert checkpoint_step(run_dir / "init") is None  # no trainer state: nothing to resume


def test_a_crash_between_the_renames_of_a_save_leaves_the_old_checkpoint_found(tmp_path, tiny_text):
    run_dir, _ = crashed_run(tmp_path, tiny_text, at=8)
    shutil.rmtree(run_dir / "best")
    os.replace(run_dir / "last", run_dir / ".last.old-0123456789ab")  # moved aside; the new one not yet in
    assert newest_checkpoint(run_dir) == run_dir / ".last.old-0123456789ab"
    run = TrainingRun.resume(run_dir, max_steps=9)
    assert run.trainer.step == 5 and run.out_dir == run_dir
    list(run.events())
    assert load_checkpoint(run_dir / "last").step == 9
    assert "step 5, saved " in describe_checkpoint(run_dir / ".last.old-0123456789ab")


def test_a_run_that_crashed_before_any_checkpoint_is_refused_with_a_sentence(tmp_path, tiny_text):
    run_dir, _ = crashed_run(tmp_path, tiny_text, at=3)
    assert newest_checkpoint(run_dir) is None
    with pytest.raises(ConfigError, match="holds no checkpoint to resume from") as refused:
        TrainingRun.resume(run_dir)
    assert "Start a new run" in str(refused.value) and "config.json is missing" not in str(refused.value)


def test_resuming_into_a_new_folder_gives_it_its_own_history(tmp_path, tiny_text):
    run_dir, _ = crashed_run(tmp_path, tiny_text)
    log_before = (run_dir / METRICS_FILE).read_bytes()
    run = TrainingRun.resume(run_dir, out_dir=tmp_path / "elsewhere", max_steps=12)
    assert run.out_dir == tmp_path / "elsewhere" and run.trainer.step == 10
    list(run.events())
    new = tmp_path / "elsewhere"
    assert steps_logged(new) == list(range(1, 13))
    assert load_checkpoint(new / "last").step == 12 and (new / "init" / CONFIG_FILE).is_file()
    assert (new / "loss.png").is_file()
    assert (run_dir / METRICS_FILE).read_bytes() == log_before  # the source run is left as it was
    assert load_checkpoint(run_dir / "last").step == 10


def test_resuming_into_a_folder_that_holds_something_is_refused(tmp_path, tiny_text):
    run_dir, _ = crashed_run(tmp_path, tiny_text)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty") as refused:
        TrainingRun.resume(run_dir, out_dir=tmp_path / "taken")
    assert "leave out --out" in str(refused.value)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_write_history_cuts_the_log_at_a_step_and_drops_a_half_written_line(tmp_path):
    lines = [{"event": "step", "step": s, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0, "tokens_seen": s,
              "tokens_per_sec": 1.0, "elapsed": 1.0, "eta": None} for s in (1, 2, 3, 4)]
    log = tmp_path / METRICS_FILE
    log.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines) + b'{"event": "st')
    assert write_history(tmp_path, tmp_path, 2) == 3
    assert [e.step for e in read_events(tmp_path)] == [1, 2]
    assert log.read_bytes().endswith(b"\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS_FILE]  # no temporary file left
