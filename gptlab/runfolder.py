"""What a run folder is, in one place, for everything that writes or reads one.

A run folder holds checkpoints (gptlab.checkpoint's format): init/ (the weights before training, for
honest before/after comparisons), best/ (the best validation loss so far), last/ (refreshed at every
evaluation and every minute or so) and optional step-N/; metrics.jsonl, every event of the run
(gptlab.events) as one JSON object a line, appended as they happen; and loss.png, drawn when a run ends.

A resume continues from the newest checkpoint (newest_checkpoint), whichever folder holds it, and
first cuts the log back to that checkpoint's step (write_history), so the log holds each step once.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from gptlab.checkpoint import BEST, CONFIG_FILE, INIT, LAST, STATE_FILE, WEIGHTS_FILE, best_or_last
from gptlab.events import Event, EventError
from gptlab.tokenizers import TOKENIZER_FILE

__all__ = ["METRICS_FILE", "LOSS_PLOT", "INIT", "BEST", "LAST", "best_or_last", "checkpoint_step",
           "describe_checkpoint", "newest_checkpoint", "read_events", "read_new_events", "resolve_checkpoint",
           "run_folder_of", "write_history"]

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"


def resolve_checkpoint(path: str | os.PathLike, prefer: str = LAST) -> Path:
    """A checkpoint folder means itself. A run folder means its last checkpoint (prefer=LAST) or the
    checkpoint that stands for the run (prefer=BEST: best_or_last). A resume, which must also find
    a crashed run's newest checkpoint, asks newest_checkpoint instead."""
    path = Path(path)
    if prefer not in (BEST, LAST):
        raise ValueError(f"prefer must be {BEST!r} or {LAST!r}, not {prefer!r}.")
    if (path / CONFIG_FILE).is_file():
        return path
    if prefer == BEST:
        return best_or_last(path) or path
    return path / LAST if (path / LAST).is_dir() else path


def checkpoint_step(folder: str | os.PathLike) -> int | None:
    """The step a checkpoint folder was saved at, read from its config alone; None if it is not a
    complete resumable checkpoint (weights, tokenizer and trainer state beside the config)."""
    folder = Path(folder)
    if not all((folder / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, STATE_FILE)):
        return None
    try:
        step = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def newest_checkpoint(run_folder: str | os.PathLike) -> Path | None:
    """The checkpoint a resume of this run should continue from: of its resumable checkpoints (last/,
    best/, step-N/), the one at the highest step, then the one saved last; None if it has none.

    A crash between the two renames of a save leaves the previous checkpoint as .NAME.old-*, with
    no NAME beside it; such a folder counts too. Half-written .NAME.tmp-* folders never do."""
    run_folder = Path(run_folder)
    try:
        children = [p for p in run_folder.iterdir() if p.is_dir()]
    except OSError:
        return None
    names = {p.name for p in children}
    candidates = []
    for folder in children:
        if folder.name.startswith("."):
            label, _, rest = folder.name[1:].partition(".old-")
            if not rest or label in names:
                continue
        step = checkpoint_step(folder)
        if step is not None:
            candidates.append((step, (folder / CONFIG_FILE).stat().st_mtime_ns, folder))
    return max(candidates)[2] if candidates else None


def describe_checkpoint(folder: str | os.PathLike) -> str:
    """"last/ (step 120, saved 2025-01-31 14:02:07)": which checkpoint, for messages about a resume."""
    folder = Path(folder)
    saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((folder / CONFIG_FILE).stat().st_mtime))
    return f"{folder.name}/ (step {checkpoint_step(folder)}, saved {saved})"


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


def write_history(source_run: str | os.PathLike, target_run: str | os.PathLike, step: int) -> int:
    """Write target_run's metrics log as source_run's events up to `step` (the same folder or another),
    and return how many lines were dropped: a resume from a checkpoint at `step` logs the steps after
    it again. A line cut short by a crash is dropped too. The log is replaced whole, never half-written."""
    source, target = Path(source_run) / METRICS_FILE, Path(target_run) / METRICS_FILE
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        data = b""
    lines = data.split(b"\n")
    complete = lines[:-1]  # the piece after the last newline is empty, or a line still being written
    kept = [line for line in complete if line and _parse_event(line, source).step <= step]
    tmp = target.with_name(f".{METRICS_FILE}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as out:
            out.write(b"".join(line + b"\n" for line in kept))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return len([line for line in lines if line]) - len(kept)
