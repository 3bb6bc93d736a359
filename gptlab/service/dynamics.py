"""Training dynamics: the learning-rate preview before Start, and the loss doctor's reading of a run
with the settings each fix would fill in (the gradient-norm panel is part of the live view)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from matplotlib.figure import Figure

from gptlab.config import TrainConfig
from gptlab.insight.doctor import Diagnosis, diagnose
from gptlab.insight.dynamics_plots import DoctorView, doctor_view, schedule_figure
from gptlab.insight.schedule import Schedule, clock, lr_schedule
from gptlab.runs import RunError
from gptlab.service.base import LabBase

# The settings that decide the schedule; lr_at reads nothing else.
SCHEDULE_SETTINGS = ("learning_rate", "min_lr", "lr_schedule", "warmup_steps", "max_steps", "max_time")


@dataclass(frozen=True)
class LrPreview:
    figure: Figure
    text: str  # the schedule in words, or the problem with the settings
    schedule: Schedule | None  # None when the settings are invalid

    def data(self) -> dict[str, Any]:
        """The schedule as plain data (JSON), for the API."""
        if self.schedule is None:
            return {"problem": self.text.removeprefix("**Problem**: ")}
        s = self.schedule
        return {"steps": list(s.steps), "lr": list(s.lrs), "warmup_steps": s.warmup_steps, "max_steps": s.max_steps,
                "peak": s.peak, "final": s.final, "max_time": s.max_time, "clock_seconds": list(s.clock_seconds),
                "clock_lr": list(s.clock_lrs), "summary": s.summary}


@dataclass(frozen=True)
class DoctorReport:
    diagnoses: list[Diagnosis]
    view: DoctorView

    def data(self) -> list[dict[str, Any]]:
        return [{"kind": d.kind, "title": d.title, "message": d.message, "fix": d.fix, "fix_label": d.fix_label}
                for d in self.diagnoses]


class Dynamics(LabBase):
    def lr_preview(self, *, settings: Mapping[str, Any]) -> LrPreview:
        """The schedule the trainer will follow with these settings, under this server's time cap
        (Start applies it, and lr_at follows the clock of the capped budget). Invalid settings are
        answered with the config's own message (as the size line does), not raised: the preview
        follows every keystroke."""
        try:
            asked = TrainConfig.from_form({k: settings[k] for k in SCHEDULE_SETTINGS if k in settings})
        except ValueError as e:
            return LrPreview(schedule_figure(None, str(e)), f"**Problem**: {e}", None)
        cap = self.caps.max_seconds
        schedule = lr_schedule(asked.replace(max_time=min(asked.max_time or math.inf, cap)))
        if asked.max_time is None:
            rate = f"{asked.max_steps / cap:,.3g}"
            text = (lr_schedule(asked, points=2).summary + f" This server stops every run after {clock(cap)}: "
                    f"were the run slower than {rate} steps a second, the decay would follow the clock instead, "
                    f"reaching min_lr at {clock(cap)}.")
        elif asked.max_time > cap:
            text = schedule.summary + f" (You asked for {clock(asked.max_time)}; this server stops every run after " \
                                      f"{clock(cap)}.)"
        else:
            text = schedule.summary
        return LrPreview(schedule_figure(schedule), text, schedule)

    def loss_doctor(self, *, owner: str | None, run_id: str | None) -> DoctorReport:
        """The doctor's reading of a run's curves so far (pure Python over its events: cheap)."""
        if not run_id:
            raise RunError("There is no run to read yet; start one on the Train tab first.")
        owner = self.owner_or_new(owner)
        info = self.registry.get(owner, run_id)
        found = diagnose(self.registry.events(owner, run_id), info.model.get("vocab_size") or 2, info.train, info.model)
        return DoctorReport(found, doctor_view(found, finished=info.status != "running"))

    def doctor_fix(self, *, owner: str | None, run_id: str | None, kind: str) -> dict[str, Any]:
        """The settings the `kind` diagnosis suggests for a new run, as the Train tab's form takes them."""
        report = self.loss_doctor(owner=owner, run_id=run_id)
        found = next((d for d in report.diagnoses if d.kind == kind), None)
        if found is None or not found.fix:
            raise RunError("The loss doctor no longer reads that in this run's curves, so there is no fix to fill "
                           "in; see its latest reading.")
        return dict(found.fix)
