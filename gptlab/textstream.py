"""Token ids to text, one token at a time, never splitting a character.

A GPT-2 token is a run of bytes, not of characters: an emoji or a CJK character often spans two
or three tokens, and decoding each token on its own would print replacement characters. TextStream
feeds the bytes of each token to an incremental UTF-8 decoder, which holds back an unfinished
character until its last byte arrives. Invalid bytes become U+FFFD exactly as the tokenizer's own
decode does, so the pieces always join up to tokenizer.decode(ids).
"""

from __future__ import annotations

import codecs
from typing import Iterable, Iterator

from gptlab.tokenizers import Tokenizer


class TextStream:
    """push(id) returns the text that token completes; flush() returns whatever is left at the end."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        """The rest of the text: an unfinished character at the very end becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the start of a stop string (it may yet become one)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def stream_text(ids: Iterable[int], tokenizer: Tokenizer, stop: tuple[str, ...] | list[str] = ()) -> Iterator[str]:
    """Yield the text of `ids` piece by piece, ending before the first stop string.

    Neither the stop string nor anything after it is yielded, and no more ids are read once it
    appears (a generator passed as `ids` is closed, which stops generation). A stop string can
    arrive split over several tokens, so text that could be the start of one is held back until
    the next token settles it. Pieces are never empty.
    """
    stops = tuple(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError("Stop strings must be non-empty text.")
    stream = TextStream(tokenizer)
    source = iter(ids)
    pending = ""
    try:
        for token_id in source:
            pending += stream.push(token_id)
            if not pending:
                continue
            cut = _first_stop(pending, stops)
            if cut is not None:
                if cut:
                    yield pending[:cut]
                return
            ready = len(pending) - _held_back(pending, stops)
            if ready:
                yield pending[:ready]
                pending = pending[ready:]
        pending += stream.flush()
        cut = _first_stop(pending, stops)
        if cut is not None:
            pending = pending[:cut]
        if pending:
            yield pending
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in text, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None
