"""GPT Lab: train a small GPT on your own text in the browser, and watch it learn.

A thin Gradio layer over gptlab: handlers check input against the limits below, call the library,
and turn its errors into messages. Training runs in background threads owned by a RunRegistry;
the event handlers only observe, so a refresh or a closed tab never stops a run.
"""

from __future__ import annotations

import ctypes
import os
import sys

# Before gradio is imported: no telemetry or version checks (they would try to reach the internet).
for _key, _value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "MPLBACKEND": "Agg"}.items():
    os.environ.setdefault(_key, _value)


def _share_one_malloc_arena() -> None:
    """Training runs in a background thread, and glibc gives each thread a malloc arena of its own.
    In such an arena, freeing a step's multi-MB activations hands their pages back to the OS and the
    next step faults them in again: the same training ran ~12% slower in a thread than in the main
    thread, until every thread shared the main arena. It must happen before another thread allocates."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX (glibc's malloc.h)
        except (OSError, AttributeError):
            pass  # not glibc: nothing to share


_share_one_malloc_arena()

import argparse
import functools
import hashlib
import inspect
import json
import re
import secrets
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from gptlab import views
from gptlab.checkpoint import load_checkpoint
from gptlab.config import ACTIVATIONS, DEFAULT_PRESET, FIELD_HELP, LR_SCHEDULES, PRECISIONS, PRESETS, ModelConfig, SampleConfig, TrainConfig
from gptlab.data import DataError, load_texts, prepare_data
from gptlab.events import EvalEvent, Event
from gptlab.generate import generate, next_token_distribution
from gptlab.plots import compare_figure, dynamics_figure, loss_figure
from gptlab.runs import RunRegistry
from gptlab.textstream import stream_text
from gptlab.threads import use_one_thread
from gptlab.tokenizers import prompt_ids

SOURCES = ("Bundled Shakespeare", "Upload files", "Paste text")
START_FROM = ("Scratch (random weights)", "Pretrained GPT-2 small (from the Hugging Face Hub)")
CHECKPOINTS = ("best", "last", "uploaded .zip")
STRATEGIES = ("sample", "greedy", "beam")
SWEEP_TEMPERATURES = (0.2, 0.5, 0.8, 1.0, 1.4)
MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "activation")
TRAIN_FIELDS = ("batch_size", "grad_accum_steps", "learning_rate", "min_lr", "lr_schedule", "warmup_steps",
                "weight_decay", "beta1", "beta2", "grad_clip", "max_steps", "max_time", "eval_interval",
                "eval_batches", "patience", "sample_interval", "seed", "precision")
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass
class Limits:
    """What one server allows; self-hosters raise them with flags."""
    max_upload_mb: float = 20.0
    max_paste_chars: int = 5_000_000
    max_params: int = 30_000_000
    max_new_tokens: int = 1000
    max_prompt_chars: int = 4000
    max_checkpoint_mb: float = 600.0
    poll_seconds: float = 1.0  # the live view redraws at most this often, whatever the step rate


def user_errors(fn):
    """Library errors are sentences for the user: show them as gr.Error, never as a stack trace.

    Handlers also keep their torch work on one CPU thread, leaving the cores to training
    (gptlab.threads says why). Gradio may resume a generator on any of its worker threads, so a
    generator's thread is set at every step."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            steps = fn(*args, **kwargs)
            try:
                while True:
                    use_one_thread()
                    try:
                        update = next(steps)
                    except StopIteration:
                        return
                    yield update
            except (ValueError, OSError) as e:
                raise gr.Error(str(e).strip() or type(e).__name__) from None
            finally:
                steps.close()
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            use_one_thread()
            try:
                return fn(*args, **kwargs)
            except (ValueError, OSError) as e:
                raise gr.Error(str(e).strip() or type(e).__name__) from None
    return wrapper


