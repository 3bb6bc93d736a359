"""What every part of the service shares: the server's limits, owners, and the models it samples from."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gptlab.admission import Slots, TrainingCaps
from gptlab.checkpoint import BEST, LAST, LoadedModels, best_or_last, unpack_upload
from gptlab.config import SampleConfig
from gptlab.data import DataError
from gptlab.generate import generate
from gptlab.runs import RunError, RunRegistry
from gptlab.sweeps import SweepQueue
from gptlab.textstream import stream_text
from gptlab.threads import FULL, use_threads
from gptlab.tokenizers import prompt_ids

SOURCES = ("Bundled Shakespeare", "Upload files", "Paste text")
START_FROM = ("Scratch (random weights)", "Pretrained GPT-2 small (from the Hugging Face Hub)")
UPLOADED = "uploaded .zip"
CHECKPOINTS = (BEST, LAST, UPLOADED)
SWEEP_TEMPERATURES = (0.2, 0.5, 0.8, 1.0, 1.4)
X_AXES = ("step", "tokens seen")
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
NO_RUN_YET = "No run yet. Pick your data and settings, then press **Start**."


@dataclass(frozen=True)
class Limits:
    """What one server allows; self-hosters raise them with flags."""
    max_upload_mb: float = 20.0
    max_paste_chars: int = 5_000_000
    max_params: int = 30_000_000
    max_new_tokens: int = 1000
    max_prompt_chars: int = 4000
    max_checkpoint_mb: float = 600.0
    max_beams: int = 8
    # Generations at once, server-wide (a core each); while a run trains, one at a time (training keeps a core).
    max_generations: int = 2
    max_watchers_per_run: int = 3
    max_watchers: int = 16  # live views at once, server-wide: each holds one of Gradio's worker threads
    poll_seconds: float = 1.0  # the live view redraws at most this often, whatever the step rate
    max_sweep_runs: int = 12  # runs in one sweep (each is also held to the work caps of a single run)
    # Processes a run may train on (a torchrun job, one per GPU); None: one per CUDA GPU this machine has.
    max_processes: int | None = None


class LabBase:
    """The state every part of Lab works with; gptlab.service assembles Lab from the parts."""

    def __init__(self, runs_dir: str | os.PathLike = "runs", *, max_concurrent: int = 1, limits: Limits | None = None,
                 caps: TrainingCaps | None = None):
        # Absolute, so views.without_paths recognises every path a message might quote.
        self.registry = RunRegistry(Path(runs_dir).resolve(), max_concurrent=max_concurrent)
        self.sweeps = SweepQueue(self.registry)
        self.limits, self.caps = limits or Limits(), caps or TrainingCaps()
        self._plot_prefs: dict[str, tuple[bool, str]] = {}
        self._models = LoadedModels()
        limits = self.limits
        self.generations = Slots("generations", per_owner=2, wait_s=20.0, total=lambda: max(
            1, limits.max_generations - (1 if self.registry.active_count() else 0)))
        self.watchers = Slots("live views", per_owner=4, total=limits.max_watchers, wait_s=0.0)
        # Training gives up a core to each generation: a team larger than the free cores waits at barriers.
        self.registry.step_hook = lambda step: use_threads(FULL - self.generations.in_use)
        self.run_watchers = Slots("live views of this run", per_owner=limits.max_watchers_per_run,
                                  total=limits.max_watchers, wait_s=0.0)

    @property
    def downloads_root(self) -> Path:
        """Where downloads are written: a folder of nothing else, which a web server may safely serve."""
        return self.registry.root / "_downloads"

    # -- owners --------------------------------------------------------------------------------

    @staticmethod
    def owner_or_new(owner: str | None, new: str | None = None) -> str:
        """A browser's secret owner token; anything else (empty, malformed) gets `new`, else a fresh one."""
        return owner if isinstance(owner, str) and OWNER_PATTERN.match(owner) else (new or secrets.token_urlsafe(24))

    @classmethod
    def _who(cls, owner: str | None) -> str:
        """Whose share a request counts against: the owner token, or one share for all callers without."""
        return cls.owner_or_new(owner, new="anonymous")

    def run_choices(self, owner: str | None) -> list[tuple[str, str]]:
        """(label, run id) for each of the owner's runs, newest first."""
        out = []
        for info in self.registry.list(self.owner_or_new(owner)):
            best = f" · best val {info.best_val_loss:.3f}" if info.best_val_loss is not None else ""
            out.append((f"{info.name} · {info.status}{best}", info.id))
        return out

    # -- models for sampling -------------------------------------------------------------------

    def _checkpoint_folder(self, owner, run_id, which: str, upload) -> Path:
        if which == UPLOADED:
            return self._unpack_upload(upload)
        if not run_id:
            raise RunError("Choose a run first (train one on the Train tab), or upload a checkpoint .zip.")
        run = self.registry.folder(self.owner_or_new(owner), run_id)
        folder = best_or_last(run) if which == BEST else run / which
        if folder is None or not folder.is_dir():
            other = LAST if which == BEST else BEST
            hint = f"; try '{other}'" if (run / other).is_dir() else "; let the run evaluate once first"
            raise RunError(f"This run has no '{which}' checkpoint yet{hint}.")
        return folder

    def _unpack_upload(self, upload) -> Path:
        if not upload:
            raise DataError("Upload a checkpoint .zip (from the Train tab's downloads) first.")
        # Float32 weights of the largest model this server allows, and room for its tokenizer.
        max_bytes = min(int(self.limits.max_checkpoint_mb * 2**20), 4 * self.limits.max_params + 2**24)
        return unpack_upload(upload, self.registry.root / "_uploads", max_bytes=max_bytes, keep=8)

    def _loaded(self, folder: Path):
        return self._models.get(folder, max_params=self.limits.max_params)

    def _prompt_ids(self, tokenizer, prompt: str) -> list[int]:
        if len(prompt) > self.limits.max_prompt_chars:
            raise DataError(f"The prompt has {len(prompt):,} characters; the limit is {self.limits.max_prompt_chars:,}.")
        return prompt_ids(tokenizer, prompt)

    def _sample_config(self, decoding: Mapping[str, Any], **fixed) -> SampleConfig:
        config = SampleConfig.from_form(decoding, **fixed)
        if config.max_new_tokens > self.limits.max_new_tokens:
            raise DataError(f"max new tokens must be between 1 and {self.limits.max_new_tokens}.")
        if config.num_beams > self.limits.max_beams:
            raise DataError(f"This server searches with at most {self.limits.max_beams} beams; got {config.num_beams}.")
        return config

    def _complete(self, owner, folder: Path, prompt: str, config: SampleConfig) -> str:
        model, tokenizer = self._loaded(folder)
        ids = generate(model, self._prompt_ids(tokenizer, prompt), config, eot=tokenizer.eot)
        with self.generations.hold(self._who(owner)):
            return prompt + "".join(stream_text(ids, tokenizer))

    def _plain_sampling(self, temperature, max_new_tokens, seed) -> SampleConfig:
        return self._sample_config({"temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed},
                                   strategy="sample")
