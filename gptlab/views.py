"""Plain-text and table views of data, runs and predictions, and the dataclasses the service
answers with (no gradio here): the UI only places them in components."""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence, TypeVar

from gptlab.data import DataStats
from gptlab.events import DoneEvent, EvalEvent, Event, SampleEvent, StepEvent
from gptlab.tokenizers import Tokenizer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VISIBLE = {"\n": "⏎", " ": "␣", "\t": "⇥"}


def show_token(text: str) -> str:
    """A token's text with white space made visible, so a table cell never looks empty."""
    return "".join(VISIBLE.get(c, c) for c in text) or "∅"


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    return show_token(tokenizer.decode_bytes([token_id]).decode("utf-8", errors="replace"))


# An absolute POSIX or Windows path: what a message may hold when it names a file on the server.
_PATH = re.compile(r"""(?<![\w.:/\\])(?:[A-Za-z]:)?(?:[/\\][^\s/\\'"`,;:()]+)+[/\\]?""")


def without_paths(text: str) -> str:
    """`text` with every absolute path reduced to its last part: what leaves the server names a file,
    never where it lives."""
    return _PATH.sub(lambda m: m.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or m.group(0), text)


def stats_markdown(stats: DataStats, tokenizer: Tokenizer, block_size: int) -> str:
    rows = [("characters", f"{stats.characters:,}"), ("tokens", f"{stats.tokens:,} ({tokenizer.name} tokenizer)"),
            ("vocabulary used", f"{stats.vocab_used:,} of {stats.vocab_size:,}"),
            ("train / validation tokens", f"{stats.train_tokens:,} / {stats.val_tokens:,}"),
            (f"windows of {block_size} tokens per epoch", f"{stats.windows_per_epoch:,}")]
    return "| statistic | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def shift_table(tokenizer: Tokenizer, ids: Sequence[int], width: int = 12) -> list[list[str]]:
    """The first `width` (input, target) pairs: at every position the model sees the tokens so
    far and must predict the next one, so the targets are the inputs shifted left by one."""
    ids = list(ids[: width + 1])
    return [[str(i), token_text(tokenizer, ids[i]), token_text(tokenizer, ids[i + 1])] for i in range(len(ids) - 1)]


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes}:{s:02d}"


E = TypeVar("E", bound=Event)


def _last(events: Sequence[Event], kind: type[E]) -> E | None:
    return next((e for e in reversed(events) if isinstance(e, kind)), None)


def run_status_markdown(info, events: Sequence[Event]) -> str:
    """One block of text with where the run is: status, step, losses, speed and time left."""
    last_step, last_eval, done = _last(events, StepEvent), _last(events, EvalEvent), _last(events, DoneEvent)
    max_steps = info.train.get("max_steps")
    step = last_step.step if last_step else info.step
    lines = [f"**{info.name}** · {info.status}" + (f": {info.reason}" if info.reason else "")]
    progress = f"step {step:,}" + (f" of {max_steps:,}" if max_steps else "")
    if info.train.get("max_time"):
        progress += f" · time budget {format_seconds(info.train['max_time'])}"
    if last_step:
        progress += (f" · {last_step.tokens_per_sec:,.0f} tokens/s · elapsed {format_seconds(last_step.elapsed)}")
        if info.status == "running":
            progress += f" · about {format_seconds(last_step.eta)} left"
    lines.append(progress)
    if last_eval:
        lines.append(f"train loss {last_eval.train_loss:.4f} · validation loss {last_eval.val_loss:.4f} "
                     f"(perplexity {last_eval.val_ppl:.2f}) · best {last_eval.best_val_loss:.4f}")
    if done and done.status == "failed":
        lines.append(f"**Failed**: {done.reason}")
    return "  \n".join(lines)


def progress_fraction(info, events: Sequence[Event]) -> float:
    last_step = _last(events, StepEvent)
    if last_step is None:
        return 0.0
    fractions = []
    if info.train.get("max_steps"):
        fractions.append(last_step.step / info.train["max_steps"])
    if info.train.get("max_time"):
        fractions.append(last_step.elapsed / info.train["max_time"])
    return min(1.0, max(fractions or [0.0]))


def latest_sample(events: Sequence[Event]) -> str:
    sample = _last(events, SampleEvent)
    return f"(step {sample.step})\n{sample.text}" if sample else ""


def metrics_csv(events: Sequence[Event]) -> str:
    """Steps and evaluations as one CSV table (a column per field, empty where it does not apply)."""
    rows = [e.as_dict() for e in events if isinstance(e, (StepEvent, EvalEvent))]
    columns = ["event", "step", "tokens_seen", "elapsed", "loss", "lr", "grad_norm", "tokens_per_sec",
               "train_loss", "val_loss", "train_ppl", "val_ppl"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ------------------------------------------------------------------------------------------------
# What the service answers with


@dataclass(frozen=True)
class Preview:
    """The Data tab's view of the chosen text; a problem is reported in `message`, not raised."""
    message: str
    stats: str = ""
    head: str = ""
    shift: list[list[str]] = field(default_factory=list)
    vocab_size: int | None = None


@dataclass(frozen=True)
class LiveView:
    """Where a run stands. A figure or run list of None has not changed since the previous view,
    because redrawing competes with training for the same cores."""
    owner: str
    run_id: str | None
    status: str
    progress: float  # percent
    loss: Figure | None
    dynamics: Figure | None
    sample: str
    runs: list[tuple[str, str]] | None  # (label, run id) of the owner's runs
    snapshot_step: int | None = None  # the newest time-machine snapshot's step; None: unchanged, or none yet


@dataclass(frozen=True)
class Sample:
    text: str  # the prompt and the continuation so far
    note: str = ""  # what the user should know about the prompt (it was cropped to the context)


@dataclass(frozen=True)
class NextToken:
    token: str  # white space made visible
    id: int
    probability: float


@dataclass(frozen=True)
class Comparison:
    untrained: str
    trained: str


@dataclass(frozen=True)
class SweepRow:
    temperature: float
    text: str


@dataclass(frozen=True)
class RunComparison:
    figure: Figure
    text_a: str
    text_b: str
