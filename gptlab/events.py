"""What a training run reports, as plain dataclasses: the CLI prints them, the app plots them.

metrics.jsonl holds one `as_dict()` per line; `Event.from_dict` reads a line back into its class.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

# Field annotations (strings, under `from __future__ import annotations`) -> the JSON values they take.
_JSON_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


class EventError(ValueError):
    pass


@dataclass(frozen=True)
class Event:
    step: int

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Event").lower()

    def as_dict(self) -> dict:
        return {"event": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Any) -> Event:
        """The event that `as_dict()` wrote, as its own class. Keys this version does not know
        (written by a newer gptlab) are ignored; a field with a default may be missing (a line written
        before the field existed); any other missing or mistyped field is an EventError."""
        if not isinstance(d, dict):
            raise EventError(f"An event must be a JSON object such as {{\"event\": \"step\", ...}}, not {d!r}.")
        kind = d.get("event")
        if not isinstance(kind, str) or kind not in KINDS:
            raise EventError(f"Unknown event kind {kind!r}: an event's \"event\" key must be one of "
                             f"{', '.join(map(repr, KINDS))}.")
        event_class = KINDS[kind]
        if not issubclass(event_class, cls):
            raise EventError(f"{cls.__name__}.from_dict was given a {kind!r} event; read it with Event.from_dict.")
        missing = [f.name for f in fields(event_class) if f.name not in d and f.default is MISSING]
        wrong = [f"{f.name!r} should be {f.type} but is {d[f.name]!r}" for f in fields(event_class)
                 if f.name in d and not _fits(d[f.name], f.type)]
        if missing or wrong:
            problems = ([f"it lacks {', '.join(map(repr, missing))}"] if missing else []) + wrong
            raise EventError(f"This {kind!r} event cannot be read: {'; '.join(problems)}. An event needs every "
                             "field of its kind, each of its type, as gptlab writes them.")
        return event_class(**{f.name: _convert(d[f.name], f.type) for f in fields(event_class) if f.name in d})


def _fits(value: Any, annotation: str) -> bool:
    if value is None:
        return annotation.endswith(" | None")
    allowed = _JSON_TYPES[annotation.removesuffix(" | None")]
    # JSON's true/false load as bools, which Python counts as ints too; in an event they are never numbers.
    return isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))


def _convert(value: Any, annotation: str) -> Any:
    # A float field written as a whole number (1 rather than 1.0) still reads back as a float.
    return float(value) if annotation.startswith("float") and value is not None else value


@dataclass(frozen=True)
class StepEvent(Event):
    loss: float
    lr: float
    grad_norm: float  # before clipping
    tokens_seen: int
    tokens_per_sec: float
    elapsed: float  # seconds of wall time, resumed runs included
    eta: float | None  # seconds left, when a limit makes it knowable
    # Of the `window` steps since the previous StepEvent, how many had a pre-clip norm above grad_clip;
    # None in logs written before they were counted.
    clipped: int | None = None
    window: int | None = None


@dataclass(frozen=True)
class EvalEvent(Event):
    train_loss: float
    val_loss: float
    train_ppl: float
    val_ppl: float
    best_val_loss: float
    is_best: bool
    tokens_seen: int
    elapsed: float


@dataclass(frozen=True)
class SampleEvent(Event):
    text: str


@dataclass(frozen=True)
class SnapshotEvent(Event):
    """The time machine: one fixed prompt continued by the model as it is at an evaluation, so a run's
    timeline shows its text going from gibberish to words. One event per prompt and evaluation."""
    val_loss: float
    prompt: str
    greedy: str  # the continuation alone, the likeliest token each time
    sampled: str  # the continuation alone, drawn with a fixed seed


@dataclass(frozen=True)
class CheckpointEvent(Event):
    label: str  # "best", "last" or "step-000500"
    path: str


@dataclass(frozen=True)
class DoneEvent(Event):
    status: str  # "finished", "stopped", "failed" or "diverged" (the loss blew up; see Trainer.diverge_above)
    reason: str
    tokens_seen: int
    elapsed: float
    best_val_loss: float | None


KINDS: dict[str, type[Event]] = {cls.__name__.removesuffix("Event").lower(): cls
                                 for cls in (StepEvent, EvalEvent, SampleEvent, CheckpointEvent, DoneEvent,
                                             SnapshotEvent)}
