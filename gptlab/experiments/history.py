"""Run history: what each run folder holds, read back as one record per run, and the settings each
changed relative to the run before it (or to any run the user picks).

A record's settings are those the run was started with: its init/ checkpoint's snapshot, written
before the first step. A resumed run's later limits (a higher max_steps) are not its settings.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from gptlab.config import PRESETS, ModelConfig, TrainConfig
from gptlab.events import DoneEvent, EvalEvent, Event, StepEvent
from gptlab.experiments.changes import Change, changes, describe, flatten
from gptlab.runfolder import INIT, METRICS_FILE, newest_checkpoint, read_events

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class RunRecord:
    folder: Path
    name: str
    status: str  # finished, stopped, failed, running (no done event yet)
    reason: str
    started: float  # seconds since the epoch
    model: dict[str, Any]
    train: dict[str, Any]
    preset: str  # the preset recorded at start, or "~name": the closest one, for runs that recorded none
    data: str
    step: int
    tokens: int
    elapsed: float
    best_val_loss: float | None
    train_loss: float | None  # at the last evaluation
    val_loss: float | None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        return flatten(self.model, self.train)

    @property
    def tokens_per_sec(self) -> float | None:
        return self.tokens / self.elapsed if self.elapsed > 0 else None

    @property
    def bits_per_char(self) -> float | None:
        """The best validation loss in bits per character: nats per token × tokens per character ÷ ln 2."""
        chars, tokens = self.stats.get("characters"), self.stats.get("tokens")
        if self.best_val_loss is None or not chars or not tokens:
            return None
        return self.best_val_loss * tokens / chars / math.log(2)


def closest_preset(model: dict[str, Any], train: dict[str, Any]) -> str:
    """The preset a run's settings differ least from, marked "~" as a guess."""
    def distance(name: str) -> int:
        preset = flatten(ModelConfig.preset(name).__dict__, TrainConfig.preset(name).__dict__)
        return len(changes(preset, flatten(model, train)))
    return "~" + min(PRESETS, key=distance)


def read_run(folder: str | os.PathLike) -> RunRecord | None:
    """The record of one run folder, or None if it is not one (no metrics and no checkpoint)."""
    folder = Path(folder)
    snapshot = folder / INIT / CONFIG_FILE
    if not snapshot.is_file():
        newest = newest_checkpoint(folder) if folder.is_dir() else None
        snapshot = newest / CONFIG_FILE if newest else snapshot
    if not snapshot.is_file():
        return None
    try:
        meta = json.loads(snapshot.read_text(encoding="utf-8"))
        model, train = dict(meta["model"]), dict(meta["train"] or {})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    extra = meta.get("extra") or {}
    events = read_events(folder) if (folder / METRICS_FILE).is_file() else []
    return RunRecord(folder=folder, name=extra.get("name") or folder.name, **summarise(events),
                     started=snapshot.stat().st_mtime, model=model, train=train,
                     preset=extra.get("preset") or closest_preset(model, train),
                     data=_sources(extra), stats=extra.get("stats", {}))


def _sources(extra: dict[str, Any]) -> str:
    """The run's data by file name: the folder it lives in on the server is nobody's business."""
    names = [Path(str(s)).name for s in extra.get("data", {}).get("sources", [])]
    return ", ".join(dict.fromkeys(n for n in names if n)) or "?"


def summarise(events: Sequence[Event]) -> dict[str, Any]:
    """Status, how far the run got, and its losses, from its events."""
    done = next((e for e in reversed(events) if isinstance(e, DoneEvent)), None)
    last_eval = next((e for e in reversed(events) if isinstance(e, EvalEvent)), None)
    last_step = next((e for e in reversed(events) if isinstance(e, StepEvent)), None)
    progress = done or last_step
    return {"status": done.status if done else "running", "reason": done.reason if done else "",
            "step": progress.step if progress else 0, "tokens": progress.tokens_seen if progress else 0,
            "elapsed": progress.elapsed if progress else 0.0,
            "best_val_loss": last_eval.best_val_loss if last_eval else None,
            "train_loss": last_eval.train_loss if last_eval else None,
            "val_loss": last_eval.val_loss if last_eval else None}


def read_runs(root: str | os.PathLike) -> list[RunRecord]:
    """Every run folder directly under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = [r for r in (read_run(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
               if r is not None]
    return sorted(records, key=lambda r: (r.started, r.name))


def with_changes(records: Sequence[RunRecord], against: RunRecord | None = None) -> list[tuple[RunRecord, list[Change]]]:
    """Each record with what it changed: relative to `against` if given, else to the run before it
    (the first run, with nothing before it, changed nothing)."""
    out, previous = [], None
    for record in records:
        base = against or previous
        out.append((record, changes(base.settings, record.settings) if base is not None else []))
        previous = record
    return out


HEADERS = ("run", "status", "started", "data", "preset", "best val loss", "bits/char", "tokens", "time",
           "tokens/s", "changes")


def table(rows: Sequence[tuple[RunRecord, list[Change]]]) -> list[list[str]]:
    """The history as text cells under HEADERS, for the CLI's table and the app's Runs panel alike."""
    def number(value: float | None, fmt: str) -> str:
        return format(value, fmt) if value is not None and math.isfinite(value) else "–"

    out = []
    for i, (r, found) in enumerate(rows):
        minutes, seconds = divmod(int(round(r.elapsed)), 60)
        out.append([r.name, r.status, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)), r.data, r.preset,
                    number(r.best_val_loss, ".4f"), number(r.bits_per_char, ".3f"), f"{r.tokens:,}",
                    f"{minutes}:{seconds:02d}", number(r.tokens_per_sec, ",.0f"),
                    "–" if i == 0 and not found else describe(found)])
    return out
