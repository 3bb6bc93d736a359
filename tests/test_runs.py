"""RunRegistry: runs train in background threads and are observed only through the registry.

A run's status moves from running to finished/stopped/failed and is never left 'running'; its
events can be followed incrementally; a stop ends it after the optimiser step in progress; runs
are invisible to other owners (a foreign id reads exactly like an unknown one); the concurrency
limit, resuming, a server restart and the clean-up of old runs behave as the app relies on.

Threads are held at a chosen optimiser step by a gate (the registry's step hook) wherever a test
needs a run to be 'running' at a known point, so nothing depends on timing."""

import json
import secrets
import threading
import time
from dataclasses import asdict

import pytest
import torch

from gptlab.checkpoint import load_checkpoint
from gptlab.config import ModelConfig, TrainConfig
from gptlab.data import DataError, TextTooShortError
from gptlab.events import DoneEvent, EvalEvent, StepEvent
from gptlab.runfolder import METRICS_FILE
from gptlab.runs import STATUS_FILE, BusyError, RunError, RunInfo, RunRegistry
from gptlab.training import TrainingRun

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20  # ~3k chars
TIMEOUT = 30.0  # seconds; only reached when something is broken
LONG = 100_000  # max_steps of a run that only ends by being stopped


def train_config(**overrides) -> TrainConfig:
    base = dict(max_steps=6, eval_interval=3, device="cpu", sample_interval=0)
    return TrainConfig.preset("tiny", **{**base, **overrides})


def start(registry, owner="alice", texts=(TEXT,), name="", **train) -> str:
    return registry.start(owner, model_config=ModelConfig.preset("tiny"), train_config=train_config(**train),
                          texts=list(texts), name=name)


def finish(registry, owner, run_id) -> RunInfo:
    registry.wait(run_id, TIMEOUT)
    info = registry.get(owner, run_id)
    assert info.status != "running", "the training thread did not end in time"
    return info


def status_on_disk(registry, run_id) -> dict:
    return json.loads((registry.root / run_id / STATUS_FILE).read_text(encoding="utf-8"))


def error_text(excinfo, run_id) -> str:
    return str(excinfo.value).replace(repr(run_id), "<id>")


class Gate:
    """A step hook that holds every training thread right after optimiser step `at` (before that
    step's events are logged), until the test releases it."""

    def __init__(self, at: int):
        self.at, self.reached, self.release = at, threading.Event(), threading.Event()
        self.arrived, self._count = 0, threading.Lock()

    def __call__(self, step: int) -> None:
        if step == self.at:
            with self._count:
                self.arrived += 1
            self.reached.set()
            self.release.wait(TIMEOUT)

    def wait_until(self, count: int = 1) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.arrived < count:
            assert time.monotonic() < deadline, f"only {self.arrived} of {count} run(s) reached step {self.at}"
            self.reached.wait(0.05)


class Lab:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.registries: list[RunRegistry] = []
        self.gates: list[Gate] = []

    def registry(self, root=None, **kwargs) -> RunRegistry:
        registry = RunRegistry(root or self.tmp_path / "runs", **kwargs)
        self.registries.append(registry)
        return registry

    def gate(self, at: int) -> Gate:
        """A gate on the runs that every registry made so far starts from now on."""
        gate = Gate(at)
        for registry in self.registries:
            registry.step_hook = gate
        self.gates.append(gate)
        return gate

    def close(self) -> None:
        # A failing test must not leave a LONG run burning the shared cores for the rest of the suite.
        for registry in self.registries:
            for stop in list(registry._stops.values()):
                stop.set()
        for gate in self.gates:
            gate.release.set()
        for registry in self.registries:
            for thread in list(registry._threads.values()):
                thread.join(TIMEOUT)


@pytest.fixture
def lab(tmp_path):
    torch.manual_seed(0)
    # Tiny models gain nothing from intra-op threads, and on busy shared cores their spin-waiting
    # made these tests up to 7x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lab = Lab(tmp_path)
    yield lab
    lab.close()
    torch.set_num_threads(threads)


