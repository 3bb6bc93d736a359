"""Experiment tracking: every run's TensorBoard event files, read back with TensorBoard's own reader and
compared with the run's metrics log (a resume rebuilds them, a full disk turns them off, a Hub export
carries them); and trackio, logged into a local project in tmp_path and read back from its database."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from gptlab import hub
from gptlab.cli import EXIT_USAGE, main
from gptlab.events import DoneEvent, EvalEvent, SampleEvent, StepEvent
from gptlab.runfolder import METRICS_FILE, read_events
from gptlab.tracking import (EVAL_SCALARS, SAMPLE_TAG, STEP_SCALARS, TENSORBOARD_DIR, TensorBoardLog, TrackerError,
                             TrackioLog, event_files, scalars, tracked)
from gptlab.training import TrainingRun

ROOT = Path(__file__).resolve().parent.parent


def board(run_dir: Path):
    """TensorBoard's own reader (requirements-dev.txt) over the run's event files."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def board_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = board(run_dir)
    return {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def log_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(run_dir):
        for tag, value in scalars(event).items():
            out.setdefault(tag, []).append((event.step, value))
    return out


def assert_same_scalars(board_values, log_values):
    assert set(board_values) == set(log_values) == set(STEP_SCALARS) | set(EVAL_SCALARS)
    for tag, expected in log_values.items():
        assert [s for s, _ in board_values[tag]] == [s for s, _ in expected], tag  # each step once, in order
        assert [v for _, v in board_values[tag]] == pytest.approx([v for _, v in expected], rel=1e-6), tag


def step(n, loss=2.0, elapsed=None) -> StepEvent:
    return StepEvent(n, loss=loss, lr=1e-3, grad_norm=0.5, tokens_seen=100 * n, tokens_per_sec=1000.0,
                     elapsed=float(n) if elapsed is None else elapsed, eta=None)


def evaluation(n, val=1.5) -> EvalEvent:
    return EvalEvent(n, train_loss=1.4, val_loss=val, train_ppl=4.0, val_ppl=4.5, best_val_loss=val, is_best=True,
                     tokens_seen=100 * n, elapsed=float(n))


# --------------------------------------------------------------------------------------------
# TensorBoard


def test_a_run_writes_its_scalars_as_tensorboard_event_files(tiny_run):
    files = event_files(tiny_run)
    assert len(files) == 1 and socket.gethostname() not in files[0].name  # a push publishes the name
    assert_same_scalars(board_scalars(tiny_run), log_scalars(tiny_run))
    assert [s for s, _ in board_scalars(tiny_run)["eval/val_loss"]] == [0, 10, 20]
    walls = [s.wall_time for s in board(tiny_run).Scalars("train/loss")]
    assert walls == sorted(walls) and walls[-1] - walls[0] < 600


def test_samples_go_to_tensorboards_text_tab(tmp_path):
    sample = "ROMEO:\nBut soft! ``` <b>what</b> light"
    log = TensorBoardLog(tmp_path)
    for event in tracked([step(1), evaluation(1), SampleEvent(1, sample), DoneEvent(1, "finished", "done", 100, 1.0, 1.5)],
                         [log]):
        pass
    texts = board(tmp_path).Tensors(f"{SAMPLE_TAG}/text_summary")
    assert [(t.step, t.tensor_proto.string_val[0].decode()) for t in texts] == [(1, sample)]
    assert log.problem is None


def test_tensorboard_writes_at_evaluations_and_the_end_not_at_steps(tmp_path, monkeypatch):
    from tensorboardX.record_writer import RecordWriter

    flushes = []
    real_flush = RecordWriter.flush
    monkeypatch.setattr(RecordWriter, "flush", lambda self: (flushes.append(1), real_flush(self)))
    log = TensorBoardLog(tmp_path)
    (events,) = event_files(tmp_path)
    header, flushes[:] = events.stat().st_size, []
    started = time.perf_counter()
    for n in range(1, TensorBoardLog.MAX_PENDING):
        log.log(step(n))
    per_step = (time.perf_counter() - started) / (TensorBoardLog.MAX_PENDING - 1)
    assert flushes == [] and events.stat().st_size == header  # a step costs no encoding and no write
    assert per_step < 1e-3, per_step  # a list append, not an encoding (a char-cpu step takes ~50 ms)
    log.log(evaluation(999))
    assert len(flushes) == 1 and len(board_scalars(tmp_path)["train/loss"]) == 999
    for n in range(1000, 1000 + TensorBoardLog.MAX_PENDING):  # a long stretch without evaluations
        log.log(step(n))
    assert len(flushes) == 2  # the memory held is bounded
    log.log(DoneEvent(2000, "finished", "reached max_steps", 200_000, 2000.0, 1.5))
    log.close()
    assert len(flushes) == 4 and len(board_scalars(tmp_path)["train/loss"]) == 1999


def test_a_resume_rebuilds_the_event_files_so_no_step_appears_twice(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    # A crash after step 20 left steps 21-23 in the log and in a second event file; last/ is at step 20.
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        for n in (21, 22, 23):
            f.write(json.dumps(step(n, loss=9.0).as_dict()) + "\n")
    crashed = TensorBoardLog(tmp_path / "crashed", [step(n, loss=9.0) for n in (21, 22, 23)])
    crashed.close()
    shutil.copy(event_files(tmp_path / "crashed")[0], run_dir / TENSORBOARD_DIR / "events.out.tfevents.1.old")

    for _ in TrainingRun.resume(run_dir, max_steps=24).events():
        pass
    values = board_scalars(run_dir)
    assert [s for s, _ in values["train/loss"]] == list(range(1, 25))
    assert 9.0 not in [v for _, v in values["train/loss"]]  # the crashed steps are gone
    assert_same_scalars(values, log_scalars(run_dir))


def test_a_full_disk_turns_tensorboard_off_and_the_run_goes_on(tiny_run, tmp_path, monkeypatch):
    from tensorboardX.record_writer import RecordWriter

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    monkeypatch.setattr(RecordWriter, "flush", full)
    run = TrainingRun.resume(run_dir, max_steps=22)
    events = list(run.events())
    assert events[-1].kind == "done" and events[-1].status == "finished"
    assert [e.step for e in read_events(run_dir) if e.kind == "step"][-2:] == [21, 22]  # the log is the record
    assert "No space left on device" in run.trackers[0].problem and "metrics.jsonl" in run.trackers[0].problem


def test_importing_gptlab_loads_no_tracker_package():
    modules = ["gptlab.training", "gptlab.tracking", "gptlab.report", "gptlab.cli", "gptlab.service", "gptlab.hub"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in ('tensorboardX', 'tensorboard', 'trackio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# The Hub


class RecordingApi:
    def __init__(self):
        self.uploaded, self.upload_kw = {}, None

    def create_repo(self, repo_id, **kw):
        from huggingface_hub import RepoUrl
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kw):
        self.upload_kw, folder = kw, Path(kw["folder_path"])
        self.uploaded = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_export_and_push_carry_the_event_files_for_the_hubs_metrics_tab(tiny_run, tmp_path):
    (events,) = event_files(tiny_run)
    out = hub.export_hf(tiny_run / "best", tmp_path / "hf")
    assert (out / TENSORBOARD_DIR / events.name).read_bytes() == events.read_bytes()

    api = RecordingApi()
    hub.push_to_hub(tiny_run / "best", "alice/tiny", api=api)
    assert api.uploaded[f"{TENSORBOARD_DIR}/{events.name}"] == events.read_bytes()
    assert f"{TENSORBOARD_DIR}/*" in api.upload_kw["delete_patterns"]  # an older push's event files go
    card = api.uploaded["README.md"].decode()
    assert "## Run report: run" in card and "### Hardware" in card and "### Time" in card


# --------------------------------------------------------------------------------------------
# trackio


@pytest.fixture
def fake_trackio(monkeypatch):
    calls = []

    class Run:
        def log(self, metrics, step=None):
            calls.append(("log", dict(metrics), step))

        def finish(self):
            calls.append(("finish",))

    module = types.ModuleType("trackio")
    module.init = lambda **kw: (calls.append(("init", kw)), Run())[1]
    monkeypatch.setitem(sys.modules, "trackio", module)
    return calls


def test_trackio_gets_init_log_and_finish(fake_trackio):
    events = [step(1), evaluation(1), SampleEvent(1, "text"), DoneEvent(1, "finished", "done", 100, 1.0, 1.5)]
    log = TrackioLog("run-1", {"model": {"n_layer": 2}}, resume=True)
    assert list(tracked(events, [log])) == events
    assert log.problem is None
    (_, init), *logs, finish = fake_trackio
    assert init["project"] == "gptlab" and init["name"] == "run-1" and init["resume"] == "allow"
    assert init["config"] == {"model": {"n_layer": 2}}
    assert logs == [("log", scalars(events[0]), 1), ("log", scalars(events[1]), 1)] and finish == ("finish",)


def test_a_failing_trackio_stops_logging_and_the_run_goes_on(fake_trackio):
    log = TrackioLog("run-1", {})
    log._run.log = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("database is locked"))
    log.log(step(1))
    log.log(step(2))
    log.close()
    assert "database is locked" in log.problem


def test_a_trackio_that_cannot_start_is_an_error_before_the_run(fake_trackio):
    sys.modules["trackio"].init = lambda **kw: (_ for _ in ()).throw(RuntimeError("database is locked"))
    with pytest.raises(TrackerError, match=r"trackio could not start \(RuntimeError: database is locked\)"):
        TrackioLog("run-1", {})


def run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def test_tracker_trackio_without_the_package_says_how_to_install_it(tmp_path, tiny_text, monkeypatch):
    monkeypatch.setitem(sys.modules, "trackio", None)  # as if it were not installed
    (tmp_path / "tiny.txt").write_text(tiny_text, encoding="utf-8")
    code, err = run_cli(["train", "--preset", "tiny", "--data", tmp_path / "tiny.txt", "--out", tmp_path / "run",
                         "--tracker", "trackio"])
    assert code == EXIT_USAGE and err.strip().splitlines() == ["error: --tracker trackio needs the trackio package: "
                                                              "pip install trackio"]
    assert not (tmp_path / "run" / METRICS_FILE).exists()  # refused before the run started
    with pytest.raises(TrackerError, match="must be one of"):
        from gptlab.tracking import open_tracker
        open_tracker("wandb", "run", {})


def test_tracker_trackio_logs_the_run_into_a_local_project(tmp_path, tiny_text):
    pytest.importorskip("trackio")
    (tmp_path / "tiny.txt").write_text(tiny_text, encoding="utf-8")
    # trackio reads TRACKIO_DIR when it is imported, so the run and the read-back get a fresh interpreter.
    code = f"""
import json, sys
from gptlab.cli import main
code = main(["train", "--preset", "tiny", "--device", "cpu", "--max-steps", "4", "--eval-interval", "2",
             "--sample-interval", "0", "--data", {str(tmp_path / 'tiny.txt')!r}, "--out", {str(tmp_path / 'run')!r},
             "--tracker", "trackio"])
from trackio.sqlite_storage import SQLiteStorage
print("LOGS=" + json.dumps({{"code": code, "runs": SQLiteStorage.get_runs("gptlab"),
                            "logs": SQLiteStorage.get_logs("gptlab", "run")}}, default=str))
"""
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("LOGS="))[5:])
    assert result["code"] == 0 and result["runs"] == ["run"]
    assert (tmp_path / "trackio").is_dir()
    logged: dict[str, list[tuple[int, float]]] = {}
    for row in result["logs"]:
        for tag in set(STEP_SCALARS) | set(EVAL_SCALARS):
            if tag in row:
                logged.setdefault(tag, []).append((row["step"], row[tag]))
    expected = log_scalars(tmp_path / "run")
    assert set(logged) == set(expected)
    for tag, values in expected.items():
        assert [s for s, _ in logged[tag]] == [s for s, _ in values], tag
        assert [v for _, v in logged[tag]] == pytest.approx([v for _, v in values]), tag
