"""Experiment trackers: a run's events mirrored into TensorBoard event files (every run, in
<run>/tensorboard/) and, when asked for, into a local trackio project.

The metrics log (metrics.jsonl) is the run's record; a tracker is a copy for other viewers. So a
tracker never fails or slows a run: a write that fails (a full disk) turns that tracker off and
keeps its reason in `problem`, and TensorBoard's file is flushed at evaluations and at the end,
not at every step. The writers' packages are imported only when a run opens one.

A resumed run rebuilds its TensorBoard folder from the metrics log (already cut back to the
checkpoint's step), so the event files hold each step once, as the log does. trackio cannot
delete points: a resumed run logs into the same trackio run, and trackio shows the steps after
the checkpoint twice (once from before the resume, once after).
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator, Protocol

from gptlab.events import DoneEvent, EvalEvent, Event, SampleEvent, StepEvent

TENSORBOARD_DIR = "tensorboard"
TRACKERS = ("none", "trackio")
TRACKIO_PROJECT = "gptlab"
# tag -> field: what TensorBoard plots, the step as x.
STEP_SCALARS = {"train/loss": "loss", "train/lr": "lr", "train/grad_norm": "grad_norm",
                "train/tokens_per_sec": "tokens_per_sec"}
EVAL_SCALARS = {"eval/train_loss": "train_loss", "eval/val_loss": "val_loss", "eval/train_ppl": "train_ppl",
                "eval/val_ppl": "val_ppl"}
SAMPLE_TAG = "samples"


class TrackerError(ValueError):
    pass


class Tracker(Protocol):
    def log(self, event: Event) -> None: ...
    def close(self) -> None: ...


def tracked(events: Iterable[Event], trackers: Iterable[Tracker]) -> Iterator[Event]:
    """events, each logged to every tracker first; the trackers are closed when the events end
    (or the consumer stops reading)."""
    trackers = list(trackers)
    try:
        for event in events:
            for tracker in trackers:
                tracker.log(event)
            yield event
    finally:
        for tracker in trackers:
            tracker.close()


def hardware(device, precision: str) -> dict:
    """What a run trained on, for its report: the device, the CPU or GPU by name, torch's version, and
    the precision the trainer resolved ("auto" made concrete)."""
    import torch

    info = {"device": str(device), "precision": precision, "torch": torch.__version__,
            "cpu": _cpu_name(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:  # Linux says the model name; platform.processor() often just says x86_64
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def scalars(event: Event) -> dict[str, float]:
    """The numbers a tracker plots for one event, by tag; {} for events that are not plotted."""
    table = STEP_SCALARS if isinstance(event, StepEvent) else EVAL_SCALARS if isinstance(event, EvalEvent) else {}
    return {tag: float(getattr(event, name)) for tag, name in table.items()}


class TensorBoardLog:
    """Event files in run_dir/tensorboard/, written through tensorboardX's record writer (its
    protobufs and CRC framing) in the training thread: tensorboardX's SummaryWriter queues events for a
    background thread, whose queue blocks the run for good once that thread dies of a full disk.
    A step only keeps its event; they are encoded and written at evaluations, at the end, or every
    MAX_PENDING events (tensorboardX's CRC is pure Python, ~0.1 ms an event: at a step that is a few
    per cent of a tiny model's step time). The file name carries no host name: a Hub push publishes it."""

    MAX_PENDING = 1000

    def __init__(self, run_dir: str | os.PathLike, history: Iterable[Event] = ()):
        """history: the events already in the run's log (a resumed run's), written first in place of
        whatever the folder held, so no step appears twice."""
        self.folder, self.problem = Path(run_dir) / TENSORBOARD_DIR, None
        self._writer, self._t0, self._elapsed, self._pending = None, time.time(), 0.0, list(history)
        try:
            from tensorboardX.proto import event_pb2, summary_pb2
            from tensorboardX.record_writer import RecordWriter
            from tensorboardX.summary import text
        except ImportError:
            self.problem = "tensorboardX is not installed (pip install tensorboardX), so no event files were written"
            return
        self._event_pb2, self._summary_pb2, self._text = event_pb2, summary_pb2, text
        elapsed = [e.elapsed for e in self._pending if hasattr(e, "elapsed")]
        self._t0 -= elapsed[-1] if elapsed else 0.0  # wall time = start + elapsed, before and after a resume
        self._guard(self._open, RecordWriter)
        self._guard(self._flush)

    def _open(self, record_writer) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(self._t0):010d}.gptlab"
        self._writer = record_writer(str(self.folder / name))
        start = self._event_pb2.Event(wall_time=self._t0, file_version="brain.Event:2")
        self._writer.write(start.SerializeToString())

    def _guard(self, action, *args) -> None:
        if self.problem is not None:
            return
        try:
            action(*args)
        except OSError as e:  # the log is the record: the run goes on without event files
            self.problem = f"TensorBoard files could not be written ({e.strerror or e}); metrics.jsonl holds the run"
            self._pending = []
            try:
                if self._writer is not None:
                    self._writer.close()
            except OSError:
                pass
            self._writer = None

    def _record(self, event: Event) -> bytes | None:
        self._elapsed = getattr(event, "elapsed", self._elapsed)
        values = [self._summary_pb2.Summary.Value(tag=tag, simple_value=v) for tag, v in scalars(event).items()]
        summary = self._summary_pb2.Summary(value=values) if values else None
        if isinstance(event, SampleEvent):
            summary = self._text(SAMPLE_TAG, event.text)
        if summary is None:
            return None
        return self._event_pb2.Event(wall_time=self._t0 + self._elapsed, step=event.step,
                                     summary=summary).SerializeToString()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for record in filter(None, map(self._record, pending)):
            self._writer.write(record)
        self._writer.flush()

    def log(self, event: Event) -> None:
        if self._writer is None or self.problem is not None:
            return
        self._pending.append(event)
        if isinstance(event, (EvalEvent, DoneEvent)) or len(self._pending) >= self.MAX_PENDING:
            self._guard(self._flush)

    def close(self) -> None:
        if self._writer is not None:
            self._guard(self._flush)
        if self._writer is not None:
            self._guard(self._writer.close)
        self._writer = None