def fake_run(registry, owner, *, created, status="finished", ended=None, run_id=None) -> str:
    """A run folder with only a status file: enough for listing and clean-up, and fast."""
    run_id = run_id or secrets.token_hex(8)
    (registry.root / run_id).mkdir(parents=True)
    ended = ended if ended is not None else (None if status == "running" else created + 1)
    info = RunInfo(id=run_id, owner=owner, name=run_id, status=status, created=created, ended=ended)
    (registry.root / run_id / STATUS_FILE).write_text(json.dumps(asdict(info)), encoding="utf-8")
    return run_id


# --------------------------------------------------------------------------------------------
# A run in the background


def test_a_run_trains_in_the_background_and_ends_finished(lab):
    registry = lab.registry()
    gate = lab.gate(at=2)
    run_id = start(registry, name="my run")

    gate.wait_until(1)  # the caller got its id back while the thread is mid-training
    assert registry.get("alice", run_id).status == "running"
    assert status_on_disk(registry, run_id)["status"] == "running"
    assert registry.active_count() == 1
    gate.release.set()

    info = finish(registry, "alice", run_id)
    assert info.status == "finished" and "max_steps" in info.reason
    assert info.step == 6 and info.ended is not None and info.ended >= info.created
    assert info.best_val_loss is not None and info.name == "my run"
    assert info.model["n_layer"] == 2 and info.train["max_steps"] == 6 and info.data["characters"] == len(TEXT)
    assert status_on_disk(registry, run_id)["status"] == "finished"
    assert registry.active_count() == 0
    folder = registry.folder("alice", run_id)
    assert folder == registry.root / run_id
    assert {"init", "best", "last", METRICS_FILE, STATUS_FILE} <= {p.name for p in folder.iterdir()}


def test_events_are_the_metrics_log_in_order(lab):
    registry = lab.registry()
    run_id = start(registry)
    finish(registry, "alice", run_id)

    events = registry.events("alice", run_id)
    log = [json.loads(line) for line in (registry.root / run_id / METRICS_FILE).read_text().splitlines()]
    assert [e.as_dict() for e in events] == log
    assert isinstance(events[0], EvalEvent) and events[0].step == 0
    assert isinstance(events[-1], DoneEvent) and events[-1].status == "finished" and events[-1].step == 6
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events if isinstance(e, EvalEvent)] == [0, 3, 6]
    steps = [e.step for e in events]
    assert steps == sorted(steps)
    assert registry.events("alice", run_id, start=len(events) - 1) == events[-1:]
    assert registry.events("alice", run_id, start=len(events)) == []


def test_an_incremental_observer_sees_every_event_exactly_once(lab):
    registry = lab.registry()
    gate = lab.gate(at=3)
    run_id = start(registry, max_steps=8)

    seen = []
    gate.wait_until(1)
    seen += registry.events("alice", run_id, start=len(seen))
    assert seen and isinstance(seen[0], EvalEvent) and seen[0].step == 0
    assert registry.events("alice", run_id, start=len(seen)) == []  # nothing new while held
    gate.release.set()

    deadline = time.monotonic() + TIMEOUT
    while True:  # the status is read first, so the read after it ends holds everything
        running = registry.get("alice", run_id).status == "running"
        seen += registry.events("alice", run_id, start=len(seen))
        if not running:
            break
        assert time.monotonic() < deadline, "the run did not end in time"
        time.sleep(0.01)
    registry.wait(run_id, TIMEOUT)

    assert seen == registry.events("alice", run_id)
    assert [e.step for e in seen if isinstance(e, StepEvent)] == list(range(1, 9))
    assert isinstance(seen[-1], DoneEvent) and sum(isinstance(e, DoneEvent) for e in seen) == 1


