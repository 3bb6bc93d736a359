"""HTML views of tokens: the text as coloured chips, one per token, its id and text on hover.

All text here is the user's, and the page may be public: every piece of it is escaped.
"""

from __future__ import annotations

import html

from gptlab.insight.tokens import TokenizerComparison, TokenPiece, TokenView

VISIBLE = {" ": "␣", "\t": "⇥"}  # a newline is shown as ⏎ and also breaks the line
SPLIT = "◌"  # marks a token that ends inside a character (the next token completes it)
COLOURS = ("#dbeafe", "#fde68a", "#d1fae5", "#fbcfe8")  # chips alternate through them (classes t0 to t3)
# One stylesheet for the HTML component (gr.HTML's css_template), so a chip carries only its class.
CSS = "\n".join([
    ".token{font-family:ui-monospace,monospace;font-size:13px;line-height:1.9;color:#111;border-radius:3px;"
    "padding:0 1px;margin-right:1px}",
    *(f".token.t{i}{{background:{c}}}" for i, c in enumerate(COLOURS)),
    ".token-box{max-height:420px;overflow-y:auto;padding:6px;border:1px solid #ccc;border-radius:6px;"
    "background:#fff;color:#111}",
    ".token-columns{display:flex;gap:12px;flex-wrap:wrap}.token-column{flex:1;min-width:280px}",
    ".token-legend{font-size:12px;opacity:0.75;margin-top:4px}"])
NAMES = {"char": "Characters (char)", "gpt2": "GPT-2 BPE (gpt2)"}


def _shown(text: str) -> str:
    return "".join(VISIBLE.get(c, "⏎" if c == "\n" else c) for c in text)


def _hover(piece: TokenPiece) -> str:
    split = " · ends inside a character, which the next token completes" if piece.split else ""
    return f"id {piece.id} · {piece.text!r} · bytes {piece.bytes_hex}{split}"


def chip(piece: TokenPiece, index: int) -> str:
    """One token as a chip; its hover (title) gives the id, the text and the bytes."""
    text = _shown(piece.text) + (SPLIT if piece.split else "")
    breaks = "<br>" * piece.text.count("\n")
    # <wbr>: a long line may wrap between two chips (adjacent spans give the browser no place to break)
    return (f'<span class="token t{index % len(COLOURS)}" title="{html.escape(_hover(piece), quote=True)}">'
            f'{html.escape(text)}</span>{breaks or "<wbr>"}')


def summary(view: TokenView) -> str:
    """'42 tokens · 97 characters · 2.31 characters per token' (of the text shown)."""
    if not view.count:
        return "no tokens"
    shown = f" (the first {view.characters:,} characters)" if view.truncated else ""
    return (f"{view.count:,} token{'s' if view.count != 1 else ''} · {view.characters:,} characters · "
            f"{view.chars_per_token:.2f} characters per token{shown}")


LEGEND = (f"Hover over a token for its id and bytes. ␣ is a space, ⏎ a new line; {SPLIT} marks a token that "
          "ends inside a character of several bytes: the character shows on the token that completes it.")


def _legend() -> str:
    return f'<div class="token-legend">{html.escape(LEGEND)}</div>'


def token_chips_html(view: TokenView, title: str = "", *, legend: bool = True) -> str:
    """The text as chips under a line of counts; `title` names the tokenizer."""
    chips = "".join(chip(p, i) for i, p in enumerate(view.pieces))
    head = f"<b>{html.escape(title)}</b> · " if title else ""
    return (f'<div class="token-view"><div style="margin-bottom:4px">{head}{html.escape(summary(view))}</div>'
            f'<div class="token-box">{chips or "<i>(empty)</i>"}</div>{_legend() if legend else ""}</div>')


def comparison_html(comparison: TokenizerComparison) -> str:
    """The tokenizers side by side on the head of the text, each with its whole-text totals above."""
    columns = []
    for view, total in zip(comparison.views, comparison.totals):
        cpt = total.chars_per_token
        name = html.escape(NAMES.get(view.tokenizer, view.tokenizer))
        whole = (f"whole text: {total.tokens:,} tokens for {total.characters:,} characters"
                 + (f" · <b>{cpt:.2f} characters per token</b>" if cpt else ""))
        columns.append(f'<div class="token-column"><div><b>{name}</b></div><div>{whole}</div>'
                       f'{token_chips_html(view, legend=False)}</div>')
    return (f'<div class="tokenizer-comparison"><div class="token-columns">{"".join(columns)}'
            f'</div>{_legend()}</div>')