def named(fn, *names: str):
    """`fn` with a signature that spells out its *values, so API users see real parameter names."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_POSITIONAL]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]

    if inspect.isgeneratorfunction(fn):
        def call(*args):
            yield from fn(*args)
    else:
        def call(*args):
            return fn(*args)
    call.__name__, call.__doc__ = fn.__name__, fn.__doc__
    call.__signature__ = inspect.Signature(params)
    return call


DECODING = ("strategy", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram_size",
            "num_beams", "length_penalty", "max_new_tokens", "seed", "stop")


class Lab:
    """The app's state and handlers, independent of the layout (the tests call these directly)."""

    def __init__(self, runs_dir: str | os.PathLike = "runs", *, max_concurrent: int = 1, limits: Limits | None = None):
        self.registry = RunRegistry(runs_dir, max_concurrent=max_concurrent)
        self.limits = limits or Limits()
        self._plot_prefs: dict[str, tuple[bool, str]] = {}
        self._models: dict[tuple, tuple] = {}
        self._models_lock = threading.Lock()

    # -- owners --------------------------------------------------------------------------------

    @staticmethod
    def owner_or_new(owner: str | None) -> str:
        """A browser's secret owner token; anything else (empty, malformed) gets a fresh one."""
        return owner if isinstance(owner, str) and OWNER_PATTERN.match(owner) else secrets.token_urlsafe(24)

    def _run_choices(self, owner: str) -> list[tuple[str, str]]:
        out = []
        for info in self.registry.list(owner):
            best = f" · best val {info.best_val_loss:.3f}" if info.best_val_loss is not None else ""
            out.append((f"{info.name} · {info.status}{best}", info.id))
        return out

    # -- data ----------------------------------------------------------------------------------

    def _documents(self, source: str, files, pasted: str) -> tuple[list[str] | None, list[str] | None]:
        """(paths, texts) for the chosen source, checked against the upload limits."""
        if source == "Upload files":
            paths = [str(f) for f in (files or [])]
            if not paths:
                raise DataError("Choose one or more .txt or .md files to upload, or pick another source.")
            total = sum(Path(p).stat().st_size for p in paths)
            if total > self.limits.max_upload_mb * 2**20:
                raise DataError(f"The files add up to {total / 2**20:.1f} MB; this server takes at most "
                                f"{self.limits.max_upload_mb:g} MB. Use fewer or smaller files.")
            return paths, None
        if source == "Paste text":
            if not pasted or not pasted.strip():
                raise DataError("Paste some text into the box first, or pick another source.")
            if len(pasted) > self.limits.max_paste_chars:
                raise DataError(f"The pasted text has {len(pasted):,} characters; the limit is "
                                f"{self.limits.max_paste_chars:,}. Upload it as a file or shorten it.")
            return None, [pasted]
        return None, None

    def preview(self, source, files, pasted, tokenizer, block_size, val_fraction=0.1):
        """(message, stats, first lines, input/target table, vocabulary size). Bad input is reported
        in the message next to the input rather than raised."""
        use_one_thread()  # as in user_errors
        return self._preview(source, files, pasted, tokenizer, block_size, val_fraction)

    def _preview(self, source, files, pasted, tokenizer, block_size, val_fraction):
        try:
            paths, texts = self._documents(source, files, pasted)
            documents = load_texts(paths, texts)
            data = prepare_data(documents, tokenizer, int(block_size), float(val_fraction))
        except ValueError as e:
            return f"**Problem**: {e}", "", "", [], None
        head = "\n".join(documents[0].split("\n")[:20])
        table = views.shift_table(data.tokenizer, data.dataset.splits["train"].tolist())
        message = f"**Ready**: {len(documents)} document(s)."
        return (message, views.stats_markdown(data.stats, data.tokenizer, int(block_size)), head, table,
                data.tokenizer.vocab_size)

    # -- settings ------------------------------------------------------------------------------

    def preset_values(self, name: str) -> list:
        model, train = ModelConfig.preset(name), TrainConfig.preset(name)
        values = [getattr(model, f) for f in MODEL_FIELDS] + [getattr(train, f) for f in TRAIN_FIELDS]
        return values + [train.tokenizer]

    @staticmethod
    def _configs(tokenizer, values: dict) -> tuple[ModelConfig, TrainConfig]:
        model = {f: values[f] for f in MODEL_FIELDS}
        train = {f: values[f] for f in TRAIN_FIELDS}
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum_steps", "warmup_steps",
                     "max_steps", "eval_interval", "eval_batches", "sample_interval", "seed"):
            value = model.get(name, train.get(name))
            if value is None or float(value) != int(value):
                raise DataError(f"{name} must be a whole number, got {value!r}.")
            (model if name in model else train)[name] = int(value)
        train["max_time"] = float(train["max_time"]) if train["max_time"] else None  # 0 or empty: no budget
        train["patience"] = int(train["patience"]) if train["patience"] else None
        return ModelConfig(**model), TrainConfig(tokenizer=tokenizer, device="auto", **train)

    def size_summary(self, tokenizer, vocab_size, *values) -> str:
        try:
            model, train = self._configs(tokenizer, dict(zip(MODEL_FIELDS + TRAIN_FIELDS, values)))
        except ValueError as e:
            return f"**Problem**: {e}"
        vocab = 50257 if tokenizer == "gpt2" else int(vocab_size or 65)
        model = model.replace(vocab_size=vocab)
        params = model.num_params()
        memory = model.training_memory_bytes(train.batch_size * 1) / 2**20
        warn = (f"  \n**Over this server's limit** of {self.limits.max_params / 1e6:.3g}M parameters."
                if params > self.limits.max_params else "")
        return (f"**{params / 1e6:.2f}M parameters** · about **{memory:,.0f} MiB** to train at batch "
                f"{train.batch_size} · {train.batch_size * train.grad_accum_steps * model.block_size:,} tokens "
                f"per step{warn}")

    # -- training ------------------------------------------------------------------------------

    def _render(self, owner: str, run_id: str, events: list[Event], with_choices: bool, loss: bool = True,
                dynamics: bool = True):
        info = self.registry.get(owner, run_id)
        log_scale, x = self._plot_prefs.get(owner, (False, "step"))
        vocab = info.model.get("vocab_size")
        choices = gr.update(choices=self._run_choices(owner), value=run_id) if with_choices else gr.skip()
        return (owner, run_id, views.run_status_markdown(info, events),
                round(100 * views.progress_fraction(info, events), 1),
                loss_figure(events, vocab, log_scale=log_scale, x=x) if loss else gr.skip(),
                dynamics_figure(events) if dynamics else gr.skip(),
                views.latest_sample(events), choices)

    def watch(self, owner: str, run_id: str):
        """Yield the live view of a run until it ends. Only observes: leaving stops nothing."""
        events, offset, first, redraws = [], 0, True, 0
        while True:
            info = self.registry.get(owner, run_id)
            new, offset = self.registry.new_events(owner, run_id, offset)
            events += new
            running = info.status == "running"
            if new or first or not running:
                # Drawing competes with training for the same two cores: the status text updates every
                # poll, the loss plot every other one (and at each evaluation), the secondary figure
                # every tenth.
                final = first or not running
                evaluated = any(isinstance(e, EvalEvent) for e in new)
                yield self._render(owner, run_id, events, with_choices=final,
                                   loss=final or evaluated or redraws % 2 == 0, dynamics=final or redraws % 10 == 0)
                first, redraws = False, redraws + 1
            if not running:
                return
            time.sleep(self.limits.poll_seconds)

    @user_errors
    def start(self, owner, source, files, pasted, tokenizer, start_from, *values):
        owner = self.owner_or_new(owner)
        settings = dict(zip(MODEL_FIELDS + TRAIN_FIELDS, values))
        model_config, train_config = self._configs(tokenizer, settings)
        init_from = None
        if start_from == START_FROM[1]:
            init_from = self._pretrained_gpt2()
        paths, texts = self._documents(source, files, pasted)
        vocab = 50257 if tokenizer == "gpt2" or init_from else 256
        if model_config.replace(vocab_size=vocab).num_params() > self.limits.max_params and init_from is None:
            raise DataError(f"That model has about {model_config.replace(vocab_size=vocab).num_params() / 1e6:.1f}M "
                            f"parameters; this server allows {self.limits.max_params / 1e6:.3g}M. Make it smaller "
                            "(fewer layers or a narrower width).")
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

    @user_errors
    def attach(self, owner, run_id=None):
        """On page load: give the browser its owner token, and re-attach to its latest run."""
        owner = self.owner_or_new(owner)
        runs = self.registry.list(owner)
        if run_id and not any(r.id == run_id for r in runs):
            raise DataError(f"There is no run {run_id!r} in this browser session.")
        if not runs:
            yield (owner, None, "No run yet. Pick your data and settings, then press **Start**.", 0,
                   loss_figure([]), dynamics_figure([]), "", gr.update(choices=[], value=None))
            return
        chosen = next((r for r in runs if r.id == run_id), None) or next((r for r in runs if r.status == "running"),
                                                                         runs[0])
        yield from self.watch(owner, chosen.id)

    @user_errors
    def stop(self, owner, run_id) -> str:
        if not run_id:
            return "No run to stop."
        stopped = self.registry.stop(owner, run_id)
        return ("Stopping after the current step; the last checkpoint is kept." if stopped
                else "That run is not training.")

    @user_errors
    def resume(self, owner, run_id, max_steps, max_time):
        if not run_id:
            raise DataError("There is no run to resume yet; start one first.")
        info = self.registry.get(owner, run_id)
        limits = TrainConfig.from_dict({**info.train, "max_steps": int(max_steps),
                                        "max_time": float(max_time) if max_time else None})
        self.registry.start(owner, resume_id=run_id, train_config=limits)
        yield from self.watch(owner, run_id)

    def set_plot_prefs(self, owner, run_id, log_scale, x_axis):
        owner = self.owner_or_new(owner)
        self._plot_prefs[owner] = (bool(log_scale), "tokens" if x_axis == "tokens seen" else "step")
        if not run_id:
            return loss_figure([])
        try:
            info = self.registry.get(owner, run_id)
        except ValueError:
            return loss_figure([])
        events = self.registry.events(owner, run_id)
        return loss_figure(events, info.model.get("vocab_size"), log_scale=bool(log_scale),
                           x=self._plot_prefs[owner][1])

    @user_errors
    def downloads(self, owner, run_id) -> list[str]:
        if not run_id:
            raise DataError("There is no run yet; start one first.")
        folder = self.registry.folder(owner, run_id)
        out = folder / "downloads"
        out.mkdir(exist_ok=True)
        files = []
        best = folder / "best" if (folder / "best").is_dir() else folder / "last"
        if best.is_dir():
            archive = shutil.make_archive(str(out / f"gptlab-{run_id}-{best.name}"), "zip", root_dir=best)
            files.append(archive)
        events = self.registry.events(owner, run_id)
        (out / "metrics.csv").write_text(views.metrics_csv(events), encoding="utf-8")
        (out / "metrics.jsonl").write_text("".join(json.dumps(e.as_dict()) + "\n" for e in events), encoding="utf-8")
        return files + [str(out / "metrics.csv"), str(out / "metrics.jsonl")]

    # -- models for sampling -------------------------------------------------------------------

    def _checkpoint_folder(self, owner, run_id, which, upload) -> Path:
        if which == "uploaded .zip":
            return self._unpack_upload(upload)
        if not run_id:
            raise DataError("Choose a run first (train one on the Train tab), or upload a checkpoint .zip.")
        folder = self.registry.folder(owner, run_id) / which
        if which == "best" and not folder.is_dir() and (folder.parent / "last").is_dir():
            folder = folder.parent / "last"  # stopped before its first evaluation: its last weights are its best
        if not folder.is_dir():
            other = "last" if which == "best" else "best"
            hint = f"; try '{other}'" if (folder.parent / other).is_dir() else "; let the run evaluate once first"
            raise DataError(f"This run has no '{which}' checkpoint yet{hint}.")
        return folder

    def _unpack_upload(self, upload) -> Path:
        if not upload:
            raise DataError("Upload a checkpoint .zip (from the Train tab's downloads) first.")
        path = Path(upload)
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path.name} is not a .zip file; upload the checkpoint zip from the Train tab.")
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(2**20), b""):
                digest.update(chunk)
        # The same zip unpacks once: repeated clicks reuse the folder (and the loaded model).
        target = self.registry.root / "_uploads" / digest.hexdigest()[:32]
        if not target.is_dir():
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
                size = sum(m.file_size for m in members)
                if size > self.limits.max_checkpoint_mb * 2**20:
                    raise DataError(f"The checkpoint unpacks to {size / 2**20:.0f} MB; the limit is "
                                    f"{self.limits.max_checkpoint_mb:g} MB.")
                for m in members:
                    if m.filename.startswith(("/", "\\")) or ".." in Path(m.filename).parts:
                        raise DataError(f"{path.name} contains an unsafe path ({m.filename}); it was not unpacked.")
                tmp = target.with_name(f"{target.name}.{secrets.token_hex(4)}.tmp")
                archive.extractall(tmp)
            try:
                os.replace(tmp, target)
            except OSError:  # another request unpacked the same zip first
                shutil.rmtree(tmp, ignore_errors=True)
            self._prune_uploads(keep=8)
        configs = sorted(target.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            shutil.rmtree(target, ignore_errors=True)
            raise DataError(f"{path.name} holds no config.json: it is not a gptlab checkpoint.")
        return configs[0].parent

    def _prune_uploads(self, keep: int) -> None:
        folders = sorted((p for p in (self.registry.root / "_uploads").iterdir() if p.is_dir()),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for old in folders[keep:]:
            shutil.rmtree(old, ignore_errors=True)

    def _model(self, folder: Path):
        key = (str(folder), (folder / "model.safetensors").stat().st_mtime_ns)
        with self._models_lock:
            if key not in self._models:
                checkpoint = load_checkpoint(folder)
                if len(self._models) >= 4:
                    self._models.pop(next(iter(self._models)))
                self._models[key] = (checkpoint.load_model(), checkpoint.tokenizer)
            return self._models[key]

    def _prompt_ids(self, tokenizer, prompt: str) -> list[int]:
        if len(prompt) > self.limits.max_prompt_chars:
            raise DataError(f"The prompt has {len(prompt):,} characters; the limit is {self.limits.max_prompt_chars:,}.")
        return prompt_ids(tokenizer, prompt)

    def _sample_config(self, strategy, temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size,
                       num_beams, length_penalty, max_new_tokens, seed, stop) -> SampleConfig:
        if not max_new_tokens or int(max_new_tokens) > self.limits.max_new_tokens:
            raise DataError(f"max new tokens must be between 1 and {self.limits.max_new_tokens}.")
        sampling = strategy == "sample"
        return SampleConfig(
            strategy=strategy, max_new_tokens=int(max_new_tokens), temperature=float(temperature),
            top_k=int(top_k) if sampling and top_k else None, top_p=float(top_p) if sampling and top_p != 1 else None,
            min_p=float(min_p) if sampling and min_p else None, repetition_penalty=float(repetition_penalty),
            no_repeat_ngram_size=int(no_repeat_ngram_size or 0), num_beams=int(num_beams) if strategy == "beam" else 1,
            length_penalty=float(length_penalty), seed=int(seed) if seed is not None else None,
            stop=tuple(s for s in (stop or "").split("|") if s))

    # -- sample and compare ----------------------------------------------------------------------

    @user_errors
    def sample(self, owner, run_id, which, upload, prompt, *decoding):
        config = self._sample_config(*decoding)
        model, tokenizer = self._model(self._checkpoint_folder(owner, run_id, which, upload))
        ids = generate(model, self._prompt_ids(tokenizer, prompt or ""), config, eot=tokenizer.eot)
        text = prompt or ""
        yield text
        for piece in stream_text(ids, tokenizer, stop=config.stop):
            text += piece
            yield text

    @user_errors
    def next_tokens(self, owner, run_id, which, upload, prompt, *decoding) -> list[list]:
        config = self._sample_config(*decoding)
        model, tokenizer = self._model(self._checkpoint_folder(owner, run_id, which, upload))
        top = next_token_distribution(model, self._prompt_ids(tokenizer, prompt or ""), config, eot=tokenizer.eot,
                                      top_n=15)
        return [[views.token_text(tokenizer, i), i, round(p, 4)] for i, p in top]

    def _complete(self, folder: Path, prompt: str, config: SampleConfig) -> str:
        model, tokenizer = self._model(folder)
        ids = generate(model, self._prompt_ids(tokenizer, prompt), config, eot=tokenizer.eot)
        return prompt + "".join(stream_text(ids, tokenizer))

    @user_errors
    def compare(self, owner, run_id, prompt, seed, temperature, max_new_tokens) -> tuple[str, str]:
        if not run_id:
            raise DataError("Train a run first: the comparison uses its untrained and trained weights.")
        folder = self.registry.folder(owner, run_id)
        trained = folder / "best" if (folder / "best").is_dir() else folder / "last"
        if not trained.is_dir():
            raise DataError("This run has no trained checkpoint yet; wait for its first evaluation.")
        config = self._sample_config("sample", temperature, None, 1.0, None, 1.0, 0, 1, 1.0, max_new_tokens, seed, "")
        return self._complete(folder / "init", prompt or "", config), self._complete(trained, prompt or "", config)

    @user_errors
    def sweep(self, owner, run_id, prompt, seed, max_new_tokens) -> list[list]:
        folder = self._checkpoint_folder(owner, run_id, "best", None)
        rows = []
        for t in SWEEP_TEMPERATURES:
            config = self._sample_config("sample", t, None, 1.0, None, 1.0, 0, 1, 1.0, max_new_tokens, seed, "")
            rows.append([t, self._complete(folder, prompt or "", config)])
        return rows

    @user_errors
    def run_vs_run(self, owner, run_a, run_b, prompt, seed, max_new_tokens):
        if not run_a or not run_b:
            raise DataError("Choose two runs to compare.")
        config = self._sample_config("sample", 0.8, None, 1.0, None, 1.0, 0, 1, 1.0, max_new_tokens, seed, "")
        series, texts = [], []
        for run_id in (run_a, run_b):
            info = self.registry.get(owner, run_id)
            series.append((info.name, self.registry.events(owner, run_id)))
            texts.append(self._complete(self._checkpoint_folder(owner, run_id, "best", None), prompt or "", config)
                         if (self.registry.folder(owner, run_id) / "best").is_dir() else "(no checkpoint yet)")
        return compare_figure(series), texts[0], texts[1]


# ------------------------------------------------------------------------------------------------
# Layout


def _setting(name: str, value, **kw):
    label = name.replace("_", " ")
    info = FIELD_HELP.get(name)
    if isinstance(value, bool):
        return gr.Checkbox(value=value, label=label, info=info, **kw)
    if name == "precision":
        return gr.Dropdown(list(PRECISIONS), value=value, label=label, info=info, **kw)
    if name == "lr_schedule":
        return gr.Dropdown(list(LR_SCHEDULES), value=value, label=label, info=info, **kw)
    if name == "activation":
        return gr.Dropdown(list(ACTIVATIONS), value=value, label=label, info=info, **kw)
    if name in ("max_time", "patience"):
        return gr.Number(value=value or 0, label=label + " (0: off)", info=info, minimum=0, **kw)
    return gr.Number(value=value, label=label, info=info, **kw)


def build_demo(lab: Lab) -> gr.Blocks:
    model0, train0 = ModelConfig.preset(DEFAULT_PRESET), TrainConfig.preset(DEFAULT_PRESET)
    secret_file = lab.registry.root / ".browser-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_hex(16))
    with gr.Blocks(title="GPT Lab") as demo:
        owner = gr.BrowserState("", storage_key="gptlab-owner", secret=secret_file.read_text().strip())
        run_id = gr.Textbox(visible=False, elem_id="run-id")  # a component, so API users can pass it
        vocab = gr.State(65)
        gr.Markdown("# GPT Lab\nTrain a small GPT on your own text and watch it go from gibberish to words.")

        with gr.Tab("Data"):
            with gr.Row():
                with gr.Column(scale=1):
                    source = gr.Radio(SOURCES, value=SOURCES[0], label="Text to learn from")
                    files = gr.File(file_count="multiple", file_types=[".txt", ".md"], type="filepath",
                                    label="Your .txt / .md files", visible=False, elem_id="upload")
                    pasted = gr.Textbox(lines=8, label="Your text", visible=False, elem_id="paste")
                    tokenizer = gr.Radio(["char", "gpt2"], value=train0.tokenizer, label="Tokenizer",
                                         info=FIELD_HELP["tokenizer"])
                    data_status = gr.Markdown(elem_id="data-status")
                with gr.Column(scale=2):
                    stats = gr.Markdown(elem_id="data-stats")
                    head = gr.Textbox(lines=10, max_lines=10, label="First lines", interactive=False)
            gr.Markdown("**The shifting trick**: at each position the model reads the tokens so far and must "
                        "predict the next one, so the targets are the inputs shifted by one token.")
            shift = gr.Dataframe(headers=["position", "input token", "target (next token)"], interactive=False,
                                 elem_id="shift-table")

        with gr.Tab("Train"):
            with gr.Row():
                with gr.Column(scale=2, min_width=360):
                    preset = gr.Dropdown(list(PRESETS), value=DEFAULT_PRESET, label="Preset",
                                         info="named settings; every value below can be changed")
                    start_from = gr.Radio(START_FROM, value=START_FROM[0], label="Start from")
                    size = gr.Markdown(elem_id="size")
                    fields = {}
                    for title, names in (("Model", MODEL_FIELDS), ("Optimisation", TRAIN_FIELDS[:10]),
                                         ("Duration, evaluation and precision", TRAIN_FIELDS[10:])):
                        with gr.Accordion(title, open=False):
                            for pair in (names[i:i + 2] for i in range(0, len(names), 2)):
                                with gr.Row():
                                    for name in pair:
                                        default = getattr(model0 if name in MODEL_FIELDS else train0, name)
                                        fields[name] = _setting(name, default)
                    with gr.Row():
                        start_btn = gr.Button("Start", variant="primary", elem_id="start", min_width=100)
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", min_width=100)
                        resume_btn = gr.Button("Resume", elem_id="resume", min_width=100)
                    with gr.Row():
                        run_pick = gr.Dropdown([], label="your runs", elem_id="runs", allow_custom_value=True)
                    download_btn = gr.Button("Prepare downloads")
                    download_files = gr.File(label="best checkpoint (.zip) and metrics", file_count="multiple")
                with gr.Column(scale=3):
                    status = gr.Markdown(elem_id="status")
                    progress = gr.Slider(0, 100, value=0, label="progress (%)", interactive=False, buttons=[],
                                         elem_id="progress")
                    loss_plot = gr.Plot(label="loss", elem_id="loss-plot", show_label=False)
                    with gr.Row():
                        log_scale = gr.Checkbox(False, label="log-scale loss")
                        x_axis = gr.Radio(["step", "tokens seen"], value="step", label="x axis", show_label=False)
                    dyn_plot = gr.Plot(label="learning rate, gradient norm, speed", elem_id="dyn-plot",
                                       show_label=False)
                    sample_box = gr.Textbox(lines=6, label="latest sample", interactive=False, elem_id="sample")

        with gr.Tab("Compare"):
            with gr.Row():
                cmp_prompt = gr.Textbox(value="", label="prompt", elem_id="cmp-prompt")
                cmp_seed = gr.Number(value=1, label="seed", precision=0)
                cmp_temp = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="temperature")
                cmp_len = gr.Slider(10, 500, value=200, step=10, label="new tokens")
            compare_btn = gr.Button("Untrained vs trained", variant="primary", elem_id="compare")
            with gr.Row():
                untrained_box = gr.Textbox(lines=8, label="untrained (the run's step-0 weights)", elem_id="untrained")
                trained_box = gr.Textbox(lines=8, label="trained (best checkpoint)", elem_id="trained")
            sweep_btn = gr.Button("Temperature sweep")
            sweep_table = gr.Dataframe(headers=["temperature", "text"], interactive=False, wrap=True)
            gr.Markdown("### Run against run")
            with gr.Row():
                run_a = gr.Dropdown([], label="run A", allow_custom_value=True)
                run_b = gr.Dropdown([], label="run B", allow_custom_value=True)
            runs_btn = gr.Button("Compare runs")
            runs_plot = gr.Plot(show_label=False)
            with gr.Row():
                text_a = gr.Textbox(lines=6, label="run A sample")
                text_b = gr.Textbox(lines=6, label="run B sample")

        with gr.Tab("Sample"):
            with gr.Row():
                with gr.Column(scale=2):
                    prompt = gr.Textbox(lines=3, label="prompt", elem_id="prompt")
                    with gr.Row():
                        sample_run = gr.Dropdown([], label="run", allow_custom_value=True)
                        which = gr.Radio(CHECKPOINTS, value="best", label="checkpoint")
                    upload_ckpt = gr.File(file_types=[".zip"], type="filepath", label="checkpoint .zip", visible=False)
                    strategy = gr.Radio(STRATEGIES, value="sample", label="decoding")
                    with gr.Row():
                        temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="temperature")
                        top_k = gr.Number(value=0, precision=0, minimum=0, label="top-k (0: off)")
                    with gr.Row():
                        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (1: off)")
                        min_p = gr.Slider(0.0, 0.5, value=0.0, step=0.01, label="min-p (0: off)")
                    with gr.Row():
                        rep = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="repetition penalty (1: off)")
                        ngram = gr.Number(value=0, precision=0, minimum=0, label="no-repeat n-gram size (0: off)")
                    with gr.Row():
                        max_new = gr.Slider(1, lab.limits.max_new_tokens, value=200, step=1, label="max new tokens")
                        seed = gr.Number(value=1, precision=0, label="seed")
                    with gr.Row(visible=False) as beam_row:
                        beams = gr.Slider(2, 8, value=4, step=1, label="beams")
                        length_penalty = gr.Slider(-2.0, 2.0, value=1.0, step=0.1, label="length penalty")
                    stop_strings = gr.Textbox(value="", label="stop strings (separate with |)")
                    with gr.Row():
                        sample_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                        next_btn = gr.Button("Next-token probabilities")
                with gr.Column(scale=2):
                    output = gr.Textbox(lines=16, label="output", elem_id="output")
                    next_table = gr.Dataframe(headers=["token", "id", "probability"], interactive=False)

        # -- wiring ------------------------------------------------------------------------------
        settings = [fields[n] for n in MODEL_FIELDS + TRAIN_FIELDS]
        live = [owner, run_id, status, progress, loss_plot, dyn_plot, sample_box, run_pick]
        data_inputs = [source, files, pasted, tokenizer, fields["block_size"]]

        source.change(lambda s: (gr.update(visible=s == SOURCES[1]), gr.update(visible=s == SOURCES[2])),
                      source, [files, pasted], api_visibility="private")
        gr.on([source.change, files.change, pasted.blur, tokenizer.change, fields["block_size"].change],
              lab.preview, data_inputs, [data_status, stats, head, shift, vocab], api_name="preview")
        preset.change(lab.preset_values, preset, settings + [tokenizer], api_visibility="private")
        gr.on([c.change for c in settings + [tokenizer, vocab]], lab.size_summary, [tokenizer, vocab] + settings,
              size, api_visibility="private")

        train_event = start_btn.click(named(lab.start, *MODEL_FIELDS, *TRAIN_FIELDS), [owner, source, files, pasted, tokenizer, start_from] + settings,
                                      live, api_name="train", concurrency_limit=None, show_progress="hidden")
        stop_btn.click(lab.stop, [owner, run_id], status, api_name="stop")
        resume_event = resume_btn.click(lab.resume, [owner, run_id, fields["max_steps"], fields["max_time"]], live,
                         api_name="resume", concurrency_limit=None, show_progress="hidden")
        watch_event = run_pick.input(lab.attach, [owner, run_pick], live, api_name="watch", concurrency_limit=None,
                       show_progress="hidden")
        for toggle in (log_scale, x_axis):
            toggle.change(lab.set_plot_prefs, [owner, run_id, log_scale, x_axis], loss_plot, api_visibility="private")
        download_btn.click(lab.downloads, [owner, run_id], download_files, api_name="downloads")
        compare_btn.click(lab.compare, [owner, run_id, cmp_prompt, cmp_seed, cmp_temp, cmp_len],
                          [untrained_box, trained_box], api_name="compare", concurrency_limit=2)
        sweep_btn.click(lab.sweep, [owner, run_id, cmp_prompt, cmp_seed, cmp_len], sweep_table, api_name="sweep",
                        concurrency_limit=2)
        runs_btn.click(lab.run_vs_run, [owner, run_a, run_b, cmp_prompt, cmp_seed, cmp_len],
                       [runs_plot, text_a, text_b], api_name="compare_runs", concurrency_limit=2)

        decoding = [strategy, temperature, top_k, top_p, min_p, rep, ngram, beams, length_penalty, max_new, seed,
                    stop_strings]
        strategy.change(lambda s: [gr.update(visible=s == "beam")] + [gr.update(interactive=s == "sample")] * 4,
                        strategy, [beam_row, temperature, top_k, top_p, min_p], api_visibility="private")
        which.change(lambda w: gr.update(visible=w == CHECKPOINTS[2]), which, upload_ckpt, api_visibility="private")
        sample_btn.click(named(lab.sample, *DECODING), [owner, sample_run, which, upload_ckpt, prompt] + decoding, output,
                         api_name="sample", concurrency_limit=2)
        next_btn.click(named(lab.next_tokens, *DECODING), [owner, sample_run, which, upload_ckpt, prompt] + decoding, next_table,
                       api_name="next_tokens", concurrency_limit=2)

        # Keep every run picker in step with the live view's list of runs.
        def sync_pickers(r, o):
            choices = lab._run_choices(lab.owner_or_new(o))
            return [gr.update(choices=choices, value=r)] * 2 + [gr.update(choices=choices)]

        pickers = dict(fn=sync_pickers, inputs=[run_pick, owner], outputs=[sample_run, run_a, run_b],
                       api_visibility="private")
        run_pick.change(**pickers)

        load_event = demo.load(lab.attach, [owner], live, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")
        for event in (train_event, resume_event, watch_event, load_event):
            event.then(**pickers)  # a run's final status shows in every run picker
        demo.load(lab.preview, data_inputs, [data_status, stats, head, shift, vocab], api_visibility="private")
        demo.load(lab.size_summary, [tokenizer, vocab] + settings, size, api_visibility="private")
    return demo


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="GPT Lab: train a small GPT in your browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also create a public Gradio share link")
    p.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password")
    p.add_argument("--runs-dir", default=os.environ.get("GPTLAB_RUNS_DIR", "runs"), help="where runs are kept")
    p.add_argument("--max-concurrent-trainings", type=int, default=1, help="trainings at once (default 1)")
    p.add_argument("--max-params", type=int, default=Limits.max_params, help="largest model, in parameters")
    p.add_argument("--max-upload-mb", type=float, default=Limits.max_upload_mb, help="largest upload, in MB")
    args = p.parse_args(argv)
    if args.auth is not None and ":" not in args.auth:
        p.error("--auth takes USER:PASS, e.g. --auth teacher:s3cret")
    if args.max_concurrent_trainings < 1 or args.max_params < 1 or args.max_upload_mb <= 0:
        p.error("--max-concurrent-trainings, --max-params and --max-upload-mb must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if os.environ.get("SPACE_ID") and Path("/data").is_dir() and args.runs_dir == "runs":
        args.runs_dir = "/data/runs"  # Spaces' persistent storage, when the Space has it
    lab = Lab(args.runs_dir, max_concurrent=args.max_concurrent_trainings,
              limits=Limits(max_params=args.max_params, max_upload_mb=args.max_upload_mb))
    demo = build_demo(lab)
    host = "0.0.0.0" if os.environ.get("SPACE_ID") else args.host
    demo.queue(max_size=64).launch(server_name=host, server_port=args.port, share=args.share,
                                   auth=tuple(args.auth.split(":", 1)) if args.auth else None,
                                   max_file_size=int(args.max_upload_mb * 2**20), ssr_mode=False)


if __name__ == "__main__":
    main()
