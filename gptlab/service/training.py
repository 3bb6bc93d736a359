"""Previews of the data, settings, and training runs: start, watch, stop, resume, download."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from matplotlib.figure import Figure

from gptlab import views
from gptlab.checkpoint import best_or_last, zip_for_sharing
from gptlab.config import ModelConfig, TrainConfig, vocab_size_for
from gptlab.data import DataError, load_texts, prepare_data
from gptlab.events import EvalEvent, SnapshotEvent
from gptlab.fields import shown, whole
from gptlab.gguf_export import export_gguf, modelfile
from gptlab.insight.doctor import diagnose
from gptlab.insight.dynamics_plots import doctor_view
from gptlab.insight.token_views import comparison_html
from gptlab.insight.tokens import compare_tokenizers
from gptlab.insight.timeline import last_step
from gptlab.plots import dynamics_figure, loss_figure
from gptlab.runs import RunError
from gptlab.service.base import NO_RUN_YET, SOURCES, START_FROM, X_AXES, LabBase
from gptlab.views import LiveView, Preview


# Polls between redraws of the live view's figures; bench/app_overhead.py measures what they cost.
LOSS_EVERY, DYNAMICS_EVERY = 5, 30


class Training(LabBase):
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
        comparison = compare_tokenizers(documents, known={data.tokenizer.name: data.stats.tokens})
        return Preview(message=f"**Ready**: {len(documents)} document(s).",
                       stats=views.stats_markdown(data.stats, data.tokenizer, block, data.baselines),
                       head="\n".join(documents[0].split("\n")[:20]),
                       shift=views.shift_table(data.tokenizer, data.dataset.splits["train"].tolist()),
                       vocab_size=data.tokenizer.vocab_size, tokens=comparison_html(comparison))

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
              dynamics: bool = True, snapshots: bool = True) -> LiveView:
        info = self.registry.get(owner, run_id)
        log_scale, x = self._plot_prefs.get(owner, (False, "step"))
        vocab = info.model.get("vocab_size")
        return LiveView(owner=owner, run_id=run_id, status=views.without_paths(views.run_status_markdown(info, events)),
                        progress=round(100 * views.progress_fraction(info, events), 1),
                        loss=self._loss_figure(info, events, log_scale=log_scale, x=x) if loss else None,
                        dynamics=dynamics_figure(events, info.train.get("grad_clip")) if dynamics else None,
                        sample=views.latest_sample(events), runs=self.run_choices(owner) if final else None,
                        doctor=doctor_view(diagnose(events, vocab or 2, info.train, info.model),
                                           finished=info.status != "running") if dynamics else None,
                        snapshot_step=(last_step(events) or 0) if snapshots else None)

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
                # Drawing competes with training for the same two cores (a figure costs ~0.14 s to draw
                # and encode): the status text updates every poll, the loss plot every LOSS_EVERY-th
                # (and at each evaluation), the secondary figure and the doctor every DYNAMICS_EVERY-th.
                final = first or not running
                evaluated = any(isinstance(e, EvalEvent) for e in new)
                yield self._view(owner, run_id, events, final=final,
                                 loss=final or evaluated or redraws % LOSS_EVERY == 0,
                                 dynamics=final or redraws % DYNAMICS_EVERY == 0,
                                 snapshots=final or any(isinstance(e, SnapshotEvent) for e in new))
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
                           dynamics=dynamics_figure([]), sample="", runs=[], snapshot_step=0)
            return
        chosen = next((r for r in runs if r.id == run_id), None) or next((r for r in runs if r.status == "running"),
                                                                         runs[0])
        yield from self.watch(owner, chosen.id)

    def max_processes(self) -> int:
        """How many processes a run may train on here: one per CUDA GPU, unless the server says."""
        if self.limits.max_processes is not None:
            return max(1, self.limits.max_processes)
        import torch

        return max(1, torch.cuda.device_count())

    def start(self, *, owner: str | None, source: str, files: Sequence[str] | None, pasted: str | None,
              tokenizer: str, start_from: str, settings: Mapping[str, Any], processes=1) -> Iterator[LiveView]:
        """Start a run and watch it. processes > 1 trains it as a torchrun job on that many GPUs (or CPU
        processes, where the server allows them), read from its run folder like any run."""
        owner = self.owner_or_new(owner)
        run_id = self._launch(owner, source=source, files=files, pasted=pasted, tokenizer=tokenizer,
                              start_from=start_from, settings=settings, processes=processes)
        yield from self.watch(owner, run_id)

    def _launch(self, owner: str, *, source: str, files: Sequence[str] | None, pasted: str | None, tokenizer: str,
                start_from: str, settings: Mapping[str, Any], processes=1) -> str:
        """Check a new run against the limits and start it training in the background; its id."""
        processes = self._processes(processes)
        model_config, train_config = self._configs(tokenizer, settings)
        init_from = self._pretrained_gpt2() if start_from == START_FROM[1] else None
        paths, texts = self._documents(source, files, pasted)
        sized = model_config.replace(vocab_size=vocab_size_for(tokenizer))
        if init_from is None:
            self._check_size(sized)
        else:
            sized = ModelConfig.preset("gpt2", block_size=min(model_config.block_size, 1024))
        train_config = self.caps.admit(sized, train_config)
        return self.registry.start(owner, model_config=model_config, train_config=train_config,
                                   data_paths=paths, texts=texts, init_from=init_from, processes=processes)

    def _processes(self, processes) -> int:
        most = self.max_processes()
        if processes in (None, ""):
            return 1
        if not (whole(processes) and 1 <= processes <= most):
            raise DataError(f"A run trains on 1 to {most} process(es) here (one per GPU); got {shown(processes)}.")
        return int(processes)

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
        if info is None:
            return loss_figure([], log_scale=bool(log_scale), x=x)
        return self._loss_figure(info, self.registry.events(owner, run_id), log_scale=bool(log_scale), x=x)

    @staticmethod
    def _loss_figure(info, events, *, log_scale: bool, x: str) -> Figure:
        """The loss chart with the run's baselines, and bits per character where the run's ratio is known."""
        _, ratio = views.loss_scale(info)
        return loss_figure(events, info.model.get("vocab_size"), log_scale=log_scale, x=x,
                           baselines=views.run_baselines(info), tokens_per_char=ratio)

    def _downloads_folder(self, owner: str | None, run_id: str | None) -> tuple[str, Path, Path]:
        """(owner, the run's folder, the folder its downloads are written to)."""
        if not run_id:
            raise RunError("There is no run yet; start one first.")
        owner = self.owner_or_new(owner)
        folder = self.registry.folder(owner, run_id)
        for stale in self.downloads_root.glob("*"):  # downloads of runs the registry has cleaned up
            if not (self.registry.root / stale.name).is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        out = self.downloads_root / folder.name
        out.mkdir(parents=True, exist_ok=True)
        return owner, folder, out

    def downloads(self, *, owner: str | None, run_id: str | None) -> list[Path]:
        """The run's best checkpoint as a zip, its metrics as CSV and JSONL, and its report (Markdown)."""
        owner, folder, out = self._downloads_folder(owner, run_id)
        files = []
        checkpoint = best_or_last(folder)
        if checkpoint is not None:
            files.append(zip_for_sharing(checkpoint, out / f"gptlab-{run_id}-{checkpoint.name}.zip"))
        events = self.registry.events(owner, run_id)
        (out / "metrics.csv").write_text(views.metrics_csv(events), encoding="utf-8")
        (out / "metrics.jsonl").write_text("".join(json.dumps(e.as_dict()) + "\n" for e in events), encoding="utf-8")
        report = self.report(owner=owner, run_id=run_id)  # Lab's Report part (service/report.py)
        return files + [out / "metrics.csv", out / "metrics.jsonl", *report.files]

    def gguf_download(self, *, owner: str | None, run_id: str | None) -> list[Path]:
        """The run's best checkpoint as a GGUF file (f16) for llama.cpp, and its Ollama Modelfile."""
        _, folder, out = self._downloads_folder(owner, run_id)
        checkpoint = best_or_last(folder)
        if checkpoint is None:
            raise RunError("This run has saved no checkpoint yet; wait for its first evaluation.")
        path = export_gguf(checkpoint, out / f"gptlab-{run_id}-{checkpoint.name}.gguf")
        return [path, modelfile(path)]
