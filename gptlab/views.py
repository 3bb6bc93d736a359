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
from gptlab.insight.baselines import Baselines, bits_per_character
from gptlab.tokenizers import Tokenizer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gptlab.insight.dynamics_plots import DoctorView

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


def stats_markdown(stats: DataStats, tokenizer: Tokenizer, block_size: int,
                   baselines: Baselines | None = None) -> str:
    rows = [("characters", f"{stats.characters:,}"), ("tokens", f"{stats.tokens:,} ({tokenizer.name} tokenizer)"),
            ("vocabulary used", f"{stats.vocab_used:,} of {stats.vocab_size:,}"),
            ("train / validation tokens", f"{stats.train_tokens:,} / {stats.val_tokens:,}"),
            (f"windows of {block_size} tokens per epoch", f"{stats.windows_per_epoch:,}")]
    if baselines is not None:
        rows += baseline_rows(baselines)
    return "| statistic | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def baseline_rows(b: Baselines) -> list[tuple[str, str]]:
    """The loss a model must beat, three ways, on this text's validation split (nats per token, and bits
    per character)."""
    unit = b.unit
    def loss(x: float) -> str:
        return f"{x:.3f} ({bits_per_character(x, b.tokens_per_char):.2f} bits per character)"
    return [(f"loss of random guessing (ln {b.vocab_size:,})", loss(math.log(b.vocab_size))),
            (f"loss of {unit} frequencies alone (unigram)", loss(b.unigram)),
            (f"loss knowing the previous {unit} (bigram)", loss(b.bigram))]


def perplexity_sentence(loss: float, unit: str = "token") -> str:
    """Perplexity e^loss, and what it means: the model is as unsure as if it chose uniformly among
    that many tokens."""
    if loss is None or not math.isfinite(loss):
        return "perplexity unknown"
    if loss > 700:  # e^710 overflows a float; no model this far off is worth a number
        return f"perplexity over 10^300: as unsure as choosing among more {unit}s than exist"
    ppl = math.exp(loss)
    among = f"{ppl:,.0f}" if ppl >= 10 else f"{ppl:.1f}"
    return f"perplexity {ppl:,.2f}: as unsure as choosing among {among} {unit}s"


def run_baselines(info) -> Baselines | None:
    """A run's baselines, kept in its data description (None for runs from before they existed)."""
    data = getattr(info, "data", None)
    return Baselines.from_dict(data.get("baselines")) if isinstance(data, dict) else None


def loss_scale(info) -> tuple[str, float | None]:
    """(what a token is, validation tokens per character) of a run: a run from before the ratio was
    kept has it only for a character tokenizer, where it is 1."""
    baselines = run_baselines(info)
    if baselines is not None:
        return baselines.unit, baselines.tokens_per_char
    if (getattr(info, "data", None) or {}).get("tokenizer") == "char":
        return "character", 1.0
    return "token", None


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
    if getattr(info, "processes", 1) > 1:  # a torchrun job: the speed is all processes' together
        progress += f" · on {info.processes} processes"
    if last_step:
        progress += (f" · {last_step.tokens_per_sec:,.0f} tokens/s · elapsed {format_seconds(last_step.elapsed)}")
        if info.status == "running":
            progress += f" · about {format_seconds(last_step.eta)} left"
    lines.append(progress)
    if last_eval:
        unit, ratio = loss_scale(info)
        bpc = (f" · {bits_per_character(last_eval.val_loss, ratio):.3f} bits per character"
               if ratio is not None and math.isfinite(last_eval.val_loss) else "")
        if last_eval.step < step:  # a run stopped between evaluations: the losses are older than the weights
            lines.append(f"at the last evaluation, step {last_eval.step:,} ({step - last_eval.step:,} steps ago):")
        lines.append(f"train loss {last_eval.train_loss:.4f} ({perplexity_sentence(last_eval.train_loss, unit)})")
        lines.append(f"validation loss {last_eval.val_loss:.4f} ({perplexity_sentence(last_eval.val_loss, unit)})"
                     f"{bpc} · best {last_eval.best_val_loss:.4f}")
    if done and done.status in ("failed", "diverged"):
        lines.append(f"**{done.status.capitalize()}**: {done.reason}")
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
    tokens: str = ""  # HTML: the head of the text as each tokenizer cuts it (gptlab.insight.token_views)


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
    doctor: DoctorView | None = None  # the loss doctor's reading, redrawn with the dynamics figure
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