def test_events_of_a_run_without_a_log_yet_are_empty(lab):
    registry = lab.registry()
    run_id = fake_run(registry, "alice", created=time.time())
    assert registry.events("alice", run_id) == []


# --------------------------------------------------------------------------------------------
# Stopping


def test_stop_ends_a_long_run_after_the_step_in_progress(lab):
    registry = lab.registry()
    gate = lab.gate(at=3)
    run_id = start(registry, max_steps=LONG, eval_interval=LONG)
    gate.wait_until(1)

    assert registry.stop("alice", run_id) is True
    gate.release.set()
    began = time.monotonic()
    info = finish(registry, "alice", run_id)
    assert time.monotonic() - began < 10

    assert info.status == "stopped" and info.step == 3 and "stopped by request" in info.reason
    events = registry.events("alice", run_id)
    assert isinstance(events[-1], DoneEvent) and events[-1].status == "stopped" and events[-1].step == 3
    assert max(e.step for e in events) == 3  # not one optimiser step more
    last = load_checkpoint(registry.root / run_id / "last")
    assert last.step == 3 and last.resumable
    assert info.resumable
    assert TrainingRun.resume(registry.root / run_id).trainer.step == 3

    assert registry.stop("alice", run_id) is False  # already stopped


def test_stop_of_a_free_running_run_is_prompt(lab):
    registry = lab.registry()
    run_id = start(registry, max_steps=LONG, eval_interval=LONG)
    deadline = time.monotonic() + TIMEOUT
    while not any(isinstance(e, StepEvent) for e in registry.events("alice", run_id)):
        assert time.monotonic() < deadline, "the run made no step in time"
        time.sleep(0.01)

    assert registry.stop("alice", run_id) is True
    began = time.monotonic()
    info = finish(registry, "alice", run_id)
    assert time.monotonic() - began < 10
    assert info.status == "stopped" and 0 < info.step < LONG
    assert (registry.root / run_id / "last").is_dir()


def test_stop_of_a_finished_run_returns_false(lab):
    registry = lab.registry()
    run_id = start(registry, max_steps=2)
    finish(registry, "alice", run_id)
    assert registry.stop("alice", run_id) is False
    assert registry.get("alice", run_id).status == "finished"


# --------------------------------------------------------------------------------------------
# Owners


def test_other_owners_cannot_see_or_touch_a_run(lab):
    registry = lab.registry()
    run_id = start(registry, max_steps=2)
    finish(registry, "alice", run_id)
    unknown = "0" * len(run_id)
    with pytest.raises(RunError) as missing:
        registry.get("bob", unknown)
    expected = error_text(missing, unknown)

    actions = {
        "get": lambda: registry.get("bob", run_id),
        "events": lambda: registry.events("bob", run_id),
        "stop": lambda: registry.stop("bob", run_id),
        "folder": lambda: registry.folder("bob", run_id),
        "resume": lambda: registry.start("bob", resume_id=run_id, train_config=train_config(max_steps=4)),
    }
    for name, action in actions.items():
        with pytest.raises(RunError) as foreign:
            action()
        assert type(foreign.value) is RunError, name
        assert error_text(foreign, run_id) == expected, name  # a foreign id reads like an unknown one
    assert registry.list("bob") == []
    assert registry.get("alice", run_id).status == "finished"  # bob's resume changed nothing
    assert len(registry.events("alice", run_id)) > 0


def test_list_shows_only_the_owners_runs_newest_first(lab):
    registry = lab.registry()
    first = start(registry, max_steps=2)
    finish(registry, "alice", first)
    bobs = start(registry, owner="bob", max_steps=2)
    finish(registry, "bob", bobs)
    second = start(registry, max_steps=2)
    finish(registry, "alice", second)

    assert [i.id for i in registry.list("alice")] == [second, first]
    assert [i.id for i in registry.list("bob")] == [bobs]
    assert registry.list("carol") == []
    assert all(i.owner == "alice" for i in registry.list("alice"))


