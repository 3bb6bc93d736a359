"""Figures that line runs up: the overlay (with bands over seeds) and the scaling lab's log-log fit.

matplotlib's object API only (no pyplot), with fixed margins: a layout engine costs about 30%.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from gptlab.experiments.compare import Curve
from gptlab.experiments.scaling import PowerLaw, Prediction

MAX_OVERLAY = 8


def overlay_figure(curves: Sequence[Curve], *, axis: str = "step",
                   bands: Sequence[tuple[str, Sequence[Curve]]] = ()) -> Figure:
    """Each run's smoothed training loss (thin) and validation loss (dots), one colour per run; a
    band is the spread of validation loss over seeds around their mean."""
    fig = Figure(figsize=(8, 4.4))
    fig.subplots_adjust(left=0.09, right=0.98, top=0.92, bottom=0.12)
    ax = fig.add_subplot()
    for i, c in enumerate(curves[:MAX_OVERLAY]):
        colour = f"C{i}"
        if c.train_x:
            ax.plot(c.train_x, c.train_y, color=colour, alpha=0.45, linewidth=1)
        if c.val_x:
            ax.plot(c.val_x, c.val_y, "o-", color=colour, markersize=3.5, linewidth=1.8, label=c.name)
    for j, (label, group) in enumerate(bands):
        colour = f"C{(len(curves) + j) % 10}"
        n = min(len(c.val_y) for c in group)
        if n == 0:
            continue
        x = np.asarray(group[0].val_x[:n])
        values = np.asarray([c.val_y[:n] for c in group])
        ax.fill_between(x, values.min(0), values.max(0), color=colour, alpha=0.2)
        ax.plot(x, values.mean(0), "-", color=colour, linewidth=2.2, label=f"{label}: mean of {len(group)} seeds")
    ax.set_xlabel(axis)
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("Runs overlaid: validation loss (dots), training loss (thin line)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(loc="upper right", fontsize=7)
    else:
        ax.text(0.5, 0.5, "Choose runs to overlay.", ha="center", va="center", transform=ax.transAxes, color="grey")
    return fig


def scaling_figure(sizes: Sequence[float], losses: Sequence[float], fit: PowerLaw | None,
                   prediction: Prediction | None) -> Figure:
    """Final validation loss against parameters on log-log axes, the fitted L(N) = a·N^-α + c, and
    the prediction for the next size up with the range of the leave-one-out refits."""
    fig = Figure(figsize=(8, 4.4))
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.13)
    ax = fig.add_subplot()
    ax.plot(sizes, losses, "o", color="C0", markersize=7, label="runs of the ladder")
    if fit is not None:
        top = prediction.n if prediction else max(sizes)
        n = np.geomspace(min(sizes) / 1.5, top * 1.3, 200)
        ax.plot(n, fit(n), "-", color="C1", label=str(fit))
        ax.axhline(fit.c, color="grey", linestyle=":", linewidth=1, label=f"c = {fit.c:.3f} (what size alone cannot beat)")
    if prediction is not None:
        ax.errorbar([prediction.n], [prediction.loss], yerr=[[prediction.loss - prediction.low],
                                                             [prediction.high - prediction.loss]],
                    fmt="s", color="C3", capsize=5, label=f"predicted at {prediction.n:,.0f}: {prediction.loss:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Losses span a narrow range, where log ticks would read "2.5×10⁰": plain numbers instead.
    plain = FuncFormatter(lambda v, _: f"{v:.2f}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("parameters (without embeddings)")
    ax.set_ylabel("final validation loss")
    ax.set_title("Scaling lab: loss against model size, with the fitted power law", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig
