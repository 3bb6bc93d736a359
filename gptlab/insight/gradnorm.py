"""The gradient norm over a run: how often clipping acted, its typical size, and its spikes.

The trainer reports the norm before clipping at each logged step, and (since it counts them) how
many steps of each log window were clipped, so the share of steps clipped is exact even when only
every tenth norm is logged. Logs written before that count fall back to the logged steps alone.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from gptlab.events import Event, StepEvent

SPIKE_FACTOR = 4.0  # a norm this many times the median of the norms before it is a spike
SPIKE_HISTORY = 20  # logged norms that make the "before it" median
SETTLE = 0.1  # the first tenth of the logged steps is skipped: norms fall steeply while the loss does


@dataclass(frozen=True)
class GradNormSummary:
    steps: tuple[int, ...]
    norms: tuple[float, ...]  # before clipping, at each logged step
    grad_clip: float | None  # None or 0: no clipping
    clipped: int  # steps clipped (or logged steps above the threshold, when not exact)
    counted: int  # the steps `clipped` is out of
    exact: bool  # whether every step was counted, not only the logged ones
    median: float | None
    spikes: tuple[int, ...]  # steps whose norm was a spike

    @property
    def share_clipped(self) -> float | None:
        if not self.grad_clip or not self.counted:
            return None
        return self.clipped / self.counted

    def caption(self) -> str:
        if not self.steps:
            return "gradient norm: no steps yet"
        if not self.grad_clip:
            clip = "no clipping"
        elif self.exact:
            clip = f"{self.share_clipped:.0%} of steps clipped at {self.grad_clip:g}"
        else:  # an older log: only the logged steps are known
            clip = f"~{self.share_clipped:.0%} clipped at {self.grad_clip:g}"
        spikes = f", {len(self.spikes)} spike{'s' if len(self.spikes) != 1 else ''}" if self.spikes else ""
        return f"gradient norm: {clip}{spikes}"


def spike_steps(steps: Sequence[int], norms: Sequence[float], factor: float = SPIKE_FACTOR,
                history: int = SPIKE_HISTORY) -> list[int]:
    """Steps whose norm is over `factor` times the median of the `history` norms logged before it,
    once the first tenth of the run has passed (early norms fall fast and would all look like spikes)."""
    start = max(history // 2, math.ceil(SETTLE * len(norms)))
    out = []
    for i in range(start, len(norms)):
        before = norms[max(0, i - history):i]
        if before and norms[i] > factor * statistics.median(before):
            out.append(steps[i])
    return out


def grad_norm_summary(events: Sequence[Event], grad_clip: float | None) -> GradNormSummary:
    logged = [e for e in events if isinstance(e, StepEvent) and math.isfinite(e.grad_norm)]
    steps, norms = [e.step for e in logged], [e.grad_norm for e in logged]
    exact = bool(logged) and all(e.clipped is not None and e.window is not None for e in logged)
    if not grad_clip:
        clipped, counted = 0, 0
    elif exact:
        clipped, counted = sum(e.clipped for e in logged), sum(e.window for e in logged)
    else:
        clipped, counted = sum(n > grad_clip for n in norms), len(norms)
    return GradNormSummary(steps=tuple(steps), norms=tuple(norms), grad_clip=grad_clip or None, clipped=clipped,
                           counted=counted, exact=exact, median=statistics.median(norms) if norms else None,
                           spikes=tuple(spike_steps(steps, norms)))
