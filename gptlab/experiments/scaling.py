"""The scaling lab's fit: L(N) = a·N^(−α) + c by least squares, and an honest prediction.

For a fixed α the model is linear in (a, c), so those have an exact least-squares solution; the
fit searches α alone (variable projection), which cannot wander off into a local minimum of three
coupled parameters. The uncertainty of a prediction is measured, not assumed: the fit is redone
without each point in turn, and the spread of those refits' predictions is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHA_RANGE = (1e-3, 4.0)
GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class PowerLaw:
    a: float
    alpha: float
    c: float  # the loss no model size gets below (the text's own entropy, as far as this ladder can tell)
    rmse: float

    def __call__(self, n) -> np.ndarray | float:
        return self.a * np.power(np.asarray(n, dtype=float), -self.alpha) + self.c

    def __str__(self) -> str:
        return f"L(N) = {self.a:.3g}·N^(−{self.alpha:.3f}) + {self.c:.3f}"


@dataclass(frozen=True)
class Prediction:
    n: float
    loss: float
    low: float  # the lowest and highest prediction among the leave-one-out refits
    high: float
    refits: int


def _solve(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(a, c, sum of squared residuals) for a fixed alpha."""
    design = np.stack([np.power(x, -alpha), np.ones_like(x)], axis=1)
    (a, c), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ np.array([a, c])
    return float(a), float(c), float(residual @ residual)


def _cost(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    a, _, sse = _solve(x, y, alpha)
    return sse if a > 0 else math.inf


def fit_power_law(n: Sequence[float], loss: Sequence[float]) -> PowerLaw:
    """The least-squares fit of loss = a·n^(−α) + c; it needs three points of distinct n > 0."""
    x, y = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("A fit needs one loss for each size.")
    if len(np.unique(x)) < 3 or not (np.all(x > 0) and np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("A power-law fit needs at least three runs of different, positive sizes with finite "
                         "losses; add a size to the ladder.")
    # Sizes span orders of magnitude: scale them so N^-alpha stays well conditioned for any alpha.
    scale = float(np.exp(np.mean(np.log(x))))
    xs = x / scale
    grid = np.geomspace(*ALPHA_RANGE, 400)
    # A law whose loss rises with size (a < 0) fits some ladders best, and means nothing: only a > 0.
    errors = [sse if a > 0 else math.inf for a, _, sse in (_solve(xs, y, alpha) for alpha in grid)]
    if not math.isfinite(min(errors)):
        raise ValueError("The loss does not fall as the model grows on this ladder, so no power law fits it: under "
                         "this budget the larger models did not train long enough. Give every run the same number "
                         "of steps (not seconds), or more of them.")
    best = int(np.argmin(errors))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    for _ in range(80):  # golden-section search between the grid neighbours of the best alpha
        m1, m2 = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
        if _cost(xs, y, m1) < _cost(xs, y, m2):
            hi = m2
        else:
            lo = m1
    alpha = (lo + hi) / 2
    a, c, sse = _solve(xs, y, alpha)
    return PowerLaw(a * scale**alpha, alpha, c, math.sqrt(sse / len(x)))


def predict(n: Sequence[float], loss: Sequence[float], at: float) -> Prediction:
    """The fitted loss at size `at`, with the range of the refits that leave one point out (only
    when at least four points leave three for each refit)."""
    fit = fit_power_law(n, loss)
    value = float(fit(at))
    refits = []
    if len(n) >= 4:
        for i in range(len(n)):
            keep = [j for j in range(len(n)) if j != i]
            try:
                refits.append(float(fit_power_law([n[j] for j in keep], [loss[j] for j in keep])(at)))
            except ValueError:
                continue
    spread = refits or [value]
    return Prediction(float(at), value, min(spread + [value]), max(spread + [value]), len(refits))
