"""Figures and HTML of the inside views: attention heatmaps, the logit lens table, the surprise map.

Token text is the user's own, and the page is public: every piece of it is escaped (html.escape)
before it enters HTML, titles included.
"""

from __future__ import annotations

import html
import math
from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure

from gptlab.insight.lens import AttentionMap, LogitLens
from gptlab.insight.surprise import Surprise

Label = Callable[[int], str]  # a token id's text, white space made visible


def _heatmap(ax, attention: AttentionMap, title: str, vmax: float):
    weights = np.array(attention.weights, dtype=float)
    weights[np.triu_indices_from(weights, k=1)] = np.nan  # the future: masked, not "zero attention"
    image = ax.imshow(weights, vmin=0.0, vmax=vmax, cmap="viridis", interpolation="nearest")
    n = len(attention.labels)
    size = 10 if n <= 16 else 8 if n <= 32 else 6.5
    ax.set_xticks(range(n), attention.labels, rotation=90, fontsize=size, fontfamily="monospace")
    ax.set_yticks(range(n), attention.labels, fontsize=size, fontfamily="monospace")
    ax.set_xlabel("key: the token attended to")
    ax.set_ylabel("query: the token attending")
    ax.set_title(title, fontsize=11)
    return image


def attention_figure(panels: Sequence[tuple[str, AttentionMap]]) -> Figure:
    """One heatmap per (title, map), side by side, sharing one colour scale. The scale tops at the
    largest weight shown rather than 1: over a long prompt every weight is small, and a 0-1 scale
    would paint the whole map one dark colour."""
    fig = Figure(figsize=(6.2 * len(panels) + 0.8, 6.4))
    fig.subplots_adjust(left=0.08 if len(panels) > 1 else 0.14, right=0.9, top=0.88, bottom=0.13, wspace=0.3)
    first = panels[0][1]
    crop = f" (the last {len(first.labels)} tokens)" if first.offset else ""
    fig.suptitle(f"Layer {first.layer}, head {first.head}{crop}: each row is a token, bright cells are the "
                 "earlier tokens it reads", fontsize=12)
    vmax = max(max(max(row) for row in attention.weights) for _, attention in panels) or 1.0
    image = None
    for i, (title, attention) in enumerate(panels):
        image = _heatmap(fig.add_subplot(1, len(panels), i + 1), attention, title, vmax)
    colourbar = fig.colorbar(image, ax=fig.axes, fraction=0.03, pad=0.02)
    colourbar.set_label("attention weight")
    return fig


def _shade(fraction: float, colour: tuple[int, int, int]) -> str:
    """White at 0, `colour` at 1 (as a CSS rgb)."""
    f = min(1.0, max(0.0, fraction))
    return "rgb({},{},{})".format(*(round(255 + (c - 255) * f) for c in colour))


LENS_COLOUR = (31, 119, 180)
SURPRISE_COLOUR = (214, 39, 40)


def lens_html(lens: LogitLens, label: Label, title: str) -> str:
    """A table: a row per layer (embeddings first), a column per position; each cell the layer's top
    guess for the next token, shaded by its probability, with the top few on hover."""
    e = html.escape
    head = "".join(f'<th title="position {lens.offset + j + 1}">{e(label(i))}</th>' for j, i in enumerate(lens.ids))
    rows = []
    for layer, cells in enumerate(lens.top):
        name = "embeddings" if layer == 0 else f"after block {layer}"
        tds = []
        for top in cells:
            token, p = top[0]
            hover = " · ".join(f"{label(t)} {q:.0%}" for t, q in top)
            tds.append(f'<td style="background:{_shade(p, LENS_COLOUR)};padding:2px 6px" '
                       f'title="{e(hover, quote=True)}">{e(label(token))}<br><small>{p:.0%}</small></td>')
        rows.append(f'<tr><th style="padding:2px 6px;text-align:left">{name}</th>{"".join(tds)}</tr>')
    crop = f" (the last {len(lens.ids)} positions)" if lens.offset else ""
    return (f'<div class="logit-lens"><p><b>{e(title)}</b>{crop}</p>'
            '<div style="overflow-x:auto"><table style="border-collapse:collapse;font-family:monospace;'
            'text-align:center;font-size:0.85em">'
            f"<tr><th>layer \\ input</th>{head}</tr>{''.join(rows)}</table></div></div>")


def surprise_html(result: Surprise, title: str) -> str:
    """The passage, each token shaded by its surprise (white: 0 bits; red: as surprised as random
    guessing), its bits on hover, and the average in bits per character."""
    e = html.escape
    top = result.random_guess_bits
    spans = [f'<span title="{e("context only: not predicted", quote=True)}" style="color:#777">'
             f"{e(result.pieces[0])}</span>"]
    for piece, bits in zip(result.pieces[1:], result.bits):
        tip = f"{piece!r}: {bits:.2f} bits"
        spans.append(f'<span style="background:{_shade(bits / top, SURPRISE_COLOUR)}" '
                     f'title="{e(tip, quote=True)}">{e(piece)}</span>')
    return (f'<div class="surprise-map"><p><b>{e(title)}</b>: {result.bits_per_character:.3f} bits per character '
            f"({result.mean_nats:.3f} nats per token over {len(result.losses)} tokens)</p>"
            '<div style="white-space:pre-wrap;font-family:monospace;line-height:1.5;border:1px solid #ddd;'
            f'padding:6px">{"".join(spans)}</div></div>')


def surprise_legend(vocab_size: int) -> str:
    """The colour scale, once for both sides."""
    top = math.log2(vocab_size)
    stops = "".join(f'<span style="background:{_shade(f, SURPRISE_COLOUR)};padding:0 0.6em">'
                    f"{f * top:.1f}</span>" for f in (0, 0.25, 0.5, 0.75, 1))
    return (f"<p>Surprise in bits per token: {stops} (right: {top:.1f} bits, the surprise of guessing uniformly "
            f"among {vocab_size:,} tokens). Hover a token for its value; grey tokens are context only.</p>")
