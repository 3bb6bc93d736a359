"""What a run folder is, in one place, for everything that writes or reads one.

A run folder holds checkpoints (gptlab.checkpoint's format): init/ (the weights before training, for
honest before/after comparisons), best/ (the best validation loss so far), last/ (where a resume
continues) and optional step-N/; metrics.jsonl, every event of the run (gptlab.events) as one JSON
object a line, appended as they happen; and loss.png, drawn when a run ends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gptlab.checkpoint import BEST, CONFIG_FILE, INIT, LAST, best_or_last
from gptlab.events import Event, EventError

__all__ = ["METRICS_FILE", "LOSS_PLOT", "INIT", "BEST", "LAST", "best_or_last", "read_events", "read_new_events",
           "resolve_checkpoint", "run_folder_of"]

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"


def resolve_checkpoint(path: str | os.PathLike, prefer: str = LAST) -> Path:
    """A checkpoint folder means itself. A run folder means its last checkpoint (prefer=LAST: what a
    resume continues from) or the checkpoint that stands for the run (prefer=BEST: best_or_last)."""
    path = Path(path)
    if prefer not in (BEST, LAST):
        raise ValueError(f"prefer must be {BEST!r} or {LAST!r}, not {prefer!r}.")
    if (path / CONFIG_FILE).is_file():
        return path
    if prefer == BEST:
        return best_or_last(path) or path
    return path / LAST if (path / LAST).is_dir() else path


def run_folder_of(path: str | os.PathLike) -> Path:
    """The run folder of a checkpoint in it, or of the run folder itself."""
    path = Path(path)
    return path.parent if (path / CONFIG_FILE).is_file() and not (path / LAST).is_dir() else path


def read_events(run_dir: str | os.PathLike, start: int = 0) -> list[Event]:
    """A run's events from line `start` of its metrics log; a line still being written is left out."""
    return read_new_events(run_dir)[0][start:]


def read_new_events(run_dir: str | os.PathLike, offset: int = 0) -> tuple[list[Event], int]:
    """The complete events after byte `offset` of the metrics log, and the offset to read from next,
    so an observer polling a long run reads each line once."""
    path = Path(run_dir) / METRICS_FILE
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            data = log.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return [_parse_event(line, path) for line in data[:end].split(b"\n") if line], offset + end


def _parse_event(line: bytes, path: Path) -> Event:
    try:
        return Event.from_dict(json.loads(line))
    except ValueError as e:  # json's errors are ValueErrors too
        raise EventError(f"{path} holds a line that is not a gptlab event ({e}). Remove that line, or read "
                         "the log with the gptlab version that wrote it.") from None