@pytest.mark.parametrize("run_id", ["../x", "", "a/b", ".", "..", "/x", "x/../x", "x\x00", " x", None])
def test_odd_run_ids_are_unknown_runs_and_never_reach_outside_the_root(lab, run_id):
    registry = lab.registry()
    # A status file outside the root, owned by the caller: '../x' must not find it.
    outside = registry.root.parent / "x"
    outside.mkdir(exist_ok=True)
    (outside / STATUS_FILE).write_text(json.dumps(asdict(RunInfo(id="x", owner="alice", name="x", status="finished",
                                                                  created=1.0, ended=2.0))), encoding="utf-8")
    (outside / METRICS_FILE).write_text('{"event": "done", "step": 0}\n', encoding="utf-8")

    actions = [lambda: registry.get("alice", run_id), lambda: registry.folder("alice", run_id),
               lambda: registry.events("alice", run_id), lambda: registry.stop("alice", run_id)]
    if run_id is not None:  # resume_id=None means a new run
        actions.append(lambda: registry.start("alice", resume_id=run_id, train_config=train_config()))
    for action in actions:
        with pytest.raises(RunError, match="There is no run"):
            action()
    assert list(registry.root.iterdir()) == []


def test_a_run_needs_an_owner(lab):
    registry = lab.registry()
    with pytest.raises(RunError, match="owner"):
        start(registry, owner="")
    assert list(registry.root.iterdir()) == []


def test_owner_tokens_are_compared_safely_whatever_their_characters(lab):
    registry = lab.registry()
    run_id = fake_run(registry, "alice", created=time.time())
    other = fake_run(registry, "zoë", created=time.time())
    assert [i.id for i in registry.list("zoë")] == [other]
    assert [i.id for i in registry.list("alice")] == [run_id]
    with pytest.raises(RunError):
        registry.get("zoë", run_id)


# --------------------------------------------------------------------------------------------
# Concurrency


def test_one_run_at_a_time_when_the_limit_is_one(lab):
    registry = lab.registry(max_concurrent=1)
    gate = lab.gate(at=1)
    first = start(registry, max_steps=2)
    gate.wait_until(1)

    for owner in ("alice", "bob"):  # the limit is the server's, not the owner's
        with pytest.raises(BusyError) as busy:
            start(registry, owner=owner, max_steps=2)
        assert isinstance(busy.value, ValueError)
        assert "already training 1 model" in str(busy.value) and "Try again" in str(busy.value)
    assert [p.name for p in registry.root.iterdir()] == [first]  # the refused starts left nothing behind

    gate.release.set()
    assert finish(registry, "alice", first).status == "finished"
    second = start(registry, owner="bob", max_steps=2)
    assert finish(registry, "bob", second).status == "finished"


def test_two_runs_at_once_when_the_limit_is_two(lab):
    registry = lab.registry(max_concurrent=2)
    gate = lab.gate(at=1)
    a = start(registry, max_steps=2)
    b = start(registry, owner="bob", max_steps=2)
    gate.wait_until(2)  # both threads are training at the same time
    assert registry.active_count() == 2
    with pytest.raises(BusyError, match="already training 2 model"):
        start(registry, owner="carol", max_steps=2)

    gate.release.set()
    assert finish(registry, "alice", a).status == "finished"
    assert finish(registry, "bob", b).status == "finished"
    assert registry.active_count() == 0


def crash(step: int) -> None:
    raise ZeroDivisionError("division by zero")


def test_a_crashed_run_frees_its_slot(lab):
    registry = lab.registry(max_concurrent=1)
    registry.step_hook = crash
    crashed = start(registry)
    assert finish(registry, "alice", crashed).status == "failed"
    registry.step_hook = None
    run_id = start(registry, max_steps=2)
    assert finish(registry, "alice", run_id).status == "finished"


# --------------------------------------------------------------------------------------------
# Resuming


