"""A full disk while saving: the previous checkpoint survives whole, no temporary folder is left,
and the run ends as 'failed' with a sentence that says what to do (the CLI prints it as one line
and exits 1), never a traceback. After space is freed, the run resumes.

The fault is injected where the bytes are written: safetensors' save_model (as gptlab.checkpoint
calls it) or torch.save of the trainer state, each writing part of its file and then raising ENOSPC."""

import contextlib
import errno
import io
import os

import pytest
import torch

import gptlab.checkpoint as checkpoint_module
import gptlab.training as training_module
from gptlab.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from gptlab.cli import main
from gptlab.config import ModelConfig, TrainConfig
from gptlab.events import DoneEvent
from gptlab.runfolder import read_events
from gptlab.training import TrainingRun

MODEL = ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)
FULL = "The disk is full: the checkpoint at step {} could not be saved (the previous one is kept). " \
       "Free some space, then resume."


def train_config(**overrides) -> TrainConfig:
    base = dict(batch_size=4, max_steps=9, eval_interval=3, eval_batches=2, warmup_steps=0, sample_interval=0,
                device="cpu", seed=2)
    return TrainConfig(**{**base, **overrides})


class Disk:
    """Turns full when `full` is set: every write through the patched savers then stops half-way."""

    def __init__(self, monkeypatch):
        self.full = False
        real_save_model, real_torch_save = checkpoint_module.save_model, checkpoint_module.torch.save

        def save_model(model, path, *args, **kwargs):
            self._maybe_fail(path)
            return real_save_model(model, path, *args, **kwargs)

        def torch_save(obj, path, *args, **kwargs):
            self._maybe_fail(path)
            return real_torch_save(obj, path, *args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "save_model", save_model)
        monkeypatch.setattr(checkpoint_module.torch, "save", torch_save)

    def _maybe_fail(self, path):
        if self.full:
            with open(path, "wb") as f:
                f.write(b"\0" * 100)  # what fitted before the disk filled up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def leftovers(run_dir) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture
def text_file(tmp_path, tiny_text):
    path = tmp_path / "text.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


def test_a_full_disk_fails_the_run_with_a_sentence_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                                   text_file):
    disk = Disk(monkeypatch)

    def fill_up(step):
        if step == 6:
            disk.full = True

    run = TrainingRun.new(MODEL, train_config(), tmp_path / "run", data_paths=[text_file], step_hook=fill_up)
    weights_before = None
    events = []
    for event in run.events():
        events.append(event)
        if event.kind == "checkpoint" and event.label == "last" and event.step == 3:
            weights_before = (tmp_path / "run" / "last" / WEIGHTS_FILE).read_bytes()
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.status == "failed" and done.step == 6
    assert done.reason == FULL.format(6)
    last = load_checkpoint(tmp_path / "run" / "last")
    assert last.step == 3 and last.resumable
    assert (tmp_path / "run" / "last" / WEIGHTS_FILE).read_bytes() == weights_before
    assert leftovers(tmp_path / "run") == []
    assert read_events(tmp_path / "run")[-1] == done  # the log says how it ended

    disk.full = False  # space freed
    resumed = TrainingRun.resume(tmp_path / "run")
    assert resumed.trainer.step == 3
    assert list(resumed.events())[-1].status == "finished"
    assert load_checkpoint(tmp_path / "run" / "last").step == 9


@pytest.mark.parametrize("which", ["weights", "trainer state"])
def test_save_checkpoint_on_a_full_disk_leaves_the_old_folder_whole_and_nothing_else(tmp_path, monkeypatch,
                                                                                   text_file, which):
    run = TrainingRun.new(MODEL, train_config(max_steps=3), tmp_path / "run", data_paths=[text_file])
    list(run.events())
    folder = tmp_path / "run" / "last"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = checkpoint_module.save_model if which == "trainer state" else None
    disk = Disk(monkeypatch)
    if real is not None:  # the weights go through; the trainer state fills the disk
        monkeypatch.setattr(checkpoint_module, "save_model", real)
    disk.full = True
    with pytest.raises(ValueError) as failed:
        run._save("last", run.trainer.state_dict(), {})
    assert failed.value.__cause__.errno == errno.ENOSPC and str(failed.value) == FULL.format(3)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert leftovers(tmp_path / "run") == []


