"""The learning-rate schedule a run will follow, before it starts.

Every value comes from TrainConfig.lr_at, the function the trainer calls at each step, so the preview
cannot drift from what training does. The trainer's k-th optimiser step (StepEvent.step == k) uses
lr_at(k - 1): the rate is set before the step counter moves.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptlab.config import WSD_COOLDOWN, TrainConfig

POINTS = 400  # enough for a smooth line at 1280 px; a billion-step run is never evaluated step by step


@dataclass(frozen=True)
class Schedule:
    steps: tuple[int, ...]  # optimiser steps, numbered as StepEvents number them (1 .. max_steps)
    lrs: tuple[float, ...]  # the rate each of those steps uses
    warmup_steps: int
    max_steps: int
    peak: float  # the highest rate of the run
    final: float  # the rate of the last step, if the run reaches max_steps
    # With a time budget: the rate after warmup when the clock is further along than the steps.
    clock_seconds: tuple[float, ...] = ()
    clock_lrs: tuple[float, ...] = ()
    max_time: float | None = None
    summary: str = ""  # the schedule in words


def _sample_steps(config: TrainConfig, points: int) -> list[int]:
    n = config.max_steps
    if n <= points:
        return list(range(1, n + 1))
    # Evenly spaced, plus the corners a straight-line plot must not cut: the end of warmup and the
    # start of a wsd cool-down.
    steps = {1 + round(i * (n - 1) / (points - 1)) for i in range(points)}
    cooldown = config.warmup_steps + round((1 - WSD_COOLDOWN) * (n - config.warmup_steps))
    for corner in (config.warmup_steps, config.warmup_steps + 1, cooldown, cooldown + 1):
        if 1 <= corner <= n:
            steps.add(corner)
    return sorted(steps)


def clock(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{s:02d}" if hours else f"{minutes}:{s:02d}"


def _describe(config: TrainConfig, final: float) -> str:
    c, n, w = config, config.max_steps, config.warmup_steps
    if w >= n:
        return (f"The warmup ({w:,} steps) is longer than the run ({n:,} steps): the rate only rises, to {final:.2e} "
                f"at the last step, never reaching the peak of {c.learning_rate:.2e}, and never decays.")
    words = (f"The rate rises linearly over the first {w:,} steps to its peak of {c.learning_rate:.2e}, then "
             if w else f"The rate starts at its peak of {c.learning_rate:.2e} and ")
    if c.lr_schedule == "constant":
        words += "stays there to the end."
    elif c.lr_schedule == "wsd":
        start = w + round((1 - WSD_COOLDOWN) * (n - w))
        words += (f"stays flat until about step {start:,}, then cools down linearly to min_lr ({c.min_lr:.2e}) "
                  f"at step {n:,}.")
    else:
        words += f"follows a {c.lr_schedule} decay to min_lr ({c.min_lr:.2e}) at step {n:,}."
    if c.max_time is None:
        return words
    budget = clock(c.max_time)
    if c.lr_schedule == "constant":
        return words + f" The {budget} time budget only ends the run; it does not change a constant rate."
    return words + (f" With a {budget} budget, the decay follows the clock if the run cannot reach max_steps in "
                    f"time (it would need {n / c.max_time:,.3g} steps a second): the rate then reaches min_lr at "
                    f"about {budget} (the budget less the final evaluation), at whatever step the run has reached. "
                    "The warmup always counts steps. The step rate is not known before Start, so the curve is "
                    "drawn by steps, and the second panel shows the rate when the clock leads.")


def lr_schedule(config: TrainConfig, points: int = POINTS) -> Schedule:
    """The rates `config` gives each step (a sample of steps for long runs), and the schedule in words."""
    steps = _sample_steps(config, max(2, points))
    lrs = [config.lr_at(step - 1) for step in steps]
    final = config.lr_at(config.max_steps - 1)
    seconds, by_clock = (), ()
    if config.max_time is not None:
        seconds = tuple(config.max_time * i / (points - 1) for i in range(points))
        # At the end of warmup the steps have not begun to decay, so the clock alone sets the rate.
        by_clock = tuple(config.lr_at(config.warmup_steps, t / config.max_time) for t in seconds)
    return Schedule(steps=tuple(steps), lrs=tuple(lrs), warmup_steps=config.warmup_steps, max_steps=config.max_steps,
                    peak=max(lrs), final=final, clock_seconds=seconds, clock_lrs=by_clock, max_time=config.max_time,
                    summary=_describe(config, final))
