"""The training time machine: what a run's model wrote at each evaluation, scrubbed step by step or
two steps side by side. Nothing here runs a model: the texts were written during training, so
answering is reading the run's log."""

from __future__ import annotations

import math
from dataclasses import asdict

from gptlab.data import DataError
from gptlab.insight.timeline import Snapshot, nearest, snapshots
from gptlab.runs import RunError
from gptlab.service.base import LabBase
from gptlab.timeline_view import (NO_SNAPSHOTS, NO_SNAPSHOTS_YET, StepComparison, TimelineData, TimeMachineView,
                                  message_html, snapshot_html)


class Timeline(LabBase):
    def _snapshots(self, owner, run_id) -> tuple[list[Snapshot], str]:
        """The run's snapshots, and the sentence to show instead when it has none."""
        if not run_id:
            raise RunError("There is no run yet; start one on the Train tab, and its timeline grows with every "
                           "evaluation.")
        owner = self.owner_or_new(owner)
        info = self.registry.get(owner, run_id)
        timeline = snapshots(self.registry.events(owner, run_id))
        empty = NO_SNAPSHOTS_YET if info.status == "running" and info.train.get("snapshot_tokens", 0) else NO_SNAPSHOTS
        return timeline, "" if timeline else empty

    def timeline(self, *, owner: str | None, run_id: str | None) -> TimelineData:
        """The run's snapshots as data: for the API, and for the step pickers."""
        timeline, message = self._snapshots(owner, run_id)
        return TimelineData([s.step for s in timeline], [asdict(s) for s in timeline], message)

    def time_machine(self, *, owner: str | None, run_id: str | None, step) -> TimeMachineView:
        """The evaluation nearest to `step` (the latest when no step is given)."""
        timeline, message = self._snapshots(owner, run_id)
        asked = _step(step, "step")
        chosen = nearest(timeline, timeline[-1].step if asked is None and timeline else asked or 0)
        if chosen is None:
            return TimeMachineView(None, message_html(message))
        return TimeMachineView(chosen.step, snapshot_html(chosen, asked))

    def compare_steps(self, *, owner: str | None, run_id: str | None, step_a, step_b) -> StepComparison:
        """Two evaluations of one run side by side; no step A means the first, no step B the latest."""
        timeline, message = self._snapshots(owner, run_id)
        asked_a, asked_b = _step(step_a, "step A"), _step(step_b, "step B")
        if not timeline:
            return StepComparison(None, None, message_html(message), "")
        a = nearest(timeline, timeline[0].step if asked_a is None else asked_a)
        b = nearest(timeline, timeline[-1].step if asked_b is None else asked_b)
        return StepComparison(a.step, b.step, snapshot_html(a, asked_a), snapshot_html(b, asked_b))


def _step(value, name: str) -> int | None:
    """A step as a slider, a number box or a dropdown sends it: a number, a numeric text, or nothing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value.replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise DataError(f"{name} must be a training step: a whole number of 0 or more, such as 250; got {value!r:.40}.")
    return int(round(number))
