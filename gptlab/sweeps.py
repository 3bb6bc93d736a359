"""Sweeps queued in the background: the runs of a sweep (gptlab.experiments.sweep) trained one after
another by a worker thread, each an ordinary run of the registry (sampled, compared, downloaded and
resumed like any other).

The policy, so that one user's queue never blocks another's single run for long: a sweep trains
one run at a time, in the registry's concurrency limit like every run; and before it starts its next
run it lets go first anyone whose Start was refused for want of a slot in the last `yield_s`
seconds. Another user therefore waits at most for the runs already training, the sweep's run
among them, each bounded by its own budget.

runs/_sweeps/<id>.json records each sweep. A sweep that was queued or training when the server
stopped is shown as interrupted at the next start; Resume continues it, its interrupted run first.
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
from typing import Any, Sequence

from gptlab.config import ModelConfig, TrainConfig, to_dict
from gptlab.runs import INTERRUPTED, BusyError, RunError, RunRegistry, _same_owner

SWEEPS_DIR = "_sweeps"
ACTIVE = ("queued", "running")
PENDING = "pending"


@dataclass
class SweepPoint:
    label: str
    model: dict[str, Any]
    train: dict[str, Any]
    run_id: str = ""
    status: str = PENDING  # pending, running, then the run's own status; or cancelled, or failed to start
    reason: str = ""


@dataclass
class SweepInfo:
    id: str
    owner: str
    name: str
    created: float
    status: str  # queued, running, finished, cancelled, interrupted
    points: list[SweepPoint]
    data_paths: list[str] = field(default_factory=list)
    reason: str = ""
    axes: list[str] = field(default_factory=list)  # the settings it varies, e.g. ["learning_rate"]

    @property
    def done(self) -> int:
        return sum(p.status not in (PENDING, "running") for p in self.points)


class SweepQueue:
    def __init__(self, registry: RunRegistry, *, poll_s: float = 0.5, yield_s: float = 60.0):
        self.registry, self.poll_s, self.yield_s = registry, poll_s, yield_s
        self.root = registry.root / SWEEPS_DIR  # made by the first sweep: a server without one leaves no trace
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._mark_interrupted()

    # -- disk -------------------------------------------------------------------------------------

    def _write(self, info: SweepInfo) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{info.id}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")
        os.replace(tmp, path)

    def _read(self, sweep_id: str) -> SweepInfo | None:
        if not (sweep_id and sweep_id.isalnum()):
            return None
        try:
            data = json.loads((self.root / f"{sweep_id}.json").read_text(encoding="utf-8"))
            info = SweepInfo(**{**data, "points": [SweepPoint(**p) for p in data["points"]]})
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return info if info.id == sweep_id else None

    def _mark_interrupted(self) -> None:
        for path in self.root.glob("*.json"):
            info = self._read(path.stem)
            if info is not None and info.status in ACTIVE:
                info.status = INTERRUPTED
                info.reason = "the server stopped during the sweep; Resume continues it where it was"
                for point in info.points:
                    if point.status == "running":
                        point.status = INTERRUPTED
                self._write(info)

    # -- queries ----------------------------------------------------------------------------------

    def get(self, owner: str, sweep_id: str) -> SweepInfo:
        info = self._read(sweep_id)
        if info is None or not _same_owner(info.owner, owner):
            raise RunError(f"There is no sweep {sweep_id!r} in this browser session.")
        return info

    def list(self, owner: str) -> list[SweepInfo]:
        infos = [self._read(p.stem) for p in self.root.glob("*.json")]
        return sorted((i for i in infos if i is not None and _same_owner(i.owner, owner)),
                      key=lambda i: i.created, reverse=True)

    def is_active(self, sweep_id: str) -> bool:
        with self._lock:
            thread = self._threads.get(sweep_id)
        return thread is not None and thread.is_alive()

    # -- actions ----------------------------------------------------------------------------------

    def submit(self, owner: str, points: Sequence[tuple[str, ModelConfig, TrainConfig]], *,
               data_paths: Sequence[str | os.PathLike] | None = None, texts: Sequence[str] | None = None,
               name: str = "", axes: Sequence[str] = ()) -> str:
        """Queue (label, model config, train config) points; returns the sweep's id at once."""
        if any(self.is_active(s.id) for s in self.list(owner)):
            raise BusyError("This browser already has a sweep in the queue; cancel it or wait for it to finish.")
        self.cleanup()
        sweep_id = secrets.token_hex(8)
        folder = self.root / sweep_id
        kept = _keep_data(folder, data_paths, texts)
        info = SweepInfo(id=sweep_id, owner=owner, name=name or time.strftime("sweep %H:%M:%S"), created=time.time(),
                         status="queued", data_paths=[str(p) for p in kept], axes=list(axes),
                         points=[SweepPoint(label, to_dict(m), to_dict(t)) for label, m, t in points])
        self._write(info)
        self._start_worker(info)
        return sweep_id

    def cancel(self, owner: str, sweep_id: str) -> bool:
        """Stop the queue and the run in flight; True if the sweep was active."""
        info = self.get(owner, sweep_id)
        with self._lock:
            cancel = self._cancels.get(info.id)
        if cancel is None or not self.is_active(info.id):
            return False
        cancel.set()
        return True

    def resume(self, owner: str, sweep_id: str) -> None:
        """Continue an interrupted or cancelled sweep: its interrupted or stopped run first, then the rest."""
        info = self.get(owner, sweep_id)
        if self.is_active(info.id):
            raise RunError("That sweep is still in the queue.")
        if all(p.status not in (PENDING, INTERRUPTED, "cancelled", "stopped") for p in info.points):
            raise RunError("Every run of that sweep has ended; start a new sweep to train more.")
        for point in info.points:
            if point.status == "cancelled":
                point.status = PENDING
        info.status, info.reason = "queued", ""
        self._write(info)
        self._start_worker(info)

    def cleanup(self) -> list[str]:
        """Forget sweeps whose runs the registry has all cleaned up (an idle sweep of nothing)."""
        removed = []
        for path in self.root.glob("*.json"):
            info = self._read(path.stem)
            if info is None or self.is_active(info.id) or info.status in ACTIVE:
                continue
            if not any(p.run_id and (self.registry.root / p.run_id).is_dir() for p in info.points):
                path.unlink(missing_ok=True)
                shutil.rmtree(self.root / info.id, ignore_errors=True)
                removed.append(info.id)
        return removed

    def wait(self, sweep_id: str, timeout: float | None = None) -> None:
        with self._lock:
            thread = self._threads.get(sweep_id)
        if thread is not None:
            thread.join(timeout)

    # -- the worker -------------------------------------------------------------------------------

    def _start_worker(self, info: SweepInfo) -> None:
        cancel = threading.Event()
        thread = threading.Thread(target=self._work, args=(info, cancel), name=f"sweep-{info.id}", daemon=True)
        with self._lock:
            self._threads[info.id], self._cancels[info.id] = thread, cancel
        thread.start()

    def _work(self, info: SweepInfo, cancel: threading.Event) -> None:
        try:
            for point in info.points:
                if cancel.is_set():
                    break
                if point.status in (PENDING, INTERRUPTED, "stopped"):
                    self._train(info, point, cancel)
            if cancel.is_set():
                for point in info.points:
                    if point.status == PENDING:
                        point.status = "cancelled"
                info.status, info.reason = "cancelled", "cancelled by request"
            else:
                info.status = "finished"
        except Exception as e:  # the worker must end visibly, never as a silent dead thread
            info.status, info.reason = "failed", str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        finally:
            if info.status in ACTIVE:
                info.status, info.reason = INTERRUPTED, "the server is shutting down; Resume continues the sweep"
            self._write(info)

    def _train(self, info: SweepInfo, point: SweepPoint, cancel: threading.Event) -> None:
        run_id = self._start_run(info, point, cancel)
        if run_id is None:
            return
        point.run_id, point.status, point.reason = run_id, "running", ""
        info.status = "running"
        self._write(info)
        while self.registry.is_training(run_id):
            if cancel.is_set():
                self.registry.stop(info.owner, run_id)
            self.registry.wait(run_id, self.poll_s)
        run = self.registry.get(info.owner, run_id)
        point.status, point.reason = run.status, run.reason
        self._write(info)

    def _start_run(self, info: SweepInfo, point: SweepPoint, cancel: threading.Event) -> str | None:
        """The point's run started (or resumed) once a slot is free and nobody refused one is waiting."""
        while not cancel.is_set():
            if self.registry.closing:
                return None
            if self.registry.waiting_owners(self.yield_s, besides=info.owner):
                time.sleep(self.poll_s)
                continue
            try:
                if point.run_id and point.status in (INTERRUPTED, "stopped"):
                    try:
                        return self.registry.start(info.owner, resume_id=point.run_id,
                                                   train_config=TrainConfig.from_dict(point.train))
                    except BusyError:
                        raise
                    except RunError:  # nothing saved to resume from: train it again from the start
                        point.run_id = ""
                return self.registry.start(info.owner, model_config=ModelConfig.from_dict(point.model),
                                           train_config=TrainConfig.from_dict(point.train),
                                           data_paths=info.data_paths or None, name=_run_name(info, point),
                                           sweep=info.id)
            except BusyError:
                time.sleep(self.poll_s)
            except ValueError as e:  # this point cannot run (its data went missing, say): the others go on
                point.status, point.reason = "failed", str(e)
                self._write(info)
                return None
        return None


def _run_name(info: SweepInfo, point: SweepPoint) -> str:
    """The point's label, and the sweep's name where that says more (an exercise's, say)."""
    plain = info.name in (" × ".join(info.axes), "")
    return point.label if plain else f"{point.label} · {info.name}"


def _keep_data(folder: Path, paths, texts) -> list[Path]:
    """The sweep's own copy of its text: uploads are temporary, and pasted text lives in memory."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for i, path in enumerate(map(Path, paths or ()), 1):
        target = folder / f"{i:02d}-{path.name}"
        shutil.copyfile(path, target)
        kept.append(target)
    for i, text in enumerate(texts or (), 1):
        target = folder / f"pasted-{i}.txt"
        target.write_text(text, encoding="utf-8")
        kept.append(target)
    return kept
