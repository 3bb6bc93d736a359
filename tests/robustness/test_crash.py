"""A real `python -m gptlab train` killed mid-run: after SIGKILL, `--resume RUN_FOLDER` finds the
newest checkpoint, says which (its step and when it was saved) and continues, and the log then holds
each step once; after SIGTERM or Ctrl-C the run saves last/ at the step it reached, says it was
stopped by the signal, and exits 128 + the signal's number.

The model is the tiny preset on one thread, evaluated every 25 steps, so each step takes a few
milliseconds and a crash loses well under a second of training."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gptlab.checkpoint import CONFIG_FILE, load_checkpoint
from gptlab.runfolder import METRICS_FILE, checkpoint_step, newest_checkpoint

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120.0  # seconds; only reached when something is broken
EVAL_INTERVAL = 25
TRAIN = ["--preset", "tiny", "--device", "cpu", "--max-steps", "100000", "--eval-interval", str(EVAL_INTERVAL),
         "--eval-batches", "2", "--sample-interval", "0"]


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "gptlab", "train", *map(str, args)]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def log_lines(run_dir: Path) -> list[dict]:
    """The complete lines of the run's log (the process may be writing the next one)."""
    try:
        data = (run_dir / METRICS_FILE).read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line]


def steps(lines) -> list[int]:
    return [line["step"] for line in lines if line["event"] == "step"]


def start_training(tmp_path, tiny_text, evaluations: int) -> tuple[subprocess.Popen, Path]:
    """A training process, once its log shows `evaluations` evaluations after step 0 and a few steps
    past the latest, so a kill lands between two checkpoints."""
    data = tmp_path / "tiny.txt"
    data.write_text(tiny_text * 4, encoding="utf-8")
    run_dir = tmp_path / "run"
    process = subprocess.Popen(cli("--data", data, "--out", run_dir, *TRAIN), cwd=REPO, env=env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while True:
        lines = log_lines(run_dir)
        evals = [line["step"] for line in lines if line["event"] == "eval" and line["step"] > 0]
        if len(evals) >= evaluations and max(steps(lines)) >= evals[-1] + EVAL_INTERVAL // 2:
            return process, run_dir
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"training did not get going (exit {process.returncode}):\n{err[-2000:]}")
        time.sleep(0.02)


def test_after_sigkill_resume_continues_from_the_newest_checkpoint_and_logs_each_step_once(tmp_path, tiny_text):
    process, run_dir = start_training(tmp_path, tiny_text, evaluations=3)
    process.send_signal(signal.SIGKILL)
    killed_at = time.time()
    process.communicate(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL

    reached = max(steps(log_lines(run_dir)))
    newest = newest_checkpoint(run_dir)
    assert newest is not None, sorted(p.name for p in run_dir.iterdir())
    resumed_from = checkpoint_step(newest)
    assert reached - EVAL_INTERVAL < resumed_from < reached  # at most one evaluation interval lost
    lost = killed_at - (newest / CONFIG_FILE).stat().st_mtime
    print(f"\nSIGKILL: step reached {reached}, resumed from {resumed_from} ({newest.name}/), "
          f"{lost:.2f} s of training lost")

    target = reached + 10
    done = subprocess.run(cli("--resume", run_dir, "--max-steps", target), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    said = re.search(r"resuming from (\S+)/ \(step (\d+), saved \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)", done.stderr)
    assert said and said.group(1) == newest.name and int(said.group(2)) == resumed_from, done.stderr[-2000:]
    assert f"finished: reached max_steps ({target})" in done.stdout

    lines = log_lines(run_dir)
    assert steps(lines) == list(range(1, target + 1))  # each step once, none missing
    evals = [line["step"] for line in lines if line["event"] == "eval"]
    assert evals == sorted(set(evals)) and evals[-1] == target
    assert load_checkpoint(run_dir / "last").step == target


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_last_at_the_step_reached_and_exits_non_zero(tmp_path, tiny_text, sig):
    process, run_dir = start_training(tmp_path, tiny_text, evaluations=1)
    process.send_signal(sig)
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err

    lines = log_lines(run_dir)
    done = lines[-1]
    reached = max(steps(lines))
    assert done["event"] == "done" and done["status"] == "stopped" and done["step"] == reached
    assert done["reason"] == f"stopped by request at step {reached}: the process was asked to stop by {sig.name}"
    assert load_checkpoint(run_dir / "last").step == reached and load_checkpoint(run_dir / "last").resumable
    assert f"stopped: stopped by request at step {reached}" in out and f"--resume {run_dir}" in out
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no save was cut short
