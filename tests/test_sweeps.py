"""SweepQueue: a sweep's runs train one after another in the background, each an ordinary run; the
queue keeps its order, cancel stops the queue and the run in flight, a server restart leaves it
interrupted and Resume continues it, and a sweep lets another browser's refused run go first."""

import json
import time

import pytest

from gptlab.config import ModelConfig
from gptlab.runs import BusyError, RunError
from gptlab.sweeps import SWEEPS_DIR, SweepQueue
from tests.test_runs import LONG, TEXT, TIMEOUT, lab, start, train_config  # noqa: F401  (lab is a fixture)


def points(*learning_rates, **train):
    return [(f"learning_rate={lr:g}", ModelConfig.preset("tiny"), train_config(learning_rate=lr, min_lr=lr / 10, **train))
            for lr in learning_rates]


def finished(queue, owner, sweep_id):
    queue.wait(sweep_id, TIMEOUT * 3)
    info = queue.get(owner, sweep_id)
    assert info.status not in ("queued", "running"), "the sweep did not end in time"
    return info


def wait_for(condition, what: str):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_sweep_trains_its_runs_in_order_as_ordinary_runs(lab):
    registry = lab.registry()
    queue = SweepQueue(registry, poll_s=0.05)
    sweep_id = queue.submit("alice", points(1e-3, 3e-3, 1e-2), texts=[TEXT], name="lr")
    info = finished(queue, "alice", sweep_id)
    assert info.status == "finished" and info.done == 3
    runs = [registry.get("alice", p.run_id) for p in info.points]
    assert [r.train["learning_rate"] for r in runs] == [1e-3, 3e-3, 1e-2]
    assert [r.status for r in runs] == ["finished"] * 3 and [p.status for p in info.points] == ["finished"] * 3
    assert runs[0].created < runs[1].created < runs[2].created
    assert runs[0].name == "learning_rate=0.001 · lr" and all(r.sweep == sweep_id for r in runs)
    assert queue.list("alice")[0].id == sweep_id and queue.list("bob") == []
    with pytest.raises(RunError, match="no sweep"):
        queue.get("bob", sweep_id)


def test_cancel_stops_the_run_in_flight_and_the_rest_of_the_queue(lab):
    registry = lab.registry()
    gate = lab.gate(at=2)
    queue = SweepQueue(registry, poll_s=0.05)
    sweep_id = queue.submit("alice", points(1e-3, 3e-3, max_steps=LONG), texts=[TEXT])
    gate.wait_until(1)
    assert queue.cancel("alice", sweep_id)
    gate.release.set()
    info = finished(queue, "alice", sweep_id)
    assert info.status == "cancelled"
    assert [p.status for p in info.points] == ["stopped", "cancelled"]
    assert registry.get("alice", info.points[0].run_id).status == "stopped"
    assert not queue.cancel("alice", sweep_id)  # nothing left to cancel


def test_a_restart_leaves_the_sweep_interrupted_and_resume_continues_it(lab):
    root = lab.tmp_path / "runs"
    first = lab.registry(root)
    queue = SweepQueue(first, poll_s=0.05)
    sweep_id = queue.submit("alice", points(1e-3, 3e-3, max_steps=4, eval_interval=2), texts=[TEXT])
    info = finished(queue, "alice", sweep_id)
    # As if the server had died while the first run trained: the sweep and that run left 'running'.
    record = json.loads((root / SWEEPS_DIR / f"{sweep_id}.json").read_text())
    record["status"] = "running"
    record["points"][0]["status"], record["points"][1]["status"] = "running", "pending"
    (root / SWEEPS_DIR / f"{sweep_id}.json").write_text(json.dumps(record))
    status = json.loads((root / info.points[0].run_id / "status.json").read_text())
    status.update(status="running", ended=None)
    (root / info.points[0].run_id / "status.json").write_text(json.dumps(status))
    second_run = info.points[1].run_id

    again = lab.registry(root)
    restarted = SweepQueue(again, poll_s=0.05)
    interrupted = restarted.get("alice", sweep_id)
    assert interrupted.status == "interrupted" and "Resume continues it" in interrupted.reason
    assert [p.status for p in interrupted.points] == ["interrupted", "pending"]
    restarted.resume("alice", sweep_id)
    resumed = finished(restarted, "alice", sweep_id)
    assert resumed.status == "finished" and [p.status for p in resumed.points] == ["finished", "finished"]
    assert resumed.points[0].run_id == info.points[0].run_id  # the same run, resumed
    assert resumed.points[1].run_id != second_run  # a pending point is trained afresh
    with pytest.raises(RunError, match="Every run of that sweep has ended"):
        restarted.resume("alice", sweep_id)


def test_a_sweep_lets_another_browsers_refused_run_go_first(lab):
    registry = lab.registry(max_concurrent=1)
    gate = lab.gate(at=2)
    queue = SweepQueue(registry, poll_s=0.05, yield_s=30)
    sweep_id = queue.submit("alice", points(1e-3, 3e-3), texts=[TEXT])
    gate.wait_until(1)
    with pytest.raises(BusyError):
        start(registry, owner="bob")  # refused: the sweep's first run holds the only slot
    gate.release.set()
    wait_for(lambda: queue.get("alice", sweep_id).points[0].status == "finished", "the first run to end")
    time.sleep(0.5)
    assert queue.get("alice", sweep_id).points[1].status == "pending"  # it waits for bob
    bob = start(registry, owner="bob")
    registry.wait(bob, TIMEOUT)
    info = finished(queue, "alice", sweep_id)
    assert info.status == "finished"
    assert registry.get("alice", info.points[1].run_id).created > registry.get("bob", bob).created


def test_one_sweep_at_a_time_per_browser(lab):
    registry = lab.registry()
    gate = lab.gate(at=2)
    queue = SweepQueue(registry, poll_s=0.05)
    queue.submit("alice", points(1e-3, 3e-3, max_steps=LONG), texts=[TEXT])
    gate.wait_until(1)
    with pytest.raises(BusyError, match="already has a sweep"):
        queue.submit("alice", points(1e-3, 3e-3), texts=[TEXT])
    for sweep in queue.list("alice"):
        queue.cancel("alice", sweep.id)
    gate.release.set()


def test_the_runs_of_a_sweep_count_as_one_in_the_clean_up(lab):
    registry = lab.registry(keep_per_owner=2)
    queue = SweepQueue(registry, poll_s=0.05)
    info = finished(queue, "alice", queue.submit("alice", points(1e-3, 2e-3, 3e-3, max_steps=2), texts=[TEXT]))
    start(registry)  # a new run cleans up: the sweep's three runs are one group, so all stay
    assert all(registry.get("alice", p.run_id) for p in info.points)


def test_a_sweep_whose_runs_are_all_gone_is_forgotten(lab):
    registry = lab.registry()
    queue = SweepQueue(registry, poll_s=0.05)
    info = finished(queue, "alice", queue.submit("alice", points(1e-3, 2e-3, max_steps=2), texts=[TEXT]))
    assert queue.cleanup() == []
    for p in info.points:
        registry.delete("alice", p.run_id)
    assert queue.cleanup() == [info.id] and queue.list("alice") == []
