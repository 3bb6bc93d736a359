"""Figures and views of the decoding panels, and the dataclasses the service answers them with: the
next-token distribution stage by stage, the finished beams, and the memorisation meter.

Token labels come in as plain text (the service makes them with its tokenizer); everything that
reaches HTML is escaped, since the text is the user's and the page may be public.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Sequence

from matplotlib.figure import Figure

from gptlab.insight.distribution import Stages
from gptlab.insight.memorise import Memorisation


@dataclass(frozen=True)
class NextTokenChart:
    figure: Figure
    note: str  # one paragraph of markdown: what the stages are, and why greedy and beam show fewer


@dataclass(frozen=True)
class BeamRow:
    rank: int
    text: str  # the prompt and this hypothesis
    score: float  # sum_logprobs / length ** length_penalty: the beams are ranked by it
    sum_logprobs: float
    length: int  # new tokens, an end-of-text included
    ended: bool  # with end-of-text, rather than at max new tokens


@dataclass(frozen=True)
class MemorisationView:
    html: str  # the sample with its longest copy marked, and a one-line summary above it
    longest: str  # the copied text
    longest_tokens: int
    novel_share: float | None  # of the continuation's n-grams; None when it is shorter than n
    n: int


_KEPT, _REMOVED = "#4c72b0", "#c44e52"


def stages_figure(stages: Stages, labels: Sequence[str]) -> Figure:
    """One panel per stage, the same candidates on the same rows, so a bar that shrinks, grows or
    vanishes from one panel to the next is what that control did."""
    k = len(stages.stages)
    fig = Figure(figsize=(min(12.8, max(8.0, 2.6 + 2.2 * k)), 0.9 + 0.28 * len(labels) + 0.9), dpi=100)
    axes = fig.subplots(1, k, sharey=True, squeeze=False)[0]
    fig.subplots_adjust(left=0.8 / fig.get_figwidth() + 0.04, right=0.98, top=1 - 0.9 / fig.get_figheight(),
                        bottom=0.7 / fig.get_figheight(), wspace=0.12)
    rows = list(range(len(labels)))
    top = max(max(s.probs) for s in stages.stages) or 1.0
    for ax, stage in zip(axes, stages.stages):
        colors = [_KEPT if p > 0 else _REMOVED for p in stage.probs]
        ax.barh(rows, stage.probs, color=colors)
        for row, p in zip(rows, stage.probs):
            if p == 0:
                ax.text(0, row, " removed", va="center", fontsize=7, color=_REMOVED)
            elif stage is stages.stages[-1]:
                ax.text(p, row, f" {p:.0%}" if p >= 0.01 else " <1%", va="center", fontsize=7)
        ax.set_xlim(0, top * 1.25)
        ax.set_title(f"{stage.name}\n{stage.kept:,} tokens possible", fontsize=9)
        ax.set_xlabel("probability", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(rows, labels)
    axes[0].invert_yaxis()  # the model's favourite on top
    axes[0].set_ylabel("candidate next token", fontsize=8)
    fig.suptitle(_caption(stages), fontsize=10)
    return fig


def _caption(stages: Stages) -> str:
    if len(stages.stages) == 1:
        return "The model's next-token distribution: no decoding control changes it here"
    return "Left to right, each decoding control in turn reshapes the model's distribution: watch bars shrink or vanish"


def stages_note(stages: Stages) -> str:
    if stages.strategy == "sample":
        return ("Sampling draws from the last panel. Processors run in transformers' order: penalties first, then "
                "temperature, top-k, top-p and min-p; red rows were removed.")
    what = ("Greedy decoding takes the top bar of the last panel" if stages.strategy == "greedy" else
            "Beam search scores continuations with these log-probabilities")
    return (f"{what}. Greedy and beam search do not warp: temperature, top-k, top-p and min-p apply only when "
            "sampling, so only the repetition penalty and n-gram blocking (when on) change the distribution.")


def memorisation_html(text: str, start: int, end: int, summary: str) -> str:
    """`text` with text[start:end] marked, all of it escaped; white space kept as typed."""
    body = (html.escape(text[:start]) + '<mark class="copied" style="background:#ffd54f">' +
            html.escape(text[start:end]) + "</mark>" + html.escape(text[end:])) if end > start else html.escape(text)
    return (f'<div class="memorisation"><p>{html.escape(summary)}</p>'
            f'<pre style="white-space:pre-wrap;font-size:0.9em">{body}</pre></div>')


def memorisation_summary(result: Memorisation, unit: str) -> str:
    share = ("too short to count 8-grams" if result.novel_share is None else
             f"{result.novel_share:.0%} of its {result.ngrams:,} {result.n}-grams of {unit} never occur in the "
             "training text")
    if result.longest.length == 0:
        return f"Nothing of the continuation occurs in the training text; {share}."
    longer = " or more" if result.capped else ""
    return (f"The longest span copied word for word from the training text (marked) is {result.longest.length:,}"
            f"{longer} {unit} long; {share}.")
