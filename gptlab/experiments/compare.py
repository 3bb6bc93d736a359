"""Lining runs up: smoothing, the x axes runs are compared on, and what a spread over seeds says.

Pure functions over numbers and events; the figures in gptlab.experiments.figures draw them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from gptlab.events import EvalEvent, Event, StepEvent

X_AXES = ("step", "tokens seen", "wall time (s)", "epoch")


def ema(values: Sequence[float], weight: float) -> list[float]:
    """The exponential moving average TensorBoard's smoothing slider draws: weight 0 is the raw
    curve, 0.99 very smooth. Debiased, so the first points are not pulled towards zero."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"Smoothing must be at least 0 and below 1, got {weight}.")
    out, running = [], 0.0
    for i, value in enumerate(values, 1):
        running = weight * running + (1 - weight) * value
        out.append(running / (1 - weight**i))
    return out


def x_of(event: Event, axis: str, train_tokens: int | None = None) -> float | None:
    """Where an event sits on one of X_AXES; an epoch needs the run's number of training tokens."""
    if axis == X_AXES[0]:
        return float(event.step)
    if axis == X_AXES[1]:
        return float(event.tokens_seen)
    if axis == X_AXES[2]:
        return float(event.elapsed)
    if axis == X_AXES[3]:
        return event.tokens_seen / train_tokens if train_tokens else None
    raise ValueError(f"The x axis is one of: {', '.join(X_AXES)}; got {axis!r}.")


@dataclass(frozen=True)
class Curve:
    name: str
    train_x: list[float]
    train_y: list[float]  # smoothed training loss at each logged step
    val_x: list[float]
    val_y: list[float]  # validation loss at each evaluation


def curve(name: str, events: Sequence[Event], *, axis: str = X_AXES[0], smoothing: float = 0.0,
          train_tokens: int | None = None) -> Curve:
    """A run's whole loss history on the chosen axis (a resumed run's log holds all of it)."""
    steps = [e for e in events if isinstance(e, StepEvent) and math.isfinite(e.loss)]
    evals = [e for e in events if isinstance(e, EvalEvent) and math.isfinite(e.val_loss)]
    tx = [x_of(e, axis, train_tokens) for e in steps]
    vx = [x_of(e, axis, train_tokens) for e in evals]
    if any(x is None for x in tx + vx):
        raise ValueError("This run does not record how many training tokens it has, so it cannot be drawn by "
                         "epoch; choose another x axis.")
    return Curve(name, tx, ema([e.loss for e in steps], smoothing), vx, [e.val_loss for e in evals])


@dataclass(frozen=True)
class Spread:
    """Final validation losses of one configuration over several seeds."""
    label: str
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def width(self) -> float:
        return self.high - self.low


def verdict(a: Spread, b: Spread) -> str:
    """Whether B beats A by more than the seeds' own spread, in a plain sentence."""
    if len(a.values) < 2 or len(b.values) < 2:
        return "Repeat each over at least two seeds: one run cannot tell a real difference from luck."
    gap = a.mean - b.mean
    noise = max(a.width, b.width)
    better, worse = (b, a) if gap > 0 else (a, b)
    if abs(gap) > noise:
        return (f"{better.label} beats {worse.label} by {abs(gap):.4f} in mean validation loss, more than the spread "
                f"over seeds ({noise:.4f}): the difference is real, not luck.")
    return (f"{better.label} is ahead of {worse.label} by {abs(gap):.4f} in mean validation loss, but the spread over "
            f"seeds is {noise:.4f}: that is within the noise, so neither is shown to be better.")
