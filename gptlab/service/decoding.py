"""The decoding panels: the next-token distribution through each processor, the finished beams of beam
search, and how much of a sample was copied from the run's training text."""

from __future__ import annotations

import bisect
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gptlab import views
from gptlab.checkpoint import load_checkpoint
from gptlab.data import DataError, encode_documents, load_texts
from gptlab.generate import beam_search, next_token_logits
from gptlab.insight.decoding_views import (BeamRow, MemorisationView, NextTokenChart, memorisation_html,
                                           memorisation_summary, stages_figure, stages_note)
from gptlab.insight.distribution import stages
from gptlab.insight.memorise import CorpusIndex, build_index, load_index, memorisation, save_index
from gptlab.runs import RunError
from gptlab.service.base import UPLOADED, LabBase
from gptlab.textstream import stream_text

INDEX_FILE = "memorisation-index.npz"  # in the run folder: plain numpy arrays, loaded without pickle
NO_TRAINING_TEXT = ("An uploaded checkpoint carries no training text, so its samples cannot be checked for copying; "
                    "choose one of your runs (best or last) instead.")


class Decoding(LabBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._indexes: OrderedDict[tuple[str, str], CorpusIndex] = OrderedDict()  # two runs', newest last
        self._index_lock = threading.Lock()  # one build at a time: a build takes a core for seconds

    def next_token_stages(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None,
                          prompt: str | None, decoding: Mapping[str, Any], top_n: int = 10) -> NextTokenChart:
        """The top candidates' probabilities before and after each processor the settings turn on."""
        config = self._sample_config(decoding)
        model, tokenizer = self._loaded(self._checkpoint_folder(owner, run_id, which, upload))
        start = self._prompt_ids(tokenizer, prompt or "")
        with self.generations.hold(self._who(owner)):
            ids, logits = next_token_logits(model, start, eot=tokenizer.eot)
        result = stages(logits, ids, config, top_n=top_n)
        labels = [views.token_text(tokenizer, i) for i in result.candidates]
        return NextTokenChart(stages_figure(result, labels), stages_note(result))

    def beams(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None, prompt: str | None,
              decoding: Mapping[str, Any]) -> list[BeamRow]:
        """Beam search's finished hypotheses, best first, with the scores that ranked them."""
        config = self._sample_config(decoding)
        if config.strategy != "beam":
            raise DataError("Choose decoding 'beam' to see the beams: greedy decoding and sampling follow one text.")
        model, tokenizer = self._loaded(self._checkpoint_folder(owner, run_id, which, upload))
        start = self._prompt_ids(tokenizer, prompt or "")
        with self.generations.hold(self._who(owner)):
            found = beam_search(model, start, config, eot=tokenizer.eot)
        return [BeamRow(rank, (prompt or "") + "".join(stream_text(beam.tokens, tokenizer, stop=config.stop)),
                        round(beam.score, 4), round(beam.sum_logprobs, 4), beam.length, beam.ended)
                for rank, beam in enumerate(found, 1)]

    def memorisation(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None,
                     prompt: str | None, output: str | None) -> MemorisationView:
        """The longest span of the continuation (the output after the prompt) copied word for word from
        the run's training text, marked in the output, and the share of its 8-grams that are new."""
        if which == UPLOADED:
            raise DataError(NO_TRAINING_TEXT)
        if not output or not output.strip():
            raise DataError("Generate a sample first: the meter checks the text in the output box.")
        most = max(1000, 2 * self.limits.max_new_tokens)
        if len(output) > self.limits.max_prompt_chars + 16 * most:  # before tokenizing it
            raise DataError(f"The output has {len(output):,} characters; the meter checks a continuation of at most "
                            f"{most:,} tokens. Shorten the output.")
        prompt = prompt or ""
        offset = len(prompt) if prompt and output.startswith(prompt) else 0
        continuation = output[offset:]
        if not continuation.strip():
            raise DataError("The output is only the prompt: generate a continuation first, then check it.")
        folder = self._checkpoint_folder(owner, run_id, which, upload)
        _, tokenizer = self._loaded(folder)
        ids, starts = _ids_and_offsets(tokenizer, continuation)
        if len(ids) > most:
            raise DataError(f"The continuation has {len(ids):,} tokens; the meter checks at most {most:,}. "
                            "Shorten the output.")
        extra = load_checkpoint(folder).extra
        index = self._corpus_index(folder, tokenizer, extra.get("data") or {})
        result = memorisation(index, ids)
        a, b = result.longest.start, result.longest.start + result.longest.length
        start, end = offset + starts[a], offset + starts[b]
        unit = "characters" if tokenizer.eot is None else "tokens"
        summary = memorisation_summary(result, unit)
        if extra.get("base_model") or extra.get("init_from"):
            summary += " Its starting weights learned from other text too, which this meter cannot see."
        html = memorisation_html(output, start, end, summary)
        return MemorisationView(html, output[start:end], result.longest.length, result.novel_share, result.n)

    # -- the index of a run's training text ------------------------------------------------------

    def _corpus_index(self, folder: Path, tokenizer, data: Mapping[str, Any]) -> CorpusIndex:
        """The index of the training text a checkpoint records (its extra["data"])."""
        paths = data.get("paths")
        if paths is None:
            raise RunError("This checkpoint does not record its training text, so its samples cannot be checked "
                           "for copying.")
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise RunError("The training text of this run is no longer on the server (uploaded files are kept only "
                           "for a while), so its samples cannot be checked for copying.")
        # What the index was built from: the files as they are now, and the tokenizer.
        files = [f"{p}:{Path(p).stat().st_size}:{Path(p).stat().st_mtime_ns}" for p in paths] or ["bundled"]
        key = hashlib.sha256("\n".join([tokenizer.name, str(tokenizer.vocab_size), *files]).encode()).hexdigest()
        run = folder.parent
        with self._index_lock:
            cache = self._indexes
            if (str(run), key) in cache:
                cache.move_to_end((str(run), key))
                return cache[(str(run), key)]
            index = None
            if (run / INDEX_FILE).is_file():
                try:
                    index = load_index(run / INDEX_FILE)
                except (OSError, ValueError, KeyError):
                    index = None  # a damaged file is rebuilt
            if index is None or index.key != key:
                ids = encode_documents(load_texts(paths or None), tokenizer)
                index = build_index(np.asarray(ids, dtype=np.int32), key=key)
                try:
                    save_index(index, run / INDEX_FILE)
                except OSError:
                    pass  # a full disk costs a rebuild next time, nothing more
            cache[(str(run), key)] = index
            while len(cache) > 2:
                cache.popitem(last=False)
            return index


def _ids_and_offsets(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """The text's token ids and where each token starts in it (plus its end), in characters. A
    character the tokenizer does not know becomes -1, which matches nothing in the corpus."""
    if tokenizer.eot is None:  # characters
        known = {c: tokenizer.encode(c)[0] for c in set(text) - set(tokenizer.unknown_chars(text))}
        ids = [known.get(c, -1) for c in text]
        return ids, list(range(len(text) + 1))
    ids = tokenizer.encode(text)
    char_bytes = np.cumsum([0] + [len(c.encode("utf-8")) for c in text]).tolist()  # byte offset of each char
    token_bytes = np.cumsum([0] + [len(tokenizer.decode_bytes([i])) for i in ids]).tolist()
    # A token boundary inside a character (BPE splits some) moves to that character's start.
    return ids, [bisect.bisect_right(char_bytes, b) - 1 for b in token_bytes]
