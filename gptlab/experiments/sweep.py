"""A sweep: one or two settings, each over 2–6 values, as the grid of runs to train (at most 12).

The grid is checked whole before anything starts: every point must be a valid configuration, and a
value that is wrong names its setting and the fix. Runs of a sweep are ordinary runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Any, Sequence

from gptlab.config import ConfigError
from gptlab.experiments.settings import Settings, _parse

MAX_RUNS = 12
MIN_VALUES, MAX_VALUES = 2, 6
# "model_size" is depth and width together (layers x width), the only setting here that is two.
SWEEPABLE = ("learning_rate", "model_size", "batch_size", "block_size", "dropout", "weight_decay",
             "warmup_steps", "max_steps", "n_layer", "n_embd", "seed")


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Point:
    label: str  # "learning_rate=0.001, n_layer=4": also the run's folder name, made safe
    overrides: dict[str, Any]
    settings: Settings

    @property
    def folder_name(self) -> str:
        return "".join(c if c.isalnum() or c in "._=-" else "_" for c in self.label.replace(", ", "_"))


def parse_axis(text: str) -> Axis:
    """An axis from "name=v1,v2,..." (the CLI's --set)."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not values.strip():
        raise ConfigError(f"--set needs a setting and its values, such as learning_rate=1e-4,1e-3,1e-2; got {text!r}.")
    return axis(name, [v.strip() for v in values.split(",")])


def axis(name: str, values: Sequence[Any]) -> Axis:
    """An axis of a sweep, its values read by the setting's type (text from a form or a flag is fine)."""
    if name not in SWEEPABLE:
        raise ConfigError(f"{name!r} cannot be swept; choose one of: {', '.join(SWEEPABLE)}.")
    values = [v for v in values if not (isinstance(v, str) and not v.strip())]
    if not MIN_VALUES <= len(values) <= MAX_VALUES:
        raise ConfigError(f"Give {name} between {MIN_VALUES} and {MAX_VALUES} values, separated by commas; "
                          f"got {len(values)}.")
    parsed = tuple(_model_size(v) if name == "model_size" else _parse(name, str(v), "the sweep") for v in values)
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"The values of {name} repeat; give each value once.")
    return Axis(name, parsed)


def _model_size(value: Any) -> tuple[int, int]:
    layers, sep, width = str(value).lower().replace("×", "x").partition("x")
    try:
        size = (int(layers), int(width))
    except ValueError:
        size = None
    if not sep or size is None or min(size) < 1:
        raise ConfigError(f"A model size is layers x width, such as 4x128; got {value!r}.")
    return size


def _overrides(name: str, value: Any, base: Settings) -> dict[str, Any]:
    if name == "learning_rate":
        # The decay keeps its shape: min_lr stays the same fraction of the peak as in the base settings.
        return {name: value, "min_lr": value * base.train.min_lr / base.train.learning_rate}
    if name != "model_size":
        return {name: value}
    layers, width = value
    # The base's head count where it divides the width; else the most heads that do, up to it.
    heads = next(h for h in range(min(base.model.n_head, width), 0, -1) if width % h == 0)
    return {"n_layer": layers, "n_embd": width, "n_head": heads}


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def grid(base: Settings, axes: Sequence[Axis], *, max_runs: int = MAX_RUNS) -> list[Point]:
    """Every combination of the axes' values on top of `base`, first axis slowest."""
    if not 1 <= len(axes) <= 2:
        raise ConfigError("A sweep varies one setting, or two for a grid.")
    if len(axes) == 2 and axes[0].name == axes[1].name:
        raise ConfigError(f"Both axes sweep {axes[0].name}; choose two different settings.")
    runs = math.prod(len(a.values) for a in axes)
    if runs > max_runs:
        raise ConfigError(f"That sweep is {' x '.join(str(len(a.values)) for a in axes)} = {runs} runs; this server "
                          f"runs at most {max_runs} in one sweep. Give fewer values.")
    points = []
    for values in product(*(a.values for a in axes)):
        overrides = base.overrides()
        for a, v in zip(axes, values):
            overrides.update(_overrides(a.name, v, base))
        label = ", ".join(f"{a.name}={_shown(v)}" for a, v in zip(axes, values))
        try:
            settings = Settings.of(base.preset, overrides)
        except ConfigError as e:
            raise ConfigError(f"The run {label} would not be valid: {e} Change that value; nothing was started.") from None
        points.append(Point(label, overrides, settings))
    return points


BAD = ("failed", "diverged")


def ended_badly(records: Sequence[Any]) -> list[tuple[str, str, str]]:
    """(name, status, reason) of each run that failed or diverged: a reason is too long for a table cell."""
    return [(r.name, r.status, r.reason) for r in records if r.status in BAD]


RESULT_HEADERS = ("run", "status", "train loss", "val loss", "bits/char", "perplexity", "time", "tokens/s", "best")


def results_table(records: Sequence[Any]) -> list[list[str]]:
    """A sweep's result under RESULT_HEADERS: the final losses of each run (history.RunRecord), the
    lowest validation loss of the runs that did not blow up marked (`ended_badly` gives their reasons)."""
    finite = [r.val_loss for r in records if r.val_loss is not None and math.isfinite(r.val_loss)
              and r.status not in BAD]
    best = min(finite) if finite else None

    def number(value, fmt: str) -> str:
        return format(value, fmt) if value is not None and math.isfinite(value) else "–"

    rows = []
    for r in records:
        minutes, seconds = divmod(int(round(r.elapsed)), 60)
        ppl = math.exp(min(r.val_loss, 50)) if r.val_loss is not None else None
        bpc = r.val_loss * r.stats["tokens"] / r.stats["characters"] / math.log(2) if (
            r.val_loss is not None and r.stats.get("tokens") and r.stats.get("characters")) else None
        rows.append([r.name, r.status, number(r.train_loss, ".4f"), number(r.val_loss, ".4f"), number(bpc, ".3f"),
                     number(ppl, ".2f"), f"{minutes}:{seconds:02d}", number(r.tokens_per_sec, ",.0f"),
                     "★" if best is not None and r.val_loss == best else ""])
    return rows