def test_the_first_save_on_a_full_disk_says_nothing_was_overwritten(tmp_path, monkeypatch, text_file):
    Disk(monkeypatch).full = True
    run = TrainingRun.new(MODEL, train_config(), tmp_path / "run", data_paths=[text_file])
    with pytest.raises(ValueError, match=r"could not be saved \(nothing was overwritten\). Free some space"):
        list(run.events())  # init/, before the first step
    assert leftovers(tmp_path / "run") == [] and not (tmp_path / "run" / "init").exists()


def test_the_cli_prints_the_one_line_and_exits_1(tmp_path, monkeypatch, text_file):
    disk = Disk(monkeypatch)
    real_events = TrainingRun.events

    def events(self, stop=None, **kwargs):
        for event in real_events(self, stop, **kwargs):
            if event.kind == "checkpoint" and event.label == "last":
                disk.full = True  # the next save fails
            yield event

    monkeypatch.setattr(TrainingRun, "events", events)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", "--preset", "tiny", "--device", "cpu", "--data", str(text_file), "--out",
                     str(tmp_path / "run"), "--max-steps", "9", "--eval-interval", "3", "--sample-interval", "0"])
    assert code == 1
    assert "Traceback" not in err.getvalue() + out.getvalue()
    assert err.getvalue().strip().splitlines()[-1] == "failed: " + FULL.format(6)
    assert load_checkpoint(tmp_path / "run" / "last").step == 3


def test_a_log_that_cannot_be_written_fails_with_a_sentence(tmp_path, monkeypatch, text_file):
    real_open = open

    def open_(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            lines = [0]
            write = f.write

            def write_some(text):
                lines[0] += 1
                if lines[0] > 5:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return write(text)

            f.write = write_some
        return f

    monkeypatch.setattr(training_module, "open", open_, raising=False)
    run = TrainingRun.new(MODEL, train_config(), tmp_path / "run", data_paths=[text_file])
    with pytest.raises(ValueError, match=r"metrics.jsonl could not be written at step \d+ \(No space left on "
                                         r"device\); the last checkpoint is kept. Free some space, then resume."):
        list(run.events())
    assert (tmp_path / "run" / "init" / CONFIG_FILE).is_file()


def test_a_loss_plot_that_cannot_be_drawn_does_not_fail_a_finished_run(tmp_path, monkeypatch, text_file):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(training_module, "save_loss_plot", no_space)
    run = TrainingRun.new(MODEL, train_config(max_steps=3), tmp_path / "run", data_paths=[text_file])
    assert list(run.events())[-1].status == "finished"
    assert torch.is_tensor(load_checkpoint(tmp_path / "run" / "last").trainer_state()["torch_rng"])


@pytest.mark.parametrize("fills_at", [None, 3], ids=["before the first step", "mid-run"])
def test_an_app_run_on_a_full_disk_ends_failed_with_the_sentence_alone(tmp_path, monkeypatch, text_file, fills_at):
    from gptlab.runs import RunRegistry

    disk = Disk(monkeypatch)
    disk.full = fills_at is None
    registry = RunRegistry(tmp_path / "runs")
    registry.step_hook = lambda step: setattr(disk, "full", True) if step == fills_at else None
    run_id = registry.start("alice", model_config=MODEL, train_config=train_config(eval_interval=2),
                            data_paths=[text_file])
    registry.wait(run_id, 60)
    info = registry.get("alice", run_id)
    step = 0 if fills_at is None else 4  # the evaluation after the disk filled up
    kept = "nothing was overwritten" if fills_at is None else "the previous one is kept"
    assert info.status == "failed"
    assert info.reason == f"The disk is full: the checkpoint at step {step} could not be saved ({kept}). " \
                          "Free some space, then resume."