def event_files(run_dir: str | os.PathLike) -> list[Path]:
    """The TensorBoard event files of a run folder (for an export or a push)."""
    folder = Path(run_dir) / TENSORBOARD_DIR
    return sorted(p for p in folder.glob("events.out.tfevents.*") if p.is_file()) if folder.is_dir() else []


class TrackioLog:
    """The run's numbers logged to trackio (init / log / finish), stored where trackio keeps its projects
    (TRACKIO_DIR, else ~/.cache/huggingface/trackio); `trackio show` opens its dashboard."""

    def __init__(self, run_name: str, config: dict, *, project: str = TRACKIO_PROJECT, resume: bool = False):
        self.problem = None
        try:
            import trackio
        except ImportError:
            raise TrackerError("--tracker trackio needs the trackio package: pip install trackio") from None
        self._trackio = trackio
        try:  # before the run starts, so a tracker that cannot start stops nothing half-way
            self._run = trackio.init(project=project, name=run_name, config=config,
                                     resume="allow" if resume else "never", embed=False,
                                     auto_log_gpu=False, auto_log_cpu=False)
        except Exception as e:
            raise TrackerError(f"trackio could not start ({type(e).__name__}: {e}); train without "
                               "--tracker trackio, or fix that first.") from None

    def log(self, event: Event) -> None:
        values = scalars(event)
        if not values or self.problem is not None:
            return
        try:
            self._run.log(values, step=event.step)
        except Exception as e:  # trackio is a copy; whatever goes wrong in it, the run goes on
            self.problem = f"trackio stopped logging ({type(e).__name__}: {e})"

    def close(self) -> None:
        if self._run is not None:
            try:
                self._run.finish()
                current = getattr(getattr(self._trackio, "context_vars", None), "current_run", None)
                if current is not None and current.get() is self._run:
                    current.set(None)  # else trackio's exit hook finishes it a second time
            except Exception as e:
                self.problem = self.problem or f"trackio could not finish the run ({type(e).__name__}: {e})"
            self._run = None


def open_tracker(name: str, run_name: str, config: dict, *, resume: bool = False) -> Tracker | None:
    """The tracker a `--tracker` flag names, or None for "none"."""
    if name not in TRACKERS:
        raise TrackerError(f"--tracker must be one of {', '.join(TRACKERS)}, not {name!r}.")
    return TrackioLog(run_name, config, resume=resume) if name == "trackio" else None
