"""A registry of training runs on disk, each trained by a background thread.

The app's event handlers only observe runs through this registry, so a refresh, a closed tab or a
dropped connection never touches the training itself. Every run belongs to an owner token (a
browser's); a run is invisible to everyone else, and unknown and foreign run ids look the same.

runs/<id>/ is a run folder (gptlab.runfolder) with a status.json beside what TrainingRun writes.
A run that was training when the server process died is shown as 'interrupted' at the next start,
and resumes from its newest checkpoint; stop_all (for a server's SIGTERM) stops every run cleanly.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from gptlab.checkpoint import load_checkpoint
from gptlab.config import ModelConfig, TrainConfig, to_dict
from gptlab.events import Event
from gptlab.launch import Job, stop_orphan, train_command
from gptlab.runfolder import METRICS_FILE, checkpoint_step, newest_checkpoint, read_events, read_new_events
from gptlab.trainer import StepHook, StopFlag
from gptlab.training import TrainingRun

STATUS_FILE = "status.json"
ACTIVE = ("running",)
INTERRUPTED = "interrupted"  # was running when the server process died; resumable
SHUTTING_DOWN = "the server is shutting down"


class RunError(ValueError):
    pass


class BusyError(RunError):
    pass


@dataclass
class RunInfo:
    id: str
    owner: str
    name: str
    status: str  # running, finished, stopped, failed, interrupted
    created: float
    ended: float | None = None
    reason: str = ""
    step: int = 0
    best_val_loss: float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    sweep: str = ""  # the id of the sweep that queued it (gptlab.sweeps), if one did
    processes: int = 1  # above 1: trained by a torchrun job of that many processes (gptlab.launch)

    @property
    def resumable(self) -> bool:
        """Not training now; whether it saved a checkpoint to resume from is checked on resume."""
        return self.status in ("stopped", "failed", "diverged", "finished", INTERRUPTED)


class RunFeed:
    """One run's events, read once for all who watch it: whoever polls first reads what the log
    gained since, and every watcher takes the events past its own count. A resume rewrites the log,
    so it starts a new feed."""

    def __init__(self, folder: Path):
        self.folder, self._events, self._offset = folder, [], 0
        self._lock = threading.Lock()

    def since(self, count: int) -> list[Event]:
        with self._lock:
            new, self._offset = read_new_events(self.folder, self._offset)
            self._events += new
            return self._events[count:]


def _same_owner(a: str, b: str) -> bool:
    # compare_digest refuses non-ASCII str; bytes keep the comparison constant-time for any token.
    return secrets.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class RunRegistry:
    def __init__(self, root: str | os.PathLike, *, max_concurrent: int = 1, keep_per_owner: int = 10,
                 max_age_s: float = 7 * 24 * 3600, max_runs: int = 200, step_hook: StepHook | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_concurrent, self.keep_per_owner, self.max_age_s = max_concurrent, keep_per_owner, max_age_s
        self.max_runs = max_runs
        # Called in a run's training thread after each optimiser step (Trainer's on_step), for every
        # run started after it is set.
        self.step_hook = step_hook
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._stops: dict[str, StopFlag] = {}
        self._feeds: dict[str, RunFeed] = {}
        self._closing = False
        self._refused: dict[str, float] = {}  # owner -> when a start was last refused for want of a slot
        self._mark_interrupted()

    # -- disk ------------------------------------------------------------------------------

    def _write(self, info: RunInfo) -> None:
        path = self.root / info.id / STATUS_FILE
        tmp = path.with_name(STATUS_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")
        os.replace(tmp, path)

    def _read(self, run_id: str) -> RunInfo | None:
        try:
            info = RunInfo(**json.loads((self.root / run_id / STATUS_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        # The folder's name is the id: a status file that claims another can never steer a deletion.
        return info if info.id == run_id else None

    def _all(self) -> list[RunInfo]:
        infos = [self._read(p.name) for p in self.root.iterdir() if p.is_dir()]
        return sorted((i for i in infos if i is not None), key=lambda i: i.created, reverse=True)

    def _mark_interrupted(self) -> None:
        """A run that was 'running' when the server stopped has no thread any more."""
        for info in self._all():
            if info.status in ACTIVE:
                folder = self.root / info.id
                if info.processes > 1:
                    stop_orphan(folder)  # a torchrun job outlives a killed server; two must never share a run
                newest = newest_checkpoint(folder)
                info.status = INTERRUPTED
                try:  # when it last logged something: about when the server died
                    info.ended = (folder / METRICS_FILE).stat().st_mtime
                except OSError:
                    info.ended = time.time()
                if newest is None:
                    info.reason = ("the server stopped during training, before the run saved its first "
                                   "checkpoint, so it cannot be resumed; start a new run")
                else:
                    info.step = checkpoint_step(newest)
                    info.reason = ("the server stopped during training; Resume continues from the newest "
                                   f"checkpoint, at step {info.step:,}")
                self._write(info)

    # -- queries (owner-checked) -------------------------------------------------------------

    def get(self, owner: str, run_id: str) -> RunInfo:
        info = self._read(run_id) if run_id and run_id.isalnum() else None
        if info is None or not _same_owner(info.owner, owner):
            raise RunError(f"There is no run {run_id!r} in this browser session.")
        return info

    def list(self, owner: str) -> list[RunInfo]:
        return [i for i in self._all() if _same_owner(i.owner, owner)]

    def folder(self, owner: str, run_id: str) -> Path:
        return self.root / self.get(owner, run_id).id

    def events(self, owner: str, run_id: str, start: int = 0) -> list[Event]:
        """The run's events from line `start` of its metrics log (complete lines only)."""
        return read_events(self.folder(owner, run_id), start)

    def new_events(self, owner: str, run_id: str, offset: int = 0) -> tuple[list[Event], int]:
        """Events after byte `offset` of the run's log, and the next offset (for polling observers)."""
        return read_new_events(self.folder(owner, run_id), offset)

    def feed(self, owner: str, run_id: str) -> RunFeed:
        """The shared feed of the run's events (see RunFeed). Only a training run's feed is kept: a
        finished run's log no longer grows, so its watchers each read it once and the memory goes."""
        folder = self.folder(owner, run_id)
        with self._lock:
            return self._feeds.get(folder.name) or RunFeed(folder)

    def active_count(self) -> int:
        with self._lock:
            return sum(t.is_alive() for t in self._threads.values())

    # -- actions -------------------------------------------------------------------------------

    def start(self, owner: str, *, model_config: ModelConfig | None = None, train_config: TrainConfig | None = None,
              data_paths=None, texts=None, init_from=None, resume_id: str | None = None, name: str = "",
              sweep: str = "", processes: int = 1) -> str:
        """Prepare a run (errors surface here, before any thread starts) and train it in the background:
        in this process, or with processes > 1 as a torchrun job whose folder is read like any run's
        (a resume keeps the run's number of processes)."""
        if not owner:
            raise RunError("A run needs an owner.")
        with self._lock:
            if self._closing:
                raise BusyError("The server is shutting down, so no run can start now; try again once it "
                                "is back (stopped runs can be resumed then).")
            if sum(t.is_alive() for t in self._threads.values()) >= self.max_concurrent:
                if not sweep:
                    self._refused[owner] = time.monotonic()
                raise BusyError(f"The server is already training {self.max_concurrent} model(s), its limit. "
                                "Try again when a run has finished, or stop yours.")
            if resume_id is not None:
                info = self.get(owner, resume_id)
                if info.id in self._threads and self._threads[info.id].is_alive():
                    raise RunError("That run is still training.")
                newest = newest_checkpoint(self.root / info.id)
                if newest is None:
                    raise RunError("That run saved no checkpoint before it ended, so it cannot be resumed; "
                                   "start a new run instead.")
                max_steps = train_config.max_steps if train_config else None
                max_time = (train_config.max_time or 0) if train_config else None
                if info.processes > 1:
                    run = train_command(self.root / info.id, info.processes, resume=newest, max_steps=max_steps,
                                        max_time=max_time)
                    saved = load_checkpoint(newest).train_config
                    info.train = to_dict(saved.replace(max_steps=max_steps or saved.max_steps,
                                                       max_time=saved.max_time if max_time is None else max_time or None))
                else:
                    run = TrainingRun.resume(newest, out_dir=self.root / info.id, max_steps=max_steps,
                                             max_time=max_time, step_hook=self.step_hook)
                    info.data.setdefault("baselines", run.data.description["baselines"])  # runs from before them
                    info.train = to_dict(run.train_config)
                info.status, info.reason, info.ended = "running", "", None
            else:
                self.cleanup(owner)
                run_id = secrets.token_hex(8)
                try:
                    kept = self._keep_files(run_id, data_paths)
                    # A torchrun job's settings are checked here too, on the CPU, so its errors surface now.
                    checked = train_config.replace(device="cpu") if processes > 1 else train_config
                    if init_from is None:
                        run = TrainingRun.new(model_config, checked, self.root / run_id, kept, texts,
                                              step_hook=self.step_hook)
                    else:
                        run = TrainingRun.fine_tune(init_from, model_config, checked, self.root / run_id, kept,
                                                    texts, step_hook=self.step_hook)
                except BaseException:
                    shutil.rmtree(self.root / run_id, ignore_errors=True)  # a run that never started leaves nothing
                    raise
                info = RunInfo(id=run_id, owner=owner, name=name or time.strftime("run %H:%M:%S"), status="running",
                               created=time.time(), model=to_dict(run.model_config),
                               train=to_dict(run.train_config.replace(device=train_config.device)),
                               data=run.data.description, sweep=sweep, processes=processes)
                if processes > 1:
                    run = train_command(self.root / run_id, processes, model_config=run.model_config,
                                        train_config=train_config, data_paths=run.extra["data"]["paths"],
                                        init_from=init_from)
                self._refused.pop(owner, None)
            (self.root / info.id).mkdir(parents=True, exist_ok=True)
            self._write(info)
            self._feeds[info.id] = RunFeed(self.root / info.id)
            stop = StopFlag()
            target = self._train_job if isinstance(run, list) else self._train
            thread = threading.Thread(target=target, args=(run, info, stop), name=f"train-{info.id}", daemon=True)
            self._threads[info.id], self._stops[info.id] = thread, stop
            thread.start()
            return info.id

    def _keep_files(self, run_id: str, paths) -> list[Path] | None:
        """Copy uploaded files into the run folder: uploads are temporary, and a resume needs them."""
        if not paths:
            return None
        folder = self.root / run_id / "data"
        folder.mkdir(parents=True, exist_ok=True)
        kept = []
        for i, path in enumerate(map(Path, paths), 1):
            if not path.is_file():
                kept.append(path)  # TrainingRun explains what is wrong with it
                continue
            target = folder / f"{i:02d}-{path.name}"
            shutil.copyfile(path, target)
            kept.append(target)
        return kept

    def _train(self, run: TrainingRun, info: RunInfo, stop: threading.Event) -> None:
        try:
            for event in run.events(stop):
                info.step = event.step
                if event.kind == "eval":
                    info.best_val_loss = event.best_val_loss
                elif event.kind == "done":
                    info.status, info.reason = event.status, event.reason
        except Exception as e:  # a crash must end as a visible 'failed' run, never a silent dead thread
            # Our ValueErrors are sentences for the user; anything else is named, since it is a bug or the OS.
            info.status, info.reason = "failed", str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        finally:
            self._finish(info)

    def _finish(self, info: RunInfo) -> None:
        if info.status == "running":
            info.status, info.reason = "stopped", "training ended unexpectedly"
        info.ended = time.time()
        renamed = self._read(info.id)  # a rename while it trained is kept
        info.name = renamed.name if renamed else info.name
        self._write(info)
        self._feeds.pop(info.id, None)

    def _train_job(self, command: list[str], info: RunInfo, stop: threading.Event) -> None:
        """A torchrun job in place of the training thread's loop; what it did is read from its log."""
        try:
            info.status, info.reason = Job(command, self.root / info.id).wait(stop)
            events = read_events(self.root / info.id)
            info.step = max((e.step for e in events), default=info.step)
            info.best_val_loss = next((e.best_val_loss for e in reversed(events) if e.kind == "eval"), None)
        except Exception as e:
            info.status, info.reason = "failed", f"the training processes could not be run: {type(e).__name__}: {e}"
        finally:
            self._finish(info)

    def stop(self, owner: str, run_id: str) -> bool:
        """Ask an owner's run to stop before its next optimiser step; True if it was running."""
        info = self.get(owner, run_id)
        with self._lock:
            thread, stop = self._threads.get(info.id), self._stops.get(info.id)
        if thread is None or not thread.is_alive():
            return False
        stop.set()
        return True

    def stop_all(self, timeout: float | None = None) -> list[str]:
        """Stop every run and refuse new ones, for a server that is shutting down (its SIGTERM
        handler): each run ends after the step in progress, saves last/ and is marked stopped.
        Waits up to `timeout` seconds in all; returns the ids of runs still training then (the next
        start-up shows them as interrupted, resumable from their newest checkpoint)."""
        with self._lock:
            self._closing = True
            running = [(run_id, thread) for run_id, thread in self._threads.items() if thread.is_alive()]
            for run_id, _ in running:
                self._stops[run_id].set(SHUTTING_DOWN)
        deadline = None if timeout is None else time.monotonic() + timeout
        for _, thread in running:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return [run_id for run_id, thread in running if thread.is_alive()]

    def waiting_owners(self, within_s: float, *, besides: str = "") -> list[str]:
        """Owners (other than `besides`) refused a run for want of a slot in the last `within_s`
        seconds and not started since: a sweep lets them go first (gptlab.sweeps)."""
        now = time.monotonic()
        with self._lock:
            return [o for o, t in self._refused.items() if now - t <= within_s and not _same_owner(o, besides)]

    @property
    def closing(self) -> bool:
        return self._closing

    def is_training(self, run_id: str) -> bool:
        with self._lock:
            thread = self._threads.get(run_id)
        return thread is not None and thread.is_alive()

    def rename(self, owner: str, run_id: str, name: str) -> RunInfo:
        name = " ".join(str(name or "").split())
        if not 1 <= len(name) <= 80:
            raise RunError("A run's name is 1 to 80 characters; type one.")
        with self._lock:
            info = self.get(owner, run_id)
            info.name = name
            self._write(info)
        return info

    def delete(self, owner: str, run_id: str) -> None:
        """Delete an owner's run and its folder; a run that is training must be stopped first."""
        info = self.get(owner, run_id)
        if self.is_training(info.id):
            raise RunError("That run is still training; stop it first, then delete it.")
        shutil.rmtree(self.root / info.id, ignore_errors=True)
        self._feeds.pop(info.id, None)

    def wait(self, run_id: str, timeout: float | None = None) -> None:
        thread = self._threads.get(run_id)
        if thread is not None:
            thread.join(timeout)

    def cleanup(self, owner: str | None = None) -> list[str]:
        """Delete finished runs older than max_age_s, and an owner's oldest beyond keep_per_owner."""
        removed, now, kept = [], time.time(), 0
        infos = self._all()
        # The runs of one sweep count as one: a 12-run sweep must not push out its own first runs.
        groups: dict[str, list[str]] = {}
        for info in infos:  # newest first
            if info.status in ACTIVE:
                continue
            seen = groups.setdefault(info.owner, [])
            if (info.sweep or info.id) not in seen:
                seen.append(info.sweep or info.id)
            too_old = info.ended is not None and now - info.ended > self.max_age_s
            too_many = (owner is None or info.owner == owner) and len(seen) > self.keep_per_owner
            # Owner tokens cost nothing to make, so the server also keeps at most max_runs in all.
            over_total = kept >= self.max_runs
            if too_old or too_many or over_total:
                shutil.rmtree(self.root / info.id, ignore_errors=True)
                removed.append(info.id)
            else:
                kept += 1
        for run_id in removed:  # start() calls this holding the lock; a dict pop needs none
            self._feeds.pop(run_id, None)
        return removed
