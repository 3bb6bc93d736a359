"""Figures and text of the training dynamics: the learning-rate preview, the gradient-norm panel,
and the loss doctor's reading. Matplotlib's object API with fixed margins (no layout engine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gptlab.insight.doctor import Diagnosis
from gptlab.insight.gradnorm import GradNormSummary
from gptlab.insight.schedule import Schedule, clock

LR_COLOUR, NORM_COLOUR, CLIP_COLOUR = "#2ca02c", "#1f77b4", "#d62728"


def schedule_figure(schedule: Schedule | None, problem: str = "") -> Figure:
    """The rate each step will use; with a time budget, beside it the rate when the clock leads."""
    clocked = schedule is not None and bool(schedule.clock_seconds)
    fig = Figure(figsize=(8, 2.8))
    fig.subplots_adjust(left=0.1, right=0.98, top=0.78, bottom=0.18, wspace=0.28)
    ax = fig.add_subplot(1, 2 if clocked else 1, 1)
    if schedule is None:
        ax.text(0.5, 0.5, problem or "Fix the settings to see the schedule.", ha="center", va="center",
                transform=ax.transAxes, color="grey", wrap=True)
        ax.set_axis_off()
        return fig
    ax.plot(schedule.steps, schedule.lrs, color=LR_COLOUR, linewidth=1.8)
    if 0 < schedule.warmup_steps < schedule.max_steps:
        ax.axvline(schedule.warmup_steps, color="grey", linestyle=":", linewidth=1, label="end of warmup")
        ax.legend(loc="lower center", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_ylim(bottom=0)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(alpha=0.3)
    fig.suptitle("The learning rate each step will use: the warmup ramp, then the decay to min_lr", fontsize=10)
    ax.set_title("by step", fontsize=9)
    if clocked:
        right = fig.add_subplot(1, 2, 2, sharey=ax)
        right.plot(schedule.clock_seconds, schedule.clock_lrs, color=LR_COLOUR, linewidth=1.8, linestyle="--")
        right.set_xlabel(f"seconds of the {clock(schedule.max_time)} budget")
        right.grid(alpha=0.3)
        right.set_title("by the clock, after warmup (when the clock leads)", fontsize=9)
    return fig


def grad_norm_axes(ax: Axes, summary: GradNormSummary) -> None:
    """The pre-clip gradient norm over steps, the clip threshold, and the spikes, on `ax`."""
    if summary.steps:
        ax.plot(summary.steps, summary.norms, color=NORM_COLOUR, linewidth=1.0)
    if summary.grad_clip:
        ax.axhline(summary.grad_clip, color=CLIP_COLOUR, linestyle="--", linewidth=1)
        ax.text(0.99, summary.grad_clip, f"clip at {summary.grad_clip:g}", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=7, color=CLIP_COLOUR)
    if summary.spikes:
        at = dict(zip(summary.steps, summary.norms))
        ax.plot(summary.spikes, [at[s] for s in summary.spikes], "v", color=CLIP_COLOUR, markersize=4)
    ax.set_title(summary.caption(), fontsize=9)
    ax.set_xlabel("step", fontsize=7)


@dataclass(frozen=True)
class DoctorView:
    """The doctor's reading as the Train tab shows it: its text, and the fixes it offers."""
    markdown: str
    fixes: dict[str, str] = field(default_factory=dict)  # diagnosis kind -> the fix in a few words


def doctor_view(diagnoses: Sequence[Diagnosis], finished: bool = False) -> DoctorView:
    return DoctorView(doctor_markdown(diagnoses, finished), {d.kind: d.fix_label for d in diagnoses if d.fix})


def doctor_markdown(diagnoses: Sequence[Diagnosis], finished: bool = False) -> str:
    """The doctor's reading as Markdown. Its text is built from numbers and fixed sentences only,
    never from user text, so nothing in it needs escaping."""
    if not diagnoses:
        return "**Loss doctor**: too early to tell; it reads the curves once a few steps are logged."
    lines = [f"**Loss doctor**{' (final reading)' if finished else ''}:"]
    for d in diagnoses:
        fix = f" *Fix*: {d.fix_label} ({', '.join(f'{k} = {v:g}' for k, v in d.fix.items())})." if d.fix else ""
        lines.append(f"- **{d.title}**: {d.message}{fix}")
    return "\n".join(lines)
