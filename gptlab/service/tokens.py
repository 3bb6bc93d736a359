"""The token view of a prompt and its output, with the tokenizer of the checkpoint that reads them."""

from __future__ import annotations

from dataclasses import dataclass

from gptlab.data import DataError
from gptlab.insight.token_views import summary, token_chips_html
from gptlab.insight.tokens import token_pieces
from gptlab.service.base import LabBase
from gptlab.tokenizers import TokenizerError, load_tokenizer


@dataclass(frozen=True)
class TokensView:
    html: str  # the text as token chips (gptlab.insight.token_views), every piece escaped
    summary: str  # "42 tokens · 97 characters · 2.31 characters per token"
    tokenizer: str
    count: int


class Tokens(LabBase):
    @property
    def max_token_view_chars(self) -> int:
        """The longest text shown: a full prompt and a full output of long tokens."""
        return self.limits.max_prompt_chars + 16 * self.limits.max_new_tokens

    def tokens(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None,
               prompt: str | None, output: str | None) -> TokensView:
        """How the checkpoint's tokenizer cuts the output (the prompt and what followed it), or the
        prompt alone before anything is generated. The text is encoded as the model would read it
        again: a BPE sample's own token boundaries may differ where they were unusual."""
        text = output or prompt or ""
        if not isinstance(text, str):
            raise DataError("The text to show as tokens must be text.")
        if not text:
            raise DataError("Type a prompt or generate some text first; the token view shows how the model "
                            "reads it.")
        folder = self._checkpoint_folder(owner, run_id, which, upload)
        try:
            tokenizer = load_tokenizer(folder)
        except TokenizerError:
            raise DataError("This checkpoint has no readable tokenizer (its tokenizer.json); download the "
                            "checkpoint again from the Train tab.") from None
        view = token_pieces(tokenizer, text, self.max_token_view_chars)
        return TokensView(html=token_chips_html(view, f"{tokenizer.name} tokenizer"), summary=summary(view),
                          tokenizer=tokenizer.name, count=view.count)
