"""What the app does, without gradio: previews, runs, downloads, sampling and comparisons.

`Lab` checks every request against the server's `Limits`, calls the library, and answers with
dataclasses. Its errors are the library's ValueError subclasses, whose messages are sentences for
the user and never name a server path. Training runs in background threads owned by a RunRegistry;
the live views only observe, so a refresh or a closed tab never stops a run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from matplotlib.figure import Figure

from gptlab import views
from gptlab.views import Comparison, LiveView, NextToken, Preview, RunComparison, Sample, SweepRow
from gptlab.admission import Slots, TrainingCaps
from gptlab.checkpoint import BEST, INIT, LAST, LoadedModels, best_or_last, unpack_upload, zip_for_sharing
from gptlab.config import ModelConfig, SampleConfig, TrainConfig, vocab_size_for
from gptlab.data import DataError, load_texts, prepare_data
from gptlab.events import EvalEvent
from gptlab.generate import generate, next_token_distribution
from gptlab.plots import compare_figure, dynamics_figure, loss_figure
from gptlab.runs import RunError, RunRegistry
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


class Lab:
    def __init__(self, runs_dir: str | os.PathLike = "runs", *, max_concurrent: int = 1, limits: Limits | None = None,
                 caps: TrainingCaps | None = None):
        # Absolute, so views.without_paths recognises every path a message might quote.
        self.registry = RunRegistry(Path(runs_dir).resolve(), max_concurrent=max_concurrent)
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

    # -- data ----------------------------------------------------------------------------------

    def _documents(self, source: str, files: Sequence[str] | None, pasted: str | None):
        """(paths, texts) for the chosen source, checked against the upload limits."""
        if source == SOURCES[1]:
            paths = [str(f) for f in (files or [])]
            if not paths:
                raise DataError("Choose one or more .txt or .md files to upload, or pick another source.")
            total = sum(Path(p).stat().st_size for p in paths)
            if total > self.limits.max_upload_mb * 2**20:
                raise DataError(f"The files add up to {total / 2**20:.1f} MB; this server takes at most "
                                f"{self.limits.max_upload_mb:g} MB. Use fewer or smaller files.")
            return paths, None
        if source == SOURCES[2]:
            if not pasted or not pasted.strip():
                raise DataError("Paste some text into the box first, or pick another source.")
            if len(pasted) > self.limits.max_paste_chars:
                raise DataError(f"The pasted text has {len(pasted):,} characters; the limit is "
                                f"{self.limits.max_paste_chars:,}. Upload it as a file or shorten it.")
            return None, [pasted]
        return None, None

    def preview(self, *, source: str, files: Sequence[str] | None, pasted: str | None, tokenizer: str,
                block_size, val_fraction: float = 0.1) -> Preview:
        try:
            paths, texts = self._documents(source, files, pasted)
            documents = load_texts(paths, texts)
            block = ModelConfig.from_form({"block_size": block_size}).block_size
            data = prepare_data(documents, tokenizer, block, float(val_fraction))
        except ValueError as e:
            return Preview(f"**Problem**: {e}")
        return Preview(message=f"**Ready**: {len(documents)} document(s).",
                       stats=views.stats_markdown(data.stats, data.tokenizer, block),
                       head="\n".join(documents[0].split("\n")[:20]),
                       shift=views.shift_table(data.tokenizer, data.dataset.splits["train"].tolist()),
                       vocab_size=data.tokenizer.vocab_size)

    # -- settings ------------------------------------------------------------------------------

    @staticmethod
    def preset_settings(name: str) -> dict[str, Any]:
        """Every form setting of a preset (model and training, the tokenizer included)."""
        return {**asdict(ModelConfig.preset(name)), **asdict(TrainConfig.preset(name))}

    @staticmethod
    def _configs(tokenizer: str, settings: Mapping[str, Any]) -> tuple[ModelConfig, TrainConfig]:
        return (ModelConfig.from_form(settings),
                TrainConfig.from_form(settings, tokenizer=tokenizer, device="auto"))

    def _check_size(self, model: ModelConfig) -> None:
        if model.num_params() > self.limits.max_params:
            raise DataError(f"That model has about {model.num_params() / 1e6:.1f}M parameters; this server allows "
                            f"{self.limits.max_params / 1e6:.3g}M. Make it smaller (fewer layers or a narrower width).")

    def size_summary(self, *, tokenizer: str, vocab_size: int | None, settings: Mapping[str, Any]) -> str:
        try:
            model, train = self._configs(tokenizer, settings)
            model = model.replace(vocab_size=vocab_size_for(tokenizer, vocab_size))
        except ValueError as e:
            return f"**Problem**: {e}"
        params = model.num_params()
        memory = model.training_memory_bytes(train.batch_size) / 2**20
        warn = (f"  \n**Over this server's limit** of {self.limits.max_params / 1e6:.3g}M parameters."
                if params > self.limits.max_params else "")
        try:  # the same caps Start applies, so the size line says before Start does
            self.caps.admit(model, train)
        except ValueError as e:
            warn += f"  \n**Over this server's limits**: {e}"
        return (f"**{params / 1e6:.2f}M parameters** · about **{memory:,.0f} MiB** to train at batch "
                f"{train.batch_size} · {train.batch_size * train.grad_accum_steps * model.block_size:,} tokens "
                f"per step{warn}")

    # -- training ------------------------------------------------------------------------------

    def _view(self, owner: str, run_id: str, events: list, *, final: bool, loss: bool = True,
              dynamics: bool = True) -> LiveView:
        info = self.registry.get(owner, run_id)
        log_scale, x = self._plot_prefs.get(owner, (False, "step"))
        vocab = info.model.get("vocab_size")
        return LiveView(owner=owner, run_id=run_id, status=views.without_paths(views.run_status_markdown(info, events)),
                        progress=round(100 * views.progress_fraction(info, events), 1),
                        loss=loss_figure(events, vocab, log_scale=log_scale, x=x) if loss else None,
                        dynamics=dynamics_figure(events) if dynamics else None,
                        sample=views.latest_sample(events), runs=self.run_choices(owner) if final else None)

    def watch(self, owner: str, run_id: str) -> Iterator[LiveView]:
        """The live view of a run until it ends. Only observes: leaving stops nothing."""
        self.registry.get(owner, run_id)  # an unknown run is refused before it takes a slot
        with self.watchers.hold(owner), self.run_watchers.hold(run_id):
            yield from self._watch(owner, run_id)

    def _watch(self, owner: str, run_id: str) -> Iterator[LiveView]:
        events, first, redraws = [], True, 0
        feed = self.registry.feed(owner, run_id)
        while True:
            info = self.registry.get(owner, run_id)
            new = feed.since(len(events))
            events += new
            running = info.status == "running"
            if new or first or not running:
                # Drawing competes with training for the same two cores: the status text updates every
                # poll, the loss plot every other one (and at each evaluation), the secondary figure
                # every tenth.
                final = first or not running
                evaluated = any(isinstance(e, EvalEvent) for e in new)
                yield self._view(owner, run_id, events, final=final, loss=final or evaluated or redraws % 2 == 0,
                                 dynamics=final or redraws % 10 == 0)
                first, redraws = False, redraws + 1
            if not running:
                return
            time.sleep(self.limits.poll_seconds)

    def attach(self, *, owner: str | None, run_id: str | None = None) -> Iterator[LiveView]:
        """On page load: give the browser its owner token, and re-attach to its latest run."""
        owner = self.owner_or_new(owner)
        runs = self.registry.list(owner)
        if run_id and not any(r.id == run_id for r in runs):
            raise RunError(f"There is no run {run_id!r} in this browser session.")
        if not runs:
            yield LiveView(owner=owner, run_id=None, status=NO_RUN_YET, progress=0, loss=loss_figure([]),
                           dynamics=dynamics_figure([]), sample="", runs=[])
            return
        chosen = next((r for r in runs if r.id == run_id), None) or next((r for r in runs if r.status == "running"),
                                                                         runs[0])
        yield from self.watch(owner, chosen.id)

    def start(self, *, owner: str | None, source: str, files: Sequence[str] | None, pasted: str | None,
              tokenizer: str, start_from: str, settings: Mapping[str, Any]) -> Iterator[LiveView]:
        owner = self.owner_or_new(owner)
        model_config, train_config = self._configs(tokenizer, settings)
        init_from = self._pretrained_gpt2() if start_from == START_FROM[1] else None
        paths, texts = self._documents(source, files, pasted)
        sized = model_config.replace(vocab_size=vocab_size_for(tokenizer))
        if init_from is None:
            self._check_size(sized)
        else:
            sized = ModelConfig.preset("gpt2", block_size=min(model_config.block_size, 1024))
        train_config = self.caps.admit(sized, train_config)
        run_id = self.registry.start(owner, model_config=model_config, train_config=train_config,
                                     data_paths=paths, texts=texts, init_from=init_from)
        yield from self.watch(owner, run_id)

    def _pretrained_gpt2(self) -> Path:
        from gptlab.hub import import_pretrained  # imported on demand: huggingface_hub is slow to import

        # Checked before downloading 500 MB that could not be used.
        if ModelConfig.preset("gpt2").num_params() > self.limits.max_params:
            raise DataError(f"GPT-2 small has 124M parameters; this server allows "
                            f"{self.limits.max_params / 1e6:.3g}M (start it with --max-params 130000000).")
        folder = self.registry.root / "_pretrained" / "gpt2"
        if not (folder / "config.json").is_file():
            import_pretrained("openai-community/gpt2", folder)
        return folder

    def stop(self, *, owner: str | None, run_id: str | None) -> str:
        if not run_id:
            return "No run to stop."
        stopped = self.registry.stop(self.owner_or_new(owner), run_id)
        return ("Stopping after the current step; the last checkpoint is kept." if stopped
                else "That run is not training.")

    def resume(self, *, owner: str | None, run_id: str | None, max_steps, max_time) -> Iterator[LiveView]:
        if not run_id:
            raise RunError("There is no run to resume yet; start one first.")
        owner = self.owner_or_new(owner)
        info = self.registry.get(owner, run_id)
        limits = TrainConfig.from_form({"max_steps": max_steps, "max_time": max_time},
                                       **{k: v for k, v in info.train.items() if k not in ("max_steps", "max_time")})
        if limits.max_steps <= info.step:
            raise RunError(f"This run is at step {info.step:,}; set max steps above that to train it further.")
        limits = self.caps.admit(ModelConfig.from_dict(info.model), limits)
        self.registry.start(owner, resume_id=run_id, train_config=limits)
        yield from self.watch(owner, run_id)

    def loss_view(self, *, owner: str | None, run_id: str | None, log_scale: bool, x_axis: str) -> Figure:
        """The loss figure drawn the way this owner asked (log scale, steps or tokens); the choice is
        kept for the live view's later redraws."""
        owner = self.owner_or_new(owner)
        x = "tokens" if x_axis == X_AXES[1] else "step"
        self._plot_prefs[owner] = (bool(log_scale), x)
        info = next((i for i in self.registry.list(owner) if i.id == run_id), None)
        events = self.registry.events(owner, run_id) if info else []
        return loss_figure(events, info and info.model.get("vocab_size"), log_scale=bool(log_scale), x=x)

    def downloads(self, *, owner: str | None, run_id: str | None) -> list[Path]:
        """The run's best checkpoint as a zip, and its metrics as CSV and JSONL."""
        if not run_id:
            raise RunError("There is no run yet; start one first.")
        owner = self.owner_or_new(owner)
        folder = self.registry.folder(owner, run_id)
        for stale in self.downloads_root.glob("*"):  # downloads of runs the registry has cleaned up
            if not (self.registry.root / stale.name).is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        out = self.downloads_root / folder.name
        out.mkdir(parents=True, exist_ok=True)
        files = []
        checkpoint = best_or_last(folder)
        if checkpoint is not None:
            files.append(zip_for_sharing(checkpoint, out / f"gptlab-{run_id}-{checkpoint.name}.zip"))
        events = self.registry.events(owner, run_id)
        (out / "metrics.csv").write_text(views.metrics_csv(events), encoding="utf-8")
        (out / "metrics.jsonl").write_text("".join(json.dumps(e.as_dict()) + "\n" for e in events), encoding="utf-8")
        return files + [out / "metrics.csv", out / "metrics.jsonl"]

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

    def _complete(self, owner, folder: Path, prompt: str, config: SampleConfig) -> str:
        model, tokenizer = self._loaded(folder)
        ids = generate(model, self._prompt_ids(tokenizer, prompt), config, eot=tokenizer.eot)
        with self.generations.hold(self._who(owner)):
            return prompt + "".join(stream_text(ids, tokenizer))

    def _plain_sampling(self, temperature, max_new_tokens, seed) -> SampleConfig:
        return self._sample_config({"temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed},
                                   strategy="sample")

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
