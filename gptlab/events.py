"""What a training run reports, as plain dataclasses: the CLI prints them, the app plots them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Event:
    step: int

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Event").lower()

    def as_dict(self) -> dict:
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class StepEvent(Event):
    loss: float
    lr: float
    grad_norm: float  # before clipping
    tokens_seen: int
    tokens_per_sec: float
    elapsed: float  # seconds of wall time, resumed runs included
    eta: float | None  # seconds left, when a limit makes it knowable


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
class CheckpointEvent(Event):
    label: str  # "best", "last" or "step-000500"
    path: str


@dataclass(frozen=True)
class DoneEvent(Event):
    status: str  # "finished", "stopped" or "failed"
    reason: str
    tokens_seen: int
    elapsed: float
    best_val_loss: float | None