def stopped_run(lab, registry, at=3) -> str:
    gate = lab.gate(at=at)
    run_id = start(registry, max_steps=LONG, eval_interval=3)
    gate.wait_until(1)
    registry.stop("alice", run_id)
    gate.release.set()
    assert finish(registry, "alice", run_id).status == "stopped"
    return run_id


def test_resume_continues_the_same_run_to_the_new_max_steps(lab):
    registry = lab.registry()
    run_id = stopped_run(lab, registry, at=3)
    before = registry.events("alice", run_id)

    resumed = registry.start("alice", resume_id=run_id, train_config=train_config(max_steps=7))
    assert resumed == run_id
    info = finish(registry, "alice", run_id)
    assert info.status == "finished" and info.step == 7 and info.ended is not None
    assert [i.id for i in registry.list("alice")] == [run_id]  # the same run, not a new one
    assert [p.name for p in registry.root.iterdir()] == [run_id]

    events = registry.events("alice", run_id)
    assert events[:len(before)] == before  # the log is continued, not rewritten
    new = events[len(before):]
    assert [e.step for e in new if isinstance(e, StepEvent)] == [4, 5, 6, 7]
    assert not any(isinstance(e, EvalEvent) and e.step == 0 for e in new)  # no second step-0 evaluation
    assert isinstance(new[-1], DoneEvent) and new[-1].status == "finished" and new[-1].step == 7
    assert load_checkpoint(registry.root / run_id / "last").step == 7


def test_resume_records_the_new_limits_in_the_status(lab):
    registry = lab.registry()
    run_id = stopped_run(lab, registry, at=2)
    registry.start("alice", resume_id=run_id, train_config=train_config(max_steps=4))
    info = finish(registry, "alice", run_id)
    assert info.step == 4
    assert info.train["max_steps"] == 4


def test_resuming_a_running_run_is_refused(lab):
    registry = lab.registry(max_concurrent=2)  # so the refusal is not the concurrency limit
    gate = lab.gate(at=1)
    run_id = start(registry, max_steps=2)
    gate.wait_until(1)
    with pytest.raises(RunError, match="still training") as refused:
        registry.start("alice", resume_id=run_id, train_config=train_config(max_steps=4))
    assert not isinstance(refused.value, BusyError)
    gate.release.set()
    info = finish(registry, "alice", run_id)
    assert info.status == "finished" and info.step == 2


# --------------------------------------------------------------------------------------------
# Failures


def test_a_crash_in_training_ends_as_failed_with_the_reason(lab):
    registry = lab.registry()

    def out_of_memory(step):
        if step == 3:
            raise RuntimeError("simulated out of memory")

    registry.step_hook = out_of_memory
    run_id = start(registry)
    info = finish(registry, "alice", run_id)
    assert info.status == "failed"
    assert "RuntimeError" in info.reason and "simulated out of memory" in info.reason
    assert info.step == 2 and info.ended is not None
    assert status_on_disk(registry, run_id)["status"] == "failed"
    assert registry.active_count() == 0
    assert registry.stop("alice", run_id) is False
    assert [e.step for e in registry.events("alice", run_id) if isinstance(e, StepEvent)] == [1, 2]


def test_a_crash_before_the_first_event_ends_as_failed(lab, monkeypatch):
    registry = lab.registry()

    def events(self, stop=None):
        raise OSError("disk full")
        yield  # a generator, like the real one

    monkeypatch.setattr(TrainingRun, "events", events)
    run_id = start(registry)
    info = finish(registry, "alice", run_id)
    assert info.status == "failed" and "OSError: disk full" in info.reason
    assert registry.events("alice", run_id) == []


def test_resuming_a_run_without_a_checkpoint_is_refused_clearly(lab):
    registry = lab.registry()
    registry.step_hook = crash  # at step 1: before the first checkpoint worth resuming from
    run_id = start(registry)
    assert finish(registry, "alice", run_id).status == "failed"
    registry.step_hook = None
    with pytest.raises(RunError, match="checkpoint") as refused:
        registry.start("alice", resume_id=run_id, train_config=train_config(max_steps=4))
    assert str(registry.root) not in str(refused.value)


