"""Sampling a run's checkpoints, and comparing them: untrained against trained, temperatures, runs."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from gptlab import views
from gptlab.checkpoint import BEST, INIT, best_or_last
from gptlab.generate import generate, next_token_distribution
from gptlab.plots import compare_figure
from gptlab.runs import RunError
from gptlab.service.base import SWEEP_TEMPERATURES, LabBase
from gptlab.textstream import stream_text
from gptlab.views import Comparison, NextToken, RunComparison, Sample, SweepRow


class Sampling(LabBase):
    # -- sample and compare ----------------------------------------------------------------------

    def sample(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None, prompt: str | None,
               decoding: Mapping[str, Any]) -> Iterator[Sample]:
        """The prompt and its continuation, growing token by token (never half a character)."""
        config = self._sample_config(decoding)
        model, tokenizer = self._loaded(self._checkpoint_folder(owner, run_id, which, upload))
        start = self._prompt_ids(tokenizer, prompt or "")
        context = model.config.block_size
        note = (f"The prompt is {len(start):,} tokens long; the model reads only the last {context:,} of them "
                "(its context length)." if len(start) > context else "")
        ids = generate(model, start, config, eot=tokenizer.eot)
        with self.generations.hold(self._who(owner)):
            text = prompt or ""
            yield Sample(text, note)
            for piece in stream_text(ids, tokenizer, stop=config.stop):
                text += piece
                yield Sample(text, note)

    def next_tokens(self, *, owner: str | None, run_id: str | None, which: str, upload: str | None,
                    prompt: str | None, decoding: Mapping[str, Any], top_n: int = 15) -> list[NextToken]:
        config = self._sample_config(decoding)
        model, tokenizer = self._loaded(self._checkpoint_folder(owner, run_id, which, upload))
        with self.generations.hold(self._who(owner)):
            top = next_token_distribution(model, self._prompt_ids(tokenizer, prompt or ""), config,
                                          eot=tokenizer.eot, top_n=top_n)
        return [NextToken(views.token_text(tokenizer, i), i, round(p, 4)) for i, p in top]

    def compare(self, *, owner: str | None, run_id: str | None, prompt: str | None, seed, temperature,
                max_new_tokens) -> Comparison:
        """The same prompt, seed and decoding from the run's untrained weights and its best ones."""
        if not run_id:
            raise RunError("Train a run first: the comparison uses its untrained and trained weights.")
        folder = self.registry.folder(self.owner_or_new(owner), run_id)
        trained = best_or_last(folder)
        if trained is None:
            raise RunError("This run has no trained checkpoint yet; wait for its first evaluation.")
        config = self._plain_sampling(temperature, max_new_tokens, seed)
        return Comparison(untrained=self._complete(owner, folder / INIT, prompt or "", config),
                          trained=self._complete(owner, trained, prompt or "", config))

    def sweep(self, *, owner: str | None, run_id: str | None, prompt: str | None, seed,
              max_new_tokens) -> list[SweepRow]:
        folder = self._checkpoint_folder(owner, run_id, BEST, None)
        return [SweepRow(t, self._complete(owner, folder, prompt or "", self._plain_sampling(t, max_new_tokens, seed)))
                for t in SWEEP_TEMPERATURES]

    def compare_runs(self, *, owner: str | None, run_a: str | None, run_b: str | None, prompt: str | None, seed,
                     max_new_tokens) -> RunComparison:
        """Two runs' loss curves overlaid, and a sample from each one's best checkpoint."""
        if not run_a or not run_b:
            raise RunError("Choose two runs to compare.")
        owner = self.owner_or_new(owner)
        config = self._plain_sampling(0.8, max_new_tokens, seed)
        series, texts = [], []
        for run_id in (run_a, run_b):
            info = self.registry.get(owner, run_id)
            series.append((info.name, self.registry.events(owner, run_id)))
            checkpoint = best_or_last(self.registry.folder(owner, run_id))
            texts.append(self._complete(owner, checkpoint, prompt or "", config) if checkpoint else "(no checkpoint yet)")
        return RunComparison(compare_figure(series), texts[0], texts[1])
