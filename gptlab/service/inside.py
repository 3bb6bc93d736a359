"""Inside the model, on request: attention heatmaps, the logit lens and the surprise map, each from
the run's untrained weights (its init/) beside the chosen trained checkpoint."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from gptlab import views
from gptlab.checkpoint import BEST, CONFIG_FILE, INIT, load_checkpoint
from gptlab.data import DataError, encode_documents, load_texts, split_sizes
from gptlab.insight.lens import (MAX_ATTENTION_TOKENS, MAX_LENS_POSITIONS, AttentionMap, LogitLens, attention_map,
                                 check_layer_head, logit_lens)
from gptlab.insight.model_views import attention_figure, lens_html, surprise_html, surprise_legend
from gptlab.insight.surprise import Surprise, cap_passage, surprise
from gptlab.runs import RunError
from gptlab.service.base import UPLOADED, LabBase

NO_INIT_UPLOAD = ("An uploaded checkpoint carries no untrained weights (a run's init/), so only the trained side "
                  "is shown.")
NO_INIT_RUN = "This run kept no untrained weights (init/), so only the trained side is shown."


@dataclass(frozen=True)
class AttentionView:
    figure: Figure
    trained: AttentionMap
    untrained: AttentionMap | None  # None: no init/ to compare with (`note` says why)
    note: str


@dataclass(frozen=True)
class LensView:
    trained: LogitLens
    untrained: LogitLens | None
    trained_html: str
    untrained_html: str
    note: str


@dataclass(frozen=True)
class SurpriseView:
    trained: Surprise
    untrained: Surprise | None
    trained_html: str
    untrained_html: str
    legend: str
    note: str  # where the passage came from, and how much of it was scored


@dataclass(frozen=True)
class ModelShape:
    n_layer: int
    n_head: int
    block_size: int


@dataclass(frozen=True)
class _Side:
    title: str
    folder: Path


def _whole(value, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"Choose a {name} (a whole number from 1).") from None
    if not math.isfinite(number) or number != int(number):
        raise DataError(f"The {name} must be a whole number from 1; got {value}.")
    return int(number)


class Inside(LabBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._passages: dict[tuple, list[int]] = {}  # (checkpoint, its mtime) -> validation passage
        self._passages_lock = threading.Lock()

    def model_shape(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None) -> ModelShape:
        """The chosen checkpoint's layers and heads, read from its config alone (no weights load), so
        the panels' sliders can follow the model."""
        try:
            folder = self._checkpoint_folder(owner, run_id, which, upload)
        except RunError:
            # A run that has just started has no best/ yet; its init/ has the same shape.
            folder = self.registry.folder(self.owner_or_new(owner), run_id) / INIT if run_id else None
            if folder is None or not (folder / CONFIG_FILE).is_file():
                raise
        config = load_checkpoint(folder).model_config
        return ModelShape(config.n_layer, config.n_head, config.block_size)

    def _sides(self, owner, run_id, which: str, upload) -> tuple[list[_Side], str]:
        """The trained checkpoint, and the run's untrained one where it has one."""
        trained = self._checkpoint_folder(owner, run_id, which, upload)
        label = "uploaded checkpoint" if which == UPLOADED else f"the '{which}' checkpoint"
        sides = [_Side(f"trained ({label})", trained)]
        if which == UPLOADED:
            return sides, NO_INIT_UPLOAD
        init = self.registry.folder(self.owner_or_new(owner), run_id) / INIT
        if not (init / CONFIG_FILE).is_file():
            return sides, NO_INIT_RUN
        return [_Side("untrained (the run's step-0 weights)", init), *sides], ""

    def _prompt_window(self, tokenizer, prompt, block_size: int) -> tuple[list[int], str]:
        if not prompt:
            raise DataError("Type a prompt first: the panel shows how the model reads its tokens.")
        ids = self._prompt_ids(tokenizer, prompt)
        if len(ids) <= block_size:
            return ids, ""
        return ids[-block_size:], (f"The prompt is {len(ids):,} tokens long; the model reads only the last "
                                   f"{block_size:,} (its context length), and so does this view.")

    def attention(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None,
                  prompt: str | None, layer, head) -> AttentionView:
        """One head's attention weights over the prompt, untrained beside trained (layers and heads from 1)."""
        layer, head = _whole(layer, "layer"), _whole(head, "head")
        sides, note = self._sides(owner, run_id, which, upload)
        model, tokenizer = self._loaded(sides[-1].folder)
        check_layer_head(model, layer, head)
        ids, crop = self._prompt_window(tokenizer, prompt, model.config.block_size)
        labels = [views.token_text(tokenizer, i) for i in ids]
        with self.generations.hold(self._who(owner)):
            maps = [(s.title, attention_map(self._loaded(s.folder)[0], ids, labels, layer=layer, head=head))
                    for s in sides]
        shown = (f"Showing the last {MAX_ATTENTION_TOKENS} of the {len(ids)} tokens, so the labels stay readable; "
                 "attention to the earlier ones is not drawn." if len(ids) > MAX_ATTENTION_TOKENS else "")
        return AttentionView(attention_figure(maps), maps[-1][1], maps[0][1] if len(maps) > 1 else None,
                             " ".join(n for n in (crop, shown, note) if n))

    def logit_lens(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None,
                   prompt: str | None) -> LensView:
        """Each layer's guess for the next token at the prompt's last positions, untrained beside trained."""
        sides, note = self._sides(owner, run_id, which, upload)
        model, tokenizer = self._loaded(sides[-1].folder)
        ids, crop = self._prompt_window(tokenizer, prompt, model.config.block_size)
        with self.generations.hold(self._who(owner)):
            lenses = [(s.title, logit_lens(self._loaded(s.folder)[0], ids)) for s in sides]
        label = lambda i: views.token_text(tokenizer, i)  # noqa: E731
        pages = [lens_html(lens, label, title) for title, lens in lenses]
        shown = (f"Showing the last {MAX_LENS_POSITIONS} of the {len(ids)} positions." if len(ids) > MAX_LENS_POSITIONS
                 else "")
        untrained = lenses[0][1] if len(lenses) > 1 else None
        return LensView(lenses[-1][1], untrained, pages[-1], pages[0] if untrained else "",
                        " ".join(n for n in (crop, shown, note) if n))

    def surprise(self, *, owner: str | None, run_id: str | None, passage: str | None, which: str = BEST,
                 upload: str | None = None) -> SurpriseView:
        """Each token of a held-out passage coloured by its surprise: a validation passage of the run's
        own text unless one is pasted."""
        sides, init_note = self._sides(owner, run_id, which, upload)
        model, tokenizer = self._loaded(sides[-1].folder)
        block_size = model.config.block_size
        if not passage and which == UPLOADED:
            # Never the paths in an uploaded config.json: they could name another user's files on this server.
            raise DataError("An uploaded checkpoint carries none of its training text: paste a passage to score.")
        if passage:
            if len(passage) > self.limits.max_prompt_chars:
                raise DataError(f"The passage has {len(passage):,} characters; the limit is "
                                f"{self.limits.max_prompt_chars:,}.")
            ids, source = tokenizer.encode(passage), "your passage"
        else:
            ids, source = self._validation_passage(sides[-1].folder, tokenizer, block_size), "the run's validation text"
        if len(ids) < 2:
            raise DataError("The passage is a single token; give a longer one (the first token is only context).")
        ids, cut = cap_passage(ids, block_size)
        with self.generations.hold(self._who(owner)):
            results = [(s.title, surprise(self._loaded(s.folder)[0], tokenizer, ids)) for s in sides]
        pages = [surprise_html(result, title) for title, result in results]
        scored = (f"Scored: the first {len(ids):,} tokens of {source}" if cut or not passage
                  else f"Scored: {source}, {len(ids):,} tokens")
        note = (f"{scored} (the model reads {block_size:,} tokens at once, so a passage is cut to its first "
                f"{block_size + 1:,}; the first token is context only).")
        untrained = results[0][1] if len(results) > 1 else None
        return SurpriseView(results[-1][1], untrained, pages[-1], pages[0] if untrained else "",
                            surprise_legend(model.config.vocab_size), " ".join(n for n in (note, init_note) if n))

    def _validation_passage(self, folder: Path, tokenizer, block_size: int) -> list[int]:
        """The start of the run's validation split, as prepare_data split it. Cached per checkpoint:
        the whole text is tokenised to find where the split falls."""
        cache = self._passages
        key = (str(folder), (folder / CONFIG_FILE).stat().st_mtime_ns)
        if key not in cache:
            checkpoint = load_checkpoint(folder)
            data = checkpoint.extra.get("data")
            if not isinstance(data, dict) or not isinstance(data.get("paths"), list):
                raise DataError("This run's checkpoint does not say what text it trained on: paste a passage to score.")
            try:
                documents = load_texts(data["paths"] or None)
            except DataError:
                raise DataError("The text this run trained on is no longer on the server; paste a passage to "
                                "score instead.") from None
            ids = encode_documents(documents, tokenizer)
            val_fraction = checkpoint.train_config.val_fraction if checkpoint.train_config else 0.1
            n_train, _ = split_sizes(len(ids), val_fraction)
            with self._passages_lock:
                if len(cache) >= 8:
                    cache.pop(next(iter(cache)))
                cache[key] = ids[n_train: n_train + block_size + 1]
        return list(cache[key])
