"""Figures of a run's events (gptlab.events, as read from metrics.jsonl), for the app, the CLI and model cards.

Figures are built with matplotlib's object API (no pyplot), so threads never share global figure
state and nothing leaks when a figure is dropped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from gptlab.events import EvalEvent, Event, StepEvent
from gptlab.insight.baselines import Baselines, bits_per_character
from gptlab.insight.dynamics_plots import grad_norm_axes
from gptlab.insight.gradnorm import grad_norm_summary

TRAIN_COLOUR, VAL_COLOUR = "#1f77b4", "#d62728"
UNIGRAM_COLOUR, BIGRAM_COLOUR = "#9467bd", "#2ca02c"


def _series(events: Iterable[Event], kind: type[Event], key: str, x: str = "step") -> tuple[list, list]:
    xs, ys = [], []
    for e in events:
        value = getattr(e, key) if isinstance(e, kind) else None
        if value is not None and math.isfinite(value):
            xs.append(e.tokens_seen if x == "tokens" else e.step)
            ys.append(value)
    return xs, ys


def _plain_log_labels(axis) -> None:
    """Tick labels of a log axis as plain numbers (2, 3, 5), not 5x10^0, which overflow the fixed margins."""
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def loss_caption(val_loss: float | None, vocab_size: int | None, baselines: Baselines | None = None, *,
                 trained_since: bool = False) -> str:
    """One sentence on where the latest validation loss stands against the baselines (lowest first).
    `trained_since`: that loss is the untrained model's (step 0) and steps have been taken since, as
    after a stop before the first evaluation; "not better than random" would then misread the run."""
    if val_loss is None or not math.isfinite(val_loss):
        return "No validation loss yet: the first evaluation places the model against the baselines."
    if trained_since:
        return ("Only the untrained model has been evaluated: the next evaluation places the trained one "
                "against the baselines.")
    unit = baselines.unit if baselines else "token"
    if baselines is not None:
        if val_loss < baselines.bigram:
            return f"Your model now beats a model that knows only the previous {unit}."
        if val_loss < baselines.unigram:
            return f"Your model beats {unit} frequencies; next to beat: the previous-{unit} model (bigram)."
    if vocab_size and val_loss < math.log(vocab_size):
        nxt = f" Next to beat: {unit} frequencies alone (unigram)." if baselines else ""
        return f"Your model beats random guessing.{nxt}"
    return "Not yet better than random guessing: the loss should fall below the grey dashed line."


def loss_figure(events: Sequence[Event], vocab_size: int | None = None, *, log_scale: bool = False,
                x: str = "step", title: str | None = None, baselines: Baselines | None = None,
                tokens_per_char: float | None = None) -> Figure:
    """Training loss per step, train/val loss at evaluations, and the losses to beat: ln(vocab) (a
    model that guesses uniformly at random) and, given `baselines`, the unigram and bigram models of
    the text (gptlab.insight.baselines). With a tokens-per-character ratio (the baselines', or
    `tokens_per_char`) a right-hand axis reads the loss in bits per character, the same scale for
    every tokenizer. The title says where the latest validation loss stands, unless `title` is given."""
    fig = Figure(figsize=(8, 4.2))
    fig.subplots_adjust(left=0.09, right=0.91, top=0.92, bottom=0.12)  # fixed margins: a layout engine costs ~30%
    ax = fig.add_subplot()
    sx, sy = _series(events, StepEvent, "loss", x)
    if sx:
        ax.plot(sx, sy, color=TRAIN_COLOUR, alpha=0.3, linewidth=1, label="train loss (each step)")
    for key, colour, label in (("train_loss", TRAIN_COLOUR, "train loss (eval)"),
                               ("val_loss", VAL_COLOUR, "validation loss")):
        ex, ey = _series(events, EvalEvent, key, x)
        if ex:
            ax.plot(ex, ey, "o-", color=colour, markersize=4, linewidth=2, label=label)
    vocab_size = vocab_size or (baselines.vocab_size if baselines else None)
    if vocab_size:
        ax.axhline(math.log(vocab_size), color="grey", linestyle="--", linewidth=1,
                   label=f"random guessing (ln {vocab_size} = {math.log(vocab_size):.2f})")
    if baselines is not None:
        unit = baselines.unit
        for value, colour, label in ((baselines.unigram, UNIGRAM_COLOUR, f"{unit} frequencies (unigram)"),
                                     (baselines.bigram, BIGRAM_COLOUR, f"previous {unit} (bigram)")):
            ax.axhline(value, color=colour, linestyle=":", linewidth=1.5, label=f"{label} = {value:.2f}")
    if log_scale:
        ax.set_yscale("log")
        _plain_log_labels(ax.yaxis)
    ax.set_xlabel("tokens seen" if x == "tokens" else "step")
    ax.set_ylabel("loss (cross-entropy, nats per token)")
    ratio = baselines.tokens_per_char if baselines else tokens_per_char
    if ratio:
        right = ax.secondary_yaxis("right", functions=(lambda y: bits_per_character(y, ratio),
                                                       lambda b: b * math.log(2) / ratio))
        right.set_ylabel("bits per character")
        if log_scale:
            _plain_log_labels(right.yaxis)
    val_at, val = _series(events, EvalEvent, "val_loss", x)
    trained_since = bool(val_at) and val_at[-1] == 0 and bool(sx) and sx[-1] > 0
    caption = loss_caption(val[-1] if val else None, vocab_size, baselines, trained_since=trained_since)
    # A fixed y skips matplotlib's search for a title position, which measures every axis (a right one too).
    ax.set_title(title or caption, fontsize=10, y=1.0, pad=6)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(loc="upper right", fontsize=8)
    if not (sx or val):
        ax.text(0.5, 0.5, "No training yet: start a run to see the loss fall.", ha="center", va="center",
                transform=ax.transAxes, color="grey")
    return fig


def dynamics_figure(events: Sequence[Event], grad_clip: float | None = None) -> Figure:
    """Learning rate, gradient norm (before clipping, with the clip threshold `grad_clip` and the
    share of steps clipped) and throughput per step."""
    fig = Figure(figsize=(8, 2.6))
    fig.subplots_adjust(left=0.07, right=0.99, top=0.88, bottom=0.16, wspace=0.3)
    panels = (("lr", "learning rate"), ("grad_norm", "gradient norm"), ("tokens_per_sec", "tokens / s"))
    for i, (key, label) in enumerate(panels, 1):
        ax = fig.add_subplot(1, 3, i)
        if key == "grad_norm":
            grad_norm_axes(ax, grad_norm_summary(events, grad_clip))
        else:
            xs, ys = _series(events, StepEvent, key)
            if xs:
                ax.plot(xs, ys, linewidth=1.2)
            ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return fig


def compare_figure(runs: Sequence[tuple[str, Sequence[Event]]], *, log_scale: bool = False) -> Figure:
    """Validation (solid) and training (dotted) loss of several runs, overlaid."""
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, events) in enumerate(runs):
        colour = f"C{i}"
        for key, style in (("val_loss", "o-"), ("train_loss", ":")):
            xs, ys = _series(events, EvalEvent, key)
            if xs:
                ax.plot(xs, ys, style, color=colour, markersize=3,
                        label=f"{name}: {'validation' if key == 'val_loss' else 'train'}")
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Runs compared")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=8)
    return fig


def save_loss_plot(events: Sequence[Event], path: str | Path, vocab_size: int | None = None,
                   baselines: Baselines | None = None) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    loss_figure(events, vocab_size, baselines=baselines).savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