# --------------------------------------------------------------------------------------------
# Bad input fails in the caller's thread and leaves nothing behind


@pytest.mark.parametrize("case", ["too short", "missing file", "binary file", "context too long"])
def test_bad_input_fails_at_start_and_creates_no_run(lab, case):
    registry = lab.registry()
    kwargs = dict(model_config=ModelConfig.preset("tiny"), train_config=train_config())
    if case == "too short":
        kwargs["texts"], error = ["far too short"], TextTooShortError
    elif case == "missing file":
        kwargs["data_paths"], error = [lab.tmp_path / "nowhere.txt"], DataError
    elif case == "binary file":
        path = lab.tmp_path / "data.txt"
        path.write_bytes(b"\x00\x01\x02" * 100)
        kwargs["data_paths"], error = [path], DataError
    else:
        kwargs["model_config"], kwargs["texts"], error = ModelConfig.preset("tiny", block_size=4096), [TEXT], \
            TextTooShortError
    with pytest.raises(error) as failed:
        registry.start("alice", **kwargs)
    assert isinstance(failed.value, ValueError) and str(failed.value)
    assert list(registry.root.iterdir()) == []
    assert registry.list("alice") == [] and registry.active_count() == 0


def test_a_run_from_an_uploaded_file_resumes_after_the_upload_is_gone(lab):
    registry = lab.registry()
    gate = lab.gate(at=2)
    upload = lab.tmp_path / "upload" / "data.txt"  # uploads are temporary files
    upload.parent.mkdir()
    upload.write_text(TEXT, encoding="utf-8")
    run_id = registry.start("alice", model_config=ModelConfig.preset("tiny"),
                            train_config=train_config(max_steps=LONG), data_paths=[upload])
    gate.wait_until(1)
    registry.stop("alice", run_id)
    gate.release.set()
    info = finish(registry, "alice", run_id)
    assert info.status == "stopped" and info.data["characters"] == len(TEXT)
    assert [p.rsplit("/", 1)[-1].endswith("data.txt") for p in info.data["sources"]] == [True]

    upload.unlink()
    registry.start("alice", resume_id=run_id, train_config=train_config(max_steps=4))
    info = finish(registry, "alice", run_id)
    assert info.status == "finished" and info.step == 4


# --------------------------------------------------------------------------------------------
# A server restart


def test_a_run_left_running_by_a_restart_is_marked_interrupted(lab):
    root = lab.tmp_path / "runs"
    first = lab.registry(root)
    interrupted = fake_run(first, "alice", created=time.time() - 60, status="running")
    done = fake_run(first, "alice", created=time.time() - 30, status="finished")

    second = lab.registry(root)
    info = second.get("alice", interrupted)
    assert info.status == "interrupted" and "server stopped during training" in info.reason
    assert info.ended is not None and info.resumable
    assert second.get("alice", done).status == "finished"
    assert status_on_disk(second, interrupted)["status"] == "interrupted"


def test_a_run_interrupted_by_a_restart_can_be_resumed(lab):
    root = lab.tmp_path / "runs"
    first = lab.registry(root)
    run_id = start(first, max_steps=3)
    finish(first, "alice", run_id)
    status = status_on_disk(first, run_id)  # as if the server had died mid-training
    status.update(status="running", ended=None, reason="")
    (root / run_id / STATUS_FILE).write_text(json.dumps(status), encoding="utf-8")

    second = lab.registry(root)
    assert "Resume continues from the newest checkpoint, at step 3" in second.get("alice", run_id).reason
    second.start("alice", resume_id=run_id, train_config=train_config(max_steps=5))
    info = finish(second, "alice", run_id)
    assert info.status == "finished" and info.step == 5


# --------------------------------------------------------------------------------------------
# Clean-up


