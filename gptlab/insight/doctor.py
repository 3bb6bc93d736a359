"""The loss doctor: a plain-language reading of a run's curves, each diagnosis with a fix.

A fix is a dict of Train-tab settings (names from MODEL_FORM and TRAIN_FORM) with the values a new
run should try; the app fills the form with it and starts nothing. The rules read medians of chunks
of the logged losses, not single steps, so the noise of a mini-batch never reads as a diagnosis.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from gptlab.events import DoneEvent, EvalEvent, Event, StepEvent
from gptlab.insight.gradnorm import grad_norm_summary

KINDS = ("diverged", "plateau", "overfitting", "spiky", "too_slow", "healthy")
# Every setting a fix may change (the Train tab fills these components).
FIX_SETTINGS = ("learning_rate", "min_lr", "grad_clip", "dropout", "patience", "max_steps", "max_time")
MIN_STEPS = 10  # logged training losses before the curves say anything
OVERFIT_EVALS = 3  # evaluations in a row with a rising validation loss
MAX_DROPOUT = 0.5
SPIKES, SPIKE_SHARE = 5, 0.0025  # spikes (and share of the logged steps) that make the norms "spiky"
TAIL = 0.2  # the last fifth of the run, for "still falling steeply at the end"
# Of the loss's whole fall, the share in that last fifth that counts as steep: a straight line has 20%,
# a curve that has levelled off close to none, and the final cool-down of wsd or cosine a few percent.
STEEP = 0.15
LOW_LR, DEFAULT_LR = 1e-4, 1e-3  # a rate below LOW_LR that does not learn is raised to DEFAULT_LR
BRISK_LR = 3e-3  # a peak rate this lab's small models usually bear; below it "too slow" raises the rate


@dataclass(frozen=True)
class Diagnosis:
    kind: str  # one of KINDS
    title: str
    message: str
    fix: dict[str, Any] = field(default_factory=dict)  # setting -> value for a new run; empty: nothing to change
    fix_label: str = ""  # the fix in a few words


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def _chunk_medians(values: Sequence[float]) -> list[float]:
    width = max(3, len(values) // 20)
    return [statistics.median(values[i:i + width]) for i in range(0, len(values) - width + 1, width)] + \
        ([statistics.median(values[-width:])] if len(values) % width else [])


def _scaled_rates(train: Mapping[str, Any], factor: float) -> dict[str, float]:
    lr = _round(train["learning_rate"] * factor)
    return {"learning_rate": lr, "min_lr": min(lr, _round(train["min_lr"] * factor))}


def _diverged(medians, log_v, done, train) -> Diagnosis | None:
    # The trainer ends a run whose loss went non-finite or blew far past ln(V) as "diverged" (older
    # logs said "failed" with the NaN in the reason).
    nan = done is not None and (done.status == "diverged" or done.status == "failed" and (
        "became nan" in done.reason or "became inf" in done.reason))
    best, recent = min(medians), medians[-1]
    rising = recent - best > max(0.5, 0.25 * (log_v - best)) or (recent > log_v + 0.1 and best < log_v - 0.5)
    if not (nan or rising):
        return None
    fix = _scaled_rates(train, 1 / 3)
    label = "divide the learning rate by 3"
    if not train.get("grad_clip"):
        fix["grad_clip"], label = 1.0, label + " and clip gradients at 1.0"
    what = (f"The run ended as diverged: {done.reason.split(';')[0]}. The updates grew too large." if nan else f"The training loss has risen from its lowest, {best:.2f}, to {recent:.2f}"
            + (f", above random guessing (ln V = {log_v:.2f})" if recent > log_v else "") + ": training is diverging.")
    return Diagnosis("diverged", "Diverging", what + " The steps are too large; a smaller learning rate "
                     "(or clipping the gradient norm) keeps each update in check.", fix, label)


def _plateau(steps, medians, log_v, train) -> Diagnosis | None:
    tol = max(0.1, 0.05 * log_v)
    if steps[-1] <= train.get("warmup_steps", 0) or min(medians) < log_v - 2 * tol or medians[-1] < log_v - tol:
        return None
    # Three times a tiny rate is still tiny: below LOW_LR the fix jumps to a rate small models bear.
    factor = 3 if train["learning_rate"] >= LOW_LR else DEFAULT_LR / train["learning_rate"]
    return Diagnosis("plateau", "Not learning", f"After {steps[-1]:,} steps the loss is still {medians[-1]:.2f}, "
                     f"close to random guessing (ln V = {log_v:.2f}): the model has not begun to learn. The "
                     "learning rate is probably too small to move the weights.", _scaled_rates(train, factor),
                     "multiply the learning rate by 3" if factor == 3 else f"raise the learning rate to {DEFAULT_LR:g}")


def _overfitting(evals: list[EvalEvent], model: Mapping[str, Any], train) -> Diagnosis | None:
    if len(evals) < OVERFIT_EVALS + 1:
        return None
    span = evals[-OVERFIT_EVALS - 1:]
    vals = [e.val_loss for e in span]
    rising = all(b > a for a, b in zip(vals, vals[1:])) and vals[-1] - vals[0] > max(0.01, 0.005 * vals[0])
    if not (rising and span[-1].train_loss < span[0].train_loss):
        return None
    best = min(evals, key=lambda e: e.val_loss)
    dropout = model.get("dropout", 0.0) or 0.0
    fix, labels = {}, []
    if dropout < MAX_DROPOUT:  # past it, more dropout slows learning more than it helps
        fix["dropout"] = 0.1 if dropout < 0.1 else _round(min(MAX_DROPOUT, dropout + 0.1))
        labels.append(f"dropout {fix['dropout']:g}")
    if train.get("patience") is None:
        fix["patience"] = OVERFIT_EVALS
        labels.append(f"stop early (patience {OVERFIT_EVALS})")
    label = " and ".join(labels)
    return Diagnosis("overfitting", "Overfitting", f"The validation loss has risen for {OVERFIT_EVALS} evaluations "
                     f"in a row (to {vals[-1]:.3f}) while the training loss kept falling: the model is memorising "
                     f"the training text. The best checkpoint is from step {best.step:,} (validation loss "
                     f"{best.val_loss:.3f}); the Sample tab's 'best' uses it. More text, dropout, or early stopping "
                     "(patience) help.", fix, label)


def _spiky(events, train) -> Diagnosis | None:
    summary = grad_norm_summary(events, train.get("grad_clip"))
    if len(summary.spikes) < max(SPIKES, SPIKE_SHARE * len(summary.norms)):
        return None
    if not summary.grad_clip:
        fix, label, why = {"grad_clip": 1.0}, "clip gradients at 1.0", "Clipping is off, so each spike moves the weights far."
    else:
        fix, label = _scaled_rates(train, 1 / 2), "halve the learning rate"
        why = (f"Clipping at {summary.grad_clip:g} caps each update ({summary.share_clipped:.0%} of steps were "
               "clipped), but frequent spikes mean the rate is near the edge of stability.")
    return Diagnosis("spiky", "Spiky gradients", f"The gradient norm spiked {len(summary.spikes)} times (to over "
                     f"4x its recent median, first at step {summary.spikes[0]:,}). " + why, fix, label)


def _too_slow(medians, done, train) -> Diagnosis | None:
    if done is None or done.status != "finished" or len(medians) < 5:
        return None
    cut = min(len(medians) - 2, round((1 - TAIL) * (len(medians) - 1)))
    tail_drop, total_drop = medians[cut] - medians[-1], medians[0] - medians[-1]
    if not (total_drop > 0 and tail_drop > STEEP * total_drop and tail_drop > 0.05):
        return None
    if train["learning_rate"] < BRISK_LR:
        fix, label = _scaled_rates(train, 2), "double the learning rate"
    else:
        fix = {"max_steps": min(10**9, 2 * train["max_steps"])}
        if train.get("max_time"):
            fix["max_time"] = 2 * train["max_time"]
        label = "train twice as long"
    return Diagnosis("too_slow", "Still learning fast at the end", f"The loss fell by {tail_drop:.2f} in the last "
                     f"fifth of the run ({tail_drop / total_drop:.0%} of its whole fall): it had more to learn when the "
                     "run ended. A larger learning rate (if it stays stable) or a longer run would get further.",
                     fix, label)


def diagnose(events: Sequence[Event], vocab_size: int, train: Mapping[str, Any],
             model: Mapping[str, Any] | None = None) -> list[Diagnosis]:
    """What the curves say, most urgent first: 'healthy' alone when nothing is wrong, and nothing
    before MIN_STEPS training losses are logged (too early to tell), unless the run diverged."""
    model = model or {}
    logged = [e for e in events if isinstance(e, StepEvent) and math.isfinite(e.loss)]
    evals = [e for e in events if isinstance(e, EvalEvent) and math.isfinite(e.val_loss)]
    done = next((e for e in reversed(events) if isinstance(e, DoneEvent)), None)
    log_v = math.log(max(2, vocab_size))
    losses, steps = [e.loss for e in logged], [e.step for e in logged]
    if len(losses) < MIN_STEPS:
        # Too few losses to read a curve from; a NaN is read all the same.
        found = _diverged([statistics.median(losses)] if losses else [log_v], log_v, done, train)
        return [found] if found else []
    medians = _chunk_medians(losses)
    found = [_diverged(medians, log_v, done, train)]
    if found[0] is None:
        found += [_plateau(steps, medians, log_v, train), _spiky(events, train)]
        found += [_too_slow(medians, done, train) if found[1] is None else None]
    found.append(_overfitting(evals, model, train))
    found = [d for d in found if d is not None]
    if found:
        return found
    return [Diagnosis("healthy", "Healthy", f"The loss fell from {medians[0]:.2f} to {medians[-1]:.2f} (random "
                      f"guessing is {log_v:.2f}) without diverging, stalling or overfitting; the gradients are "
                      "steady. Nothing to fix.")]
