"""One training run, wired end to end: text → tokenizer → dataset → model → trainer → checkpoints.

The CLI and the app both build a TrainingRun and consume its events. A run lives in one folder
(gptlab.runfolder says what it holds).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator, Sequence

import torch

from gptlab.checkpoint import CONFIG_FILE, Checkpoint, load_checkpoint, save_checkpoint
from gptlab.config import ConfigError, ModelConfig, SampleConfig, TrainConfig
from gptlab.data import load_texts, prepare_data
from gptlab.distributed import LOCAL, Dist
from gptlab.events import Event
from gptlab.generate import generate
from gptlab.model import GPT
from gptlab.plots import save_loss_plot
from gptlab.runfolder import (BEST, INIT, LAST, LOSS_PLOT, METRICS_FILE, newest_checkpoint, read_events,
                              resolve_checkpoint, run_folder_of, write_history)
from gptlab.tokenizers import Tokenizer, prompt_ids
from gptlab.trainer import CHECKPOINT_SECONDS, SaveError, StepHook, Trainer, pick_device
from gptlab.tracking import TensorBoardLog, Tracker, hardware, tracked


# A loss of ln(V) is a model guessing uniformly at random; twice that is a run that has blown up rather
# than one that learns slowly (which sits near ln(V) and is the loss doctor's "not learning").
DIVERGED_FACTOR = 2.0


class TrainingRun:
    """A run prepared up front (so bad settings or data fail before training starts), then
    trained by iterating `events()`. Build one with `new`, `resume` or `fine_tune`."""

    @classmethod
    def new(cls, model_config: ModelConfig, train_config: TrainConfig, out_dir: str | os.PathLike,
            data_paths: Sequence[str | os.PathLike] | None = None, texts: Sequence[str] | None = None, *,
            step_hook: StepHook | None = None, checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
            dist: Dist = LOCAL) -> TrainingRun:
        """A run from random weights, with a tokenizer (train_config.tokenizer) built from its text.
        last/ is saved at every evaluation and at least every checkpoint_seconds (None: only then)."""
        _check_new_run(model_config, train_config, out_dir)
        return cls(out_dir, model_config, train_config, data_paths, texts, step_hook=step_hook,
                   checkpoint_seconds=checkpoint_seconds, dist=dist)

    @classmethod
    def resume(cls, run_or_checkpoint: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
               data_paths: Sequence[str | os.PathLike] | None = None, texts: Sequence[str] | None = None,
               max_steps: int | None = None, max_time: float | None = None,
               step_hook: StepHook | None = None, checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
               dist: Dist = LOCAL) -> TrainingRun:
        """Continue a stopped or crashed run exactly from a checkpoint: a run folder means its newest
        (runfolder.newest_checkpoint; `resumed_from` says which). Same configs and data; the log is
        cut back to the checkpoint's step. By default the run continues in its own folder; another
        out_dir must be empty, and gets the run's init/ and its log up to that step.
        max_steps and max_time may be raised to train for longer. Any world size resumes any other's
        checkpoint (Trainer.load_state_dict says what stays exact)."""
        source = load_checkpoint(_resume_point(Path(run_or_checkpoint)))
        if not source.resumable or source.train_config is None:
            raise ConfigError(f"{source.path} holds no trainer state, so it cannot be resumed; "
                              "start a new run from its weights with init_from (--init-from) instead.")
        limits = {k: v for k, v in (("max_steps", max_steps), ("max_time", max_time)) if v is not None}
        if limits.get("max_time") == 0:  # 0 turns the time budget off; None keeps the run's own
            limits["max_time"] = None
        if not texts:
            data_paths = data_paths or source.extra.get("data", {}).get("paths") or None
        history = run_folder_of(source.path)
        if out_dir is not None and Path(out_dir).resolve() != history.resolve():
            _check_empty(Path(out_dir), history)
        run = cls(out_dir or history, source.model_config, source.train_config.replace(**limits), data_paths,
                  texts, source=source, resumed=True, step_hook=step_hook, checkpoint_seconds=checkpoint_seconds,
                  dist=dist)
        run.trainer.load_state_dict(source.trainer_state())
        run.resumed_from, run._history = source.path, history
        return run

    @classmethod
    def fine_tune(cls, init_from: str | os.PathLike, model_config: ModelConfig, train_config: TrainConfig,
                  out_dir: str | os.PathLike, data_paths: Sequence[str | os.PathLike] | None = None,
                  texts: Sequence[str] | None = None, *, step_hook: StepHook | None = None,
                  checkpoint_seconds: float | None = CHECKPOINT_SECONDS, dist: Dist = LOCAL) -> TrainingRun:
        """A new run from a checkpoint's weights (a run folder stands for its best, else its last)."""
        _check_new_run(model_config, train_config, out_dir)
        source = load_checkpoint(resolve_checkpoint(init_from, prefer=BEST))
        # Fine-tuning keeps the network and its tokenizer; only the context may shrink.
        model_config = source.model_config.replace(block_size=min(model_config.block_size,
                                                                  source.model_config.block_size),
                                                   dropout=model_config.dropout)
        run = cls(out_dir, model_config, train_config.replace(tokenizer=source.tokenizer.name), data_paths, texts,
                  source=source, step_hook=step_hook, checkpoint_seconds=checkpoint_seconds, dist=dist)
        run.extra["init_from"] = str(source.path)
        base = source.extra.get("base_model") or source.extra.get("source")
        if base:  # a fine-tune's model card names what it started from, and keeps its licence
            run.extra["base_model"] = base
        if "license" in source.extra:
            run.extra["license"] = source.extra["license"]
        return run

    def __init__(self, out_dir: str | os.PathLike, model_config: ModelConfig, train_config: TrainConfig,
                 data_paths: Sequence[str | os.PathLike] | None, texts: Sequence[str] | None, *,
                 source: Checkpoint | None = None, resumed: bool = False, step_hook: StepHook | None = None,
                 checkpoint_seconds: float | None = CHECKPOINT_SECONDS, dist: Dist = LOCAL):
        """What every kind of run shares: data, model, trainer and metadata. new, resume and fine_tune
        check their arguments before they come here."""
        self.out_dir, self.resumed, self.dist = Path(out_dir), resumed, dist
        self.resumed_from: Path | None = None  # the checkpoint a resumed run continues from
        self._history: Path | None = None  # the run folder whose log a resumed run continues
        self.documents = load_texts(data_paths, texts)
        tokenizer: Tokenizer | str = source.tokenizer if source is not None else train_config.tokenizer
        self.data = prepare_data(self.documents, tokenizer, model_config.block_size, train_config.val_fraction,
                                 [str(p) for p in data_paths or ()] + (["pasted text"] if texts else []))
        if texts and not resumed and dist.is_main:
            # Pasted text lives only in memory: keep a copy, so the run can be resumed later.
            data_paths = list(data_paths or ()) + self._keep_pasted(texts)
        if source is None:
            model_config = model_config.replace(vocab_size=self.data.tokenizer.vocab_size)
        self.model_config, self.train_config = model_config, train_config

        device = dist.device or pick_device(train_config.device)
        torch.manual_seed(train_config.seed)
        if source is None:
            model = GPT(model_config)
        else:
            model = source.load_model()
            model.crop_block_size(model_config.block_size)
            model.set_dropout(model_config.dropout)
        if resumed:
            self.extra = source.extra
            # A run from before baselines were kept gets them now: the same text gives the same numbers.
            if isinstance(self.extra.get("data"), dict):
                self.extra["data"].setdefault("baselines", self.data.description["baselines"])
        else:
            paths = [str(Path(p).resolve()) for p in data_paths or ()]
            self.extra = {"data": {**self.data.description, "paths": paths}, "stats": self.data.stats.as_dict()}
        self._prompt = prompt_ids(self.data.tokenizer)
        self._sample_config = SampleConfig(max_new_tokens=train_config.sample_tokens, temperature=0.8,
                                           seed=train_config.seed)
        val_head = self.data.dataset.splits["val"][:256].tolist()  # enough to find a line start in
        self._snapshot_prompts = snapshot_prompts(self.data.tokenizer, val_head, model_config.block_size)
        self.trainer = Trainer(model, train_config, self.data.dataset, save=self._save, sample=self._sample,
                               device=device, on_step=step_hook, checkpoint_seconds=checkpoint_seconds,
                               diverge_above=DIVERGED_FACTOR * math.log(model_config.vocab_size),
                               snapshot=self._snapshot if train_config.snapshot_tokens else None, dist=dist)
        self.extra["hardware"] = hardware(self.trainer.device, self.trainer.precision)  # for the run report
        # The world this run (or this stretch of a resumed one) trains in, and the global batch it makes.
        self.extra["distributed"] = dist.describe(train_config.batch_size, train_config.grad_accum_steps,
                                                  model_config.block_size)
        self.trackers: list[Tracker] = []

    def _keep_pasted(self, texts: Sequence[str]) -> list[Path]:
        folder = self.out_dir / "data"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, text in enumerate(texts, 1):
            path = folder / f"pasted-{i}.txt"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
        return paths

    def _save(self, label: str, trainer_state: dict | None, metrics: dict) -> str:
        folder, step = self.out_dir / label, self.trainer.step
        kept = "the previous one is kept" if (folder / CONFIG_FILE).is_file() else "nothing was overwritten"
        try:
            return str(save_checkpoint(folder, self.trainer.model_to_save(), self.model_config, self.data.tokenizer,
                                       train_config=self.train_config, trainer_state=trainer_state,
                                       step=step, metrics=metrics, extra=self.extra))
        except OSError as e:
            # save_checkpoint has already put things back: the old folder whole, no temporary one left.
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SaveError(f"The disk is full: the checkpoint at step {step} could not be saved ({kept}). "
                                "Free some space, then resume.") from e
            raise SaveError(f"The checkpoint at step {step} could not be saved in {folder} "
                            f"({e.strerror or e}; {kept}). Fix that, then resume.") from e

    def _sample(self, model) -> str:
        ids = list(generate(model, self._prompt, self._sample_config, eot=self.data.tokenizer.eot))
        return self.data.tokenizer.decode(self._prompt + ids)

    def _snapshot(self, model) -> list[tuple[str, str, str]]:
        """The time machine's texts at this evaluation: each fixed prompt continued greedily and by
        sampling with the run's seed, so two runs of the same settings show the same timeline."""
        n, tokenizer = self.train_config.snapshot_tokens, self.data.tokenizer
        configs = (SampleConfig(strategy="greedy", max_new_tokens=n),
                   SampleConfig(strategy="sample", max_new_tokens=n, temperature=0.8, seed=self.train_config.seed))
        out = []
        for prompt in self._snapshot_prompts:
            shown = tokenizer.decode(prompt)
            texts = [continuation(tokenizer, prompt, list(generate(model, prompt, c, eot=tokenizer.eot)))
                     for c in configs]
            out.append((shown, *texts))
        return out

    def events(self, stop: threading.Event | None = None, trackers: Sequence[Tracker] = ()) -> Iterator[Event]:
        """The run's events, each logged to metrics.jsonl, TensorBoard (<run>/tensorboard/) and `trackers`.
        In a run of several processes only rank 0 writes; the others train and yield the same events."""
        self.dist.barrier()  # every rank has checked the run folder before rank 0 writes in it
        if not self.dist.is_main:
            yield from self.trainer.run(stop)
            return
        if self.resumed:
            self._continue_history()
        else:
            self._save(INIT, None, {})  # the untrained weights, for honest before/after comparisons
        self.trackers = [TensorBoardLog(self.out_dir, read_events(self.out_dir) if self.resumed else ()), *trackers]
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as log:
            for event in tracked(self.trainer.run(stop), self.trackers):
                try:
                    log.write(json.dumps(event.as_dict()) + "\n")
                    log.flush()
                except OSError as e:
                    if event.kind != "done":  # a run that has ended still reports how
                        raise SaveError(f"{self.out_dir / METRICS_FILE} could not be written at step {event.step} "
                                        f"({e.strerror or e}); the last checkpoint is kept. Free some space, "
                                        "then resume.") from e
                if event.kind == "done":
                    self._draw_loss_plot()
                yield event

    def _continue_history(self) -> None:
        """The log up to the step resumed from, so no step is logged twice; a run resumed into a new
        folder takes its history and init/ along, and stands on its own."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self._history is not None and self._history.resolve() != self.out_dir.resolve():
            if (self._history / INIT).is_dir() and not (self.out_dir / INIT).exists():
                shutil.copytree(self._history / INIT, self.out_dir / INIT)
        write_history(self._history or self.out_dir, self.out_dir, self.trainer.step)

    def _draw_loss_plot(self) -> None:
        try:
            # The whole history (a resumed run's too), for the model card and the README.
            save_loss_plot(read_events(self.out_dir), self.out_dir / LOSS_PLOT, self.model_config.vocab_size,
                           self.data.baselines)
        except OSError:
            pass  # a full disk must not turn a run that has ended into a failure; the log holds the same


def snapshot_prompts(tokenizer: Tokenizer, val_ids: Sequence[int], block_size: int) -> list[list[int]]:
    """The time machine's fixed prompts: the run's usual sampling prompt, and a short piece of the
    validation text (from its first line start), which the model never trains on. Both depend only on
    the data, so a resumed run continues the same timeline."""
    usual = prompt_ids(tokenizer)
    length = max(1, min(16, block_size // 4))  # leaves most of the context for the continuation
    newline = _newline_id(tokenizer)
    starts = [i + 1 for i, t in enumerate(val_ids[:200]) if t == newline and i + 1 + length <= len(val_ids)]
    start = starts[0] if starts else 0
    prefix = list(val_ids[start:start + length])
    return [usual] + ([prefix] if prefix and prefix != usual else [])


def _newline_id(tokenizer: Tokenizer) -> int | None:
    try:
        ids = tokenizer.encode("\n")
    except ValueError:  # a character vocabulary without a newline
        return None
    return ids[0] if len(ids) == 1 else None


def continuation(tokenizer: Tokenizer, prompt: Sequence[int], new: Sequence[int]) -> str:
    """The text that `new` adds after `prompt`, decoded together so no character is split at the seam."""
    before, whole = tokenizer.decode(list(prompt)), tokenizer.decode(list(prompt) + list(new))
    return whole[len(before):] if whole.startswith(before) else tokenizer.decode(list(new))


def _resume_point(path: Path) -> Path:
    """A checkpoint folder means itself; a run folder, its newest resumable checkpoint."""
    if (path / CONFIG_FILE).is_file() or not path.is_dir():
        return path  # load_checkpoint explains a missing folder
    newest = newest_checkpoint(path)
    if newest is None:
        raise ConfigError(f"{path} holds no checkpoint to resume from: the run ended before its first "
                          "evaluation saved one. Start a new run instead.")
    return newest


def _check_empty(out_dir: Path, history: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty, so the run cannot be resumed into it. Choose a new "
                          f"folder, or leave out --out to continue in {history}.")


def _check_new_run(model_config: ModelConfig | None, train_config: TrainConfig | None,
                   out_dir: str | os.PathLike | None) -> None:
    if model_config is None or train_config is None or out_dir is None:
        raise ConfigError("A new run needs a model config, a train config and an output folder.")
    if (Path(out_dir) / LAST).exists() or (Path(out_dir) / METRICS_FILE).exists():
        raise ConfigError(f"{out_dir} already holds a run. Resume it (--resume {out_dir}), "
                          "or choose another output folder.")