def test_cleanup_deletes_runs_older_than_max_age(lab):
    registry = lab.registry(max_age_s=3600)
    now = time.time()
    old = fake_run(registry, "alice", created=now - 7300, ended=now - 7200)
    old_other = fake_run(registry, "bob", created=now - 7300, ended=now - 7200, status="failed")
    recent = fake_run(registry, "alice", created=now - 120, ended=now - 60, status="stopped")
    running = fake_run(registry, "alice", created=now - 9000, status="running")
    not_a_run = registry.root / "notes"
    not_a_run.mkdir()

    assert sorted(registry.cleanup("alice")) == sorted([old, old_other])  # age applies to every owner
    assert sorted(p.name for p in registry.root.iterdir()) == sorted([recent, running, "notes"])


def test_cleanup_keeps_the_newest_runs_per_owner(lab):
    registry = lab.registry(keep_per_owner=2)
    now = time.time()
    running = fake_run(registry, "alice", created=now - 500, status="running")
    alice = [fake_run(registry, "alice", created=now - 400 + 10 * i) for i in range(4)]  # oldest first
    bob = [fake_run(registry, "bob", created=now - 100 + 10 * i) for i in range(3)]  # newer than alice's

    removed = registry.cleanup("alice")
    assert sorted(removed) == sorted(alice[:2])  # alice's oldest; bob's runs do not count against her
    remaining = {p.name for p in registry.root.iterdir()}
    assert remaining == {running, *alice[2:], *bob}

    assert registry.cleanup(None) == [bob[0]]  # every owner, when none is named
    assert running in {p.name for p in registry.root.iterdir()}


def test_cleanup_never_deletes_running_runs(lab):
    registry = lab.registry(keep_per_owner=1, max_age_s=1)
    now = time.time()
    running = [fake_run(registry, "alice", created=now - 1000 + i, status="running") for i in range(3)]
    assert registry.cleanup("alice") == [] and registry.cleanup() == []
    assert sorted(p.name for p in registry.root.iterdir()) == sorted(running)


def test_starting_a_run_cleans_up_the_owners_old_runs(lab):
    registry = lab.registry(keep_per_owner=2)
    now = time.time()
    old = [fake_run(registry, "alice", created=now - 300 + 10 * i) for i in range(3)]
    bobs = [fake_run(registry, "bob", created=now - 300 + 10 * i) for i in range(3)]

    run_id = start(registry, max_steps=1)
    finish(registry, "alice", run_id)
    assert [i.id for i in registry.list("alice")] == [run_id, old[2], old[1]]
    assert [i.id for i in registry.list("bob")] == bobs[::-1]


# --------------------------------------------------------------------------------------------
# Rename and delete


def test_rename_keeps_the_name_even_when_the_run_ends_after_it(lab):
    registry = lab.registry()
    gate = lab.gate(at=2)
    run_id = start(registry)
    gate.wait_until(1)
    assert registry.rename("alice", run_id, "  my   best run ").name == "my best run"
    gate.release.set()
    assert finish(registry, "alice", run_id).name == "my best run"
    for bad in ("", "   ", "x" * 81):
        with pytest.raises(RunError, match="1 to 80 characters"):
            registry.rename("alice", run_id, bad)
    with pytest.raises(RunError, match="no run"):
        registry.rename("bob", run_id, "mine now")


def test_delete_removes_a_finished_run_and_refuses_a_training_one(lab):
    registry = lab.registry()
    gate = lab.gate(at=2)
    run_id = start(registry)
    gate.wait_until(1)
    with pytest.raises(RunError, match="still training; stop it first"):
        registry.delete("alice", run_id)
    with pytest.raises(RunError, match="no run"):
        registry.delete("bob", run_id)
    gate.release.set()
    finish(registry, "alice", run_id)
    registry.delete("alice", run_id)
    assert not (registry.root / run_id).exists() and registry.list("alice") == []
