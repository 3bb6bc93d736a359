"""The app's process dies mid-training (kill -9, an out-of-memory kill, a Space restart) and starts
again over the same runs folder: the run shows as 'interrupted', distinct from running and stopped,
with a reason that names the step Resume continues from, and resumes from its newest checkpoint,
logging each step once. And the clean way down: stop_all, for the app's SIGTERM handler, stops every
run so it saves last/ and says stopped, and refuses new runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import load_checkpoint
from gptlab.config import ModelConfig, TrainConfig
from gptlab.runfolder import METRICS_FILE, read_events
from gptlab.runs import STATUS_FILE, BusyError, RunError, RunInfo, RunRegistry
from gptlab.views import run_status_markdown

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120.0  # seconds; only reached when something is broken
TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20
LONG = dict(max_steps=100_000, eval_interval=10, eval_batches=2, device="cpu", sample_interval=0)

SERVER = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    from gptlab.config import ModelConfig, TrainConfig
    from gptlab.runs import RunRegistry
    registry = RunRegistry(sys.argv[1])
    run_id = registry.start("alice", model_config=ModelConfig.preset("tiny"),
                            train_config=TrainConfig.preset("tiny", **%r), texts=[%r], name="long")
    print(run_id, flush=True)
    registry.wait(run_id)
""") % (LONG, TEXT)


@pytest.fixture
def registries():
    made = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield made
    for registry in made:  # a failing test must not leave a long run burning the shared cores
        registry.stop_all(TIMEOUT)
    torch.set_num_threads(threads)


def steps(events) -> list[int]:
    return [e.step for e in events if e.kind == "step"]


def test_a_killed_server_shows_its_run_interrupted_and_resumes_it_from_the_newest_checkpoint(tmp_path, registries):
    root = tmp_path / "runs"
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    try:
        run_id = server.stdout.readline().strip()
        assert run_id, server.stderr.read()[-2000:]
        deadline = time.monotonic() + TIMEOUT
        while True:  # two evaluations after step 0, and a few steps past the latest
            events = read_events(root / run_id)
            evals = [e.step for e in events if e.kind == "eval" and e.step > 0]
            if len(evals) >= 2 and max(steps(events)) >= evals[-1] + 5:
                break
            assert time.monotonic() < deadline and server.poll() is None, "the run did not get going"
            time.sleep(0.02)
    finally:
        server.send_signal(signal.SIGKILL)
        server.communicate(timeout=TIMEOUT)
    assert json.loads((root / run_id / STATUS_FILE).read_text())["status"] == "running"
    reached = max(steps(read_events(root / run_id)))

    registry = RunRegistry(root)
    registries.append(registry)
    info = registry.get("alice", run_id)
    checkpoint = load_checkpoint(root / run_id / "last").step
    assert checkpoint < reached and info.step == checkpoint
    assert info.status == "interrupted" and info.resumable and info.ended is not None
    assert info.reason == ("the server stopped during training; Resume continues from the newest checkpoint, "
                           f"at step {checkpoint:,}")
    assert [i.id for i in registry.list("alice")] == [run_id]
    shown = run_status_markdown(info, registry.events("alice", run_id))
    assert shown.startswith(f"**long** · interrupted: the server stopped during training; Resume continues")

    registry.start("alice", resume_id=run_id,
                   train_config=TrainConfig.preset("tiny", **{**LONG, "max_steps": reached + 5}))
    registry.wait(run_id, TIMEOUT)
    info = registry.get("alice", run_id)
    assert info.status == "finished" and info.step == reached + 5
    assert steps(registry.events("alice", run_id)) == list(range(1, reached + 6))  # each step once


def test_an_interrupted_run_without_a_checkpoint_says_it_cannot_be_resumed(tmp_path, registries):
    root = tmp_path / "runs"
    (root / "abc123").mkdir(parents=True)
    info = RunInfo(id="abc123", owner="alice", name="early", status="running", created=time.time() - 5)
    (root / "abc123" / STATUS_FILE).write_text(json.dumps(asdict(info)), encoding="utf-8")
    (root / "abc123" / METRICS_FILE).write_text("", encoding="utf-8")

    registry = RunRegistry(root)
    registries.append(registry)
    info = registry.get("alice", "abc123")
    assert info.status == "interrupted" and "before the run saved its first checkpoint" in info.reason
    with pytest.raises(RunError, match="saved no checkpoint before it ended"):
        registry.start("alice", resume_id="abc123")


def start_long(registry, name) -> str:
    return registry.start("alice", model_config=ModelConfig.preset("tiny"),
                          train_config=TrainConfig.preset("tiny", **LONG), texts=[TEXT], name=name)


def test_stop_all_stops_every_run_cleanly_and_refuses_new_ones(tmp_path, registries):
    registry = RunRegistry(tmp_path / "runs", max_concurrent=2)
    registries.append(registry)
    started = threading.Event()
    registry.step_hook = lambda step: started.set() if step >= 3 else None
    ids = [start_long(registry, "a"), start_long(registry, "b")]
    assert started.wait(TIMEOUT)

    assert registry.stop_all(TIMEOUT) == []
    for run_id in ids:
        info = registry.get("alice", run_id)
        assert info.status == "stopped" and info.reason.endswith(": the server is shutting down")
        assert load_checkpoint(tmp_path / "runs" / run_id / "last").step == info.step
        assert json.loads((tmp_path / "runs" / run_id / STATUS_FILE).read_text())["status"] == "stopped"
    with pytest.raises(BusyError, match="shutting down"):
        start_long(registry, "c")


def test_stop_all_returns_the_runs_it_could_not_wait_for(tmp_path, registries):
    registry = RunRegistry(tmp_path / "runs")
    registries.append(registry)
    held, release = threading.Event(), threading.Event()

    def hold(step):
        if step == 2:
            held.set()
            release.wait(TIMEOUT)

    registry.step_hook = hold
    run_id = start_long(registry, "held")
    assert held.wait(TIMEOUT)
    assert registry.stop_all(timeout=0.2) == [run_id]
    assert registry.get("alice", run_id).status == "running"  # the next start-up marks it interrupted
    release.set()
    registry.wait(run_id, TIMEOUT)
    assert registry.get("alice", run_id).status == "stopped"
