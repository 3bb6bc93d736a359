"""How a tokenizer cuts a text: the tokens one by one (id and text), their count, characters per token.

A byte-pair tokenizer works on UTF-8 bytes, so one character of several bytes (an é, an emoji, a
Chinese character) can be split across tokens. Each piece shows the characters its bytes *complete*:
a token that ends inside a character is marked `split`, and the character appears on the token
that finishes it (a token of only middle bytes shows no text at all). So the pieces' texts always
join back to the text, and no piece ever shows a replacement character for half a letter.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from gptlab.data import CHAR_DOCUMENT_SEPARATOR, encode_documents
from gptlab.tokenizers import build_tokenizer


@dataclass(frozen=True)
class TokenPiece:
    id: int
    text: str  # the characters this token completes ("" for a token of only a character's first bytes)
    bytes_hex: str  # the token's own bytes, e.g. "c3" (what the pieces of a split character hold)
    split: bool = False  # the token ends inside a character: its last bytes wait for the next token


@dataclass(frozen=True)
class TokenView:
    tokenizer: str  # "char" or "gpt2"
    pieces: tuple[TokenPiece, ...]
    count: int  # tokens in the text shown
    characters: int  # characters in the text shown
    truncated: bool  # the text was cut to the limit before it was tokenised

    @property
    def chars_per_token(self) -> float | None:
        return chars_per_token(self.characters, self.count)


def chars_per_token(characters: int, tokens: int) -> float | None:
    """Characters per token (None for no tokens): 1 for a character tokenizer, about 4 for GPT-2 on English."""
    return characters / tokens if tokens else None


def token_pieces(tokenizer, text: str, limit: int | None = None) -> TokenView:
    """The tokens of `text` (its first `limit` characters, when given) as the tokenizer encodes them.

    A cut text can end with a different token than the whole text would have there (a word cut in
    two); the view says `truncated`. A character tokenizer refuses characters outside its vocabulary
    with an UnknownCharactersError that names them."""
    truncated = limit is not None and len(text) > limit
    if truncated:
        text = text[:limit]
    ids = tokenizer.encode(text)
    return TokenView(tokenizer=getattr(tokenizer, "name", "?"), pieces=pieces_of(tokenizer, ids), count=len(ids),
                     characters=len(text), truncated=truncated)


def pieces_of(tokenizer, ids) -> tuple[TokenPiece, ...]:
    """Each token of `ids` as the characters its bytes complete (see the module's docstring), so the
    texts join back to the decoded text exactly; the surprise map colours these same pieces."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = []
    for i in ids:
        raw = tokenizer.decode_bytes([i])
        completed = decoder.decode(raw)
        pending = bool(decoder.getstate()[0])  # bytes of a character not yet complete
        pieces.append(TokenPiece(id=int(i), text=completed, bytes_hex=raw.hex(), split=pending))
    tail = decoder.decode(b"", final=True)  # only a tokenizer that does not round-trip leaves bytes here
    if tail and pieces:
        last = pieces[-1]
        pieces[-1] = TokenPiece(last.id, last.text + tail, last.bytes_hex)
    return tuple(pieces)


@dataclass(frozen=True)
class TokenizerTotal:
    tokenizer: str
    tokens: int  # of the whole text (documents joined as a run joins them)
    characters: int

    @property
    def chars_per_token(self) -> float | None:
        return chars_per_token(self.characters, self.tokens)


@dataclass(frozen=True)
class TokenizerComparison:
    """The same text cut by each tokenizer: the head of it token by token, and the whole text's totals."""
    views: tuple[TokenView, ...]
    totals: tuple[TokenizerTotal, ...]


def compare_tokenizers(documents, kinds=("char", "gpt2"), limit: int = 1500,
                       known: dict[str, int] | None = None) -> TokenizerComparison:
    """Each tokenizer kind on the documents: a character tokenizer is built from the text itself, as a
    run builds it. `known` gives token counts already counted (a preview's, for its own tokenizer), so
    a large text is not encoded twice by the same tokenizer."""
    text = CHAR_DOCUMENT_SEPARATOR.join(documents)
    characters = sum(len(d) for d in documents)
    views, totals = [], []
    for kind in kinds:
        tokenizer = build_tokenizer(kind, text)
        views.append(token_pieces(tokenizer, documents[0] if documents else "", limit))
        count = (known or {}).get(kind)
        if count is None:
            count = len(encode_documents(documents, tokenizer))
        totals.append(TokenizerTotal(kind, count, characters))
    return TokenizerComparison(tuple(views), tuple(totals))
