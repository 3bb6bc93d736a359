"""The time machine's HTML: one evaluation's texts, every prompt greedy beside sampled.

Every text here is the user's (their training text, and what a model learnt from it), and the page
may be public, so all of it is escaped."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from gptlab.insight.timeline import Snapshot
from gptlab.views import show_token

NO_SNAPSHOTS = ("This run has no time-machine snapshots: it was trained before they existed, or with "
                "snapshot tokens set to 0. Train a new run to watch its text go from gibberish to words.")
NO_SNAPSHOTS_YET = "No snapshot yet: the first one comes with the run's first evaluation, at step 0."

# A model that writes only newlines must not push the page down by 48 lines: the box scrolls instead.
_STYLE = ("white-space: pre-wrap; font-family: monospace; margin: 0.2em 0 0.8em; padding: 0.4em; "
          "border: 1px solid #8884; border-radius: 4px; max-height: 9em; overflow-y: auto")


def message_html(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def snapshot_html(snapshot: Snapshot, asked: int | None = None) -> str:
    """The texts at one evaluation, with its validation loss; `asked`, the step the user picked,
    when the nearest evaluation is another."""
    ppl = math.exp(min(snapshot.val_loss, 50))
    near = (f" (the evaluation nearest to step {asked:,})" if asked is not None and asked != snapshot.step else "")
    parts = [f"<p><b>step {snapshot.step:,}</b>{near} · validation loss <b>{snapshot.val_loss:.3f}</b> "
             f"(perplexity {ppl:,.1f})</p>"]
    for text in snapshot.texts:
        prompt = html.escape(text.prompt)
        parts.append(f"<p>prompt <code>{html.escape(show_token(text.prompt))}</code>; in bold below, then what "
                     "the model wrote:</p>")
        for label, body in (("greedy (the likeliest token each time)", text.greedy),
                            ("sampled (temperature 0.8, the run's seed)", text.sampled)):
            parts.append(f"<div>{label}</div><div style=\"{_STYLE}\"><b>{prompt}</b>{html.escape(body)}</div>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# What the service answers with


@dataclass(frozen=True)
class TimelineData:
    """A run's timeline as data (the API's answer): the evaluated steps, and each snapshot as a dict
    of step, val_loss and texts [{prompt, greedy, sampled}]; `message` says why it is empty."""
    steps: list[int]
    snapshots: list[dict]
    message: str = ""


@dataclass(frozen=True)
class TimeMachineView:
    step: int | None  # the evaluation shown; None when the run has none
    html: str


@dataclass(frozen=True)
class StepComparison:
    step_a: int | None
    step_b: int | None
    html_a: str
    html_b: str
