"""Checkpoints are folders: config.json, model.safetensors, tokenizer.json and, for runs that can be
resumed, trainer_state.pt (tensors and plain values only, loaded with weights_only=True).

Nothing in a checkpoint can execute code when it is loaded. A folder is written beside its final
place and renamed into it, so a crash leaves either the old checkpoint or the new one, whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from gptlab.config import ConfigError, ModelConfig, TrainConfig, to_dict
from gptlab.model import GPT
from gptlab.tokenizers import TOKENIZER_FILE, Tokenizer, TokenizerError, load_tokenizer

FORMAT = "gptlab-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
# A run folder's checkpoints: the untrained weights, the best validation loss so far, the latest.
INIT, BEST, LAST = "init", "best", "last"


class CheckpointError(ValueError):
    def __init__(self, folder, problems: list[str]):
        self.problems = problems
        super().__init__(f"{folder} is not a usable gptlab checkpoint:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class Checkpoint:
    path: Path
    model_config: ModelConfig
    tokenizer: Tokenizer
    train_config: TrainConfig | None = None
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resumable(self) -> bool:
        return (self.path / STATE_FILE).is_file()

    def load_model(self, device: str | torch.device = "cpu") -> GPT:
        model = GPT(self.model_config)
        try:
            missing, unexpected = load_model(model, str(self.path / WEIGHTS_FILE), strict=False, device=str(device))
        except (SafetensorError, RuntimeError, OSError) as e:
            raise CheckpointError(self.path, [f"{WEIGHTS_FILE} cannot be read as model weights: {e}"]) from None
        if missing or unexpected:
            problems = [f"{WEIGHTS_FILE} lacks {', '.join(missing)}"] if missing else []
            problems += [f"{WEIGHTS_FILE} has unexpected tensors {', '.join(unexpected)}"] if unexpected else []
            raise CheckpointError(self.path, problems)
        return model.to(device)

    def trainer_state(self, map_location="cpu") -> dict[str, Any]:
        path = self.path / STATE_FILE
        if not path.is_file():
            raise CheckpointError(self.path, [f"{STATE_FILE} is missing, so training cannot resume from here "
                                              "(use it to start a new run instead)"])
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # torch raises several types for a damaged or unsafe file
            raise CheckpointError(self.path, [f"{STATE_FILE} cannot be read safely: {e}"]) from None


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def save_checkpoint(folder, model: torch.nn.Module, model_config: ModelConfig, tokenizer: Tokenizer, *,
                    train_config: TrainConfig | None = None, trainer_state: dict | None = None, step: int = 0,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    unique = uuid.uuid4().hex[:12]  # two savers (threads or processes) never share a temporary folder
    tmp = folder.parent / f".{folder.name}.tmp-{unique}"
    old = folder.parent / f".{folder.name}.old-{unique}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        meta = {"format": FORMAT, "version": VERSION, "step": step, "model": to_dict(model_config),
                "train": to_dict(train_config) if train_config else None,
                "tokenizer": {"type": tokenizer.name}, "metrics": metrics or {}, "extra": extra or {}}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        save_model(getattr(model, "_orig_mod", model), str(tmp / WEIGHTS_FILE))  # unwrap torch.compile
        tokenizer.save(tmp)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE_FILE)
        _fsync_tree(tmp)
        if folder.exists():
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if old.exists():
                os.replace(old, folder)  # put the previous checkpoint back before `finally` cleans up
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def best_or_last(run_folder) -> Path | None:
    """The checkpoint that stands for a run: its best, else its last (a run stopped before its first
    evaluation has no best yet, and its last weights are then its best); None if it has neither."""
    run_folder = Path(run_folder)
    return next((run_folder / label for label in (BEST, LAST) if (run_folder / label / CONFIG_FILE).is_file()), None)


def load_checkpoint(folder) -> Checkpoint:
    """Read a checkpoint's metadata and tokenizer; weights load on demand (Checkpoint.load_model)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, ["the folder does not exist" if not folder.exists() else "it is a file, not a folder"])
    problems = [f"{name} is missing" for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
                if not (folder / name).is_file()]
    meta: dict = {}
    if (folder / CONFIG_FILE).is_file():
        try:
            meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                problems.append(f"{CONFIG_FILE} is not a gptlab checkpoint config (no \"format\": \"{FORMAT}\")")
                meta = {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problems.append(f"{CONFIG_FILE} is not valid JSON ({e})")
    model_config = train_config = tokenizer = None
    if meta:
        if not isinstance(meta.get("model"), dict):
            problems.append(f"{CONFIG_FILE} has no \"model\" section of ModelConfig settings")
        else:
            try:
                model_config = ModelConfig.from_dict(meta["model"])
            except (ConfigError, TypeError) as e:
                problems.append(f"{CONFIG_FILE} has a bad model config: {e}")
        if meta.get("train") is not None and not isinstance(meta["train"], dict):
            problems.append(f"{CONFIG_FILE} has a \"train\" section that is not a dict of TrainConfig settings")
        elif meta.get("train"):
            try:
                train_config = TrainConfig.from_dict(meta["train"])
            except (ConfigError, TypeError) as e:
                problems.append(f"{CONFIG_FILE} has a bad train config: {e}")
        step = meta.get("step", 0)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            problems.append(f"{CONFIG_FILE} has step {step!r}; it must be a whole number, 0 or more")
    if (folder / TOKENIZER_FILE).is_file():
        try:
            tokenizer = load_tokenizer(folder)
        except TokenizerError as e:
            problems.append(str(e))
    if tokenizer is not None and model_config is not None and tokenizer.vocab_size > model_config.vocab_size:
        problems.append(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {model_config.vocab_size}")
    if problems:
        raise CheckpointError(folder, problems)
    return Checkpoint(path=folder, model_config=model_config, tokenizer=tokenizer, train_config=train_config,
                      step=int(meta.get("step", 0)), metrics=meta.get("metrics") or {}, extra=meta.get("extra") or {})


def unpack_upload(archive: str | os.PathLike, root: str | os.PathLike, *, max_bytes: int, keep: int = 8) -> Path:
    """The checkpoint folder inside an uploaded zip, unpacked under `root` (see unpack_zip). The same
    zip unpacks once, so repeated requests reuse the folder (and a cached model); `root` keeps the
    `keep` newest uploads."""
    archive, root = Path(archive), Path(root)
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"{archive.name} is not a .zip file; upload the checkpoint zip from the Train tab.")
    digest = hashlib.sha256()
    with open(archive, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    target = root / digest.hexdigest()[:32]
    if not target.is_dir():
        unpack_zip(archive, target, max_bytes=max_bytes)
        uploads = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in uploads[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    configs = sorted(target.rglob(CONFIG_FILE), key=lambda p: len(p.parts))
    if not configs:
        shutil.rmtree(target, ignore_errors=True)
        raise ValueError(f"{archive.name} holds no config.json: it is not a gptlab checkpoint.")
    return configs[0].parent


def unpack_zip(archive: str | os.PathLike, target: str | os.PathLike, *, max_bytes: int) -> Path:
    """Unpack an uploaded zip into `target`, refusing entries that would land outside it and archives
    that unpack to more than `max_bytes`. It unpacks beside `target` and is renamed into place, so a
    request that finds `target` finds it whole. What it holds is data: JSON, safetensors and the
    tokenizer are all that load_checkpoint reads, and trainer state only with weights_only=True."""
    archive, target = Path(archive), Path(target)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        size = sum(m.file_size for m in members)
        if size > max_bytes:
            raise ValueError(f"{archive.name} unpacks to {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:g} MB.")
        for m in members:
            if m.filename.startswith(("/", "\\")) or ".." in Path(m.filename).parts:
                raise ValueError(f"{archive.name} contains an unsafe path ({m.filename}); it was not unpacked.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{secrets.token_hex(4)}.tmp")
        zf.extractall(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another request unpacked the same zip first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class LoadedModels:
    """The last few checkpoints' models, loaded once and shared by the requests that sample from
    them. A checkpoint saved again (a newer `best`) has new weights, so the key holds their mtime."""

    def __init__(self, size: int = 4):
        self.size = size
        self._models: dict[tuple, tuple[GPT, Tokenizer]] = {}
        self._lock = threading.Lock()

    def get(self, folder: Path, *, name: str = "This checkpoint") -> tuple[GPT, Tokenizer]:
        """(model, tokenizer); a bad folder's error is about `name`, so no server path reaches a user."""
        weights = folder / WEIGHTS_FILE
        key = (str(folder), weights.stat().st_mtime_ns if weights.is_file() else None)
        with self._lock:
            if key not in self._models:
                try:
                    checkpoint = load_checkpoint(folder)
                    model = checkpoint.load_model()
                except CheckpointError as e:
                    raise CheckpointError(name, e.problems) from None
                if len(self._models) >= self.size:
                    self._models.pop(next(iter(self._models)))
                self._models[key] = (model, checkpoint.tokenizer)
            return self._models[key]
