"""The training time machine: what the model wrote at each evaluation of a run.

At every evaluation a run continues a few fixed prompts (gptlab.training.snapshot_prompts), greedy and
sampled with a fixed seed, and logs each as a SnapshotEvent. Here those events become a timeline that
a slider scrubs: step 0 is the untrained model's gibberish, the last step its best words so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from gptlab.events import Event, SnapshotEvent


@dataclass(frozen=True)
class Continuation:
    prompt: str
    greedy: str  # the continuation alone
    sampled: str


@dataclass(frozen=True)
class Snapshot:
    """One evaluation's texts: every fixed prompt, continued by the model as it was at `step`."""
    step: int
    val_loss: float
    texts: tuple[Continuation, ...]


def snapshots(events: Iterable[Event]) -> list[Snapshot]:
    """The run's snapshots in step order, one per evaluation, its prompts in the order logged.

    A step logged twice (a log written by two runs of the same folder) keeps its later texts: they
    are what the run that now owns the step wrote."""
    by_step: dict[int, list[SnapshotEvent]] = {}
    for event in events:
        if isinstance(event, SnapshotEvent):
            group = by_step.setdefault(event.step, [])
            if any(e.prompt == event.prompt for e in group):  # the same step again: start it afresh
                group.clear()
            group.append(event)
    return [Snapshot(step, group[-1].val_loss, tuple(Continuation(e.prompt, e.greedy, e.sampled) for e in group))
            for step, group in sorted(by_step.items())]


def nearest(timeline: Sequence[Snapshot], step: float) -> Snapshot | None:
    """The snapshot closest to `step` (the earlier of two as close); None for an empty timeline.
    A slider moves in whole steps, while evaluations come every eval_interval."""
    if not timeline:
        return None
    return min(timeline, key=lambda s: (abs(s.step - step), s.step))


def last_step(events: Sequence[Event]) -> int | None:
    """The step of the newest snapshot, looked for from the end (cheap for a live view); None if none."""
    return next((e.step for e in reversed(events) if isinstance(e, SnapshotEvent)), None)
