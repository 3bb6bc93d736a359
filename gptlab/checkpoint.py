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
import zlib
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


# What sampling reads from a checkpoint, and so all that an upload unpacks: its trainer state, and
# anything else a zip may carry (pickles included), is never written to disk.
SAMPLING_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)  # RuntimeError: encrypted


_UNPACKED: dict[tuple, Path] = {}  # (uploads folder, zip path, size, mtime) -> the folder it unpacked to


def unpack_upload(archive: str | os.PathLike, root: str | os.PathLike, *, max_bytes: int, keep: int = 8) -> Path:
    """The checkpoint in an uploaded zip, unpacked into a folder under `root`. The same zip unpacks
    once, so repeated requests reuse the folder (and a cached model); `root` keeps the `keep` newest."""
    archive, root = Path(archive), Path(root)
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"{archive.name} is not a .zip file; upload the checkpoint zip from the Train tab.")
    stat = archive.stat()
    seen = (str(root.resolve()), str(archive.resolve()), stat.st_size, stat.st_mtime_ns)
    if seen in _UNPACKED and _UNPACKED[seen].is_dir():  # each sample from the same upload: no re-hashing
        return _UNPACKED[seen]
    digest = hashlib.sha256()
    with open(archive, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    target = root / digest.hexdigest()[:32]
    if not target.is_dir():
        _unpack_checkpoint(archive, target, max_bytes)
        uploads = sorted(filter(None, map(_unpacked_at, root.iterdir())), reverse=True)
        for _, old in uploads[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    if len(_UNPACKED) >= 64:
        _UNPACKED.pop(next(iter(_UNPACKED)))
    _UNPACKED[seen] = target
    return target


def _unpacked_at(path: Path) -> tuple[float, Path] | None:
    """(when, folder) of an unpacked upload; None for anything else, or a folder that another request's
    unpacking renamed or removed while this one listed them."""
    try:
        return (path.stat().st_mtime, path) if path.is_dir() and not path.name.endswith(".tmp") else None
    except OSError:
        return None


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or "\\" in name or ".." in parts or ":" in parts[0]


def _unpack_checkpoint(archive: Path, target: Path, max_bytes: int) -> None:
    """Write the checkpoint's own files (the shallowest config.json's folder) into `target`. The bytes
    really written are counted, whatever the zip's headers claim, and the zip is unpacked beside
    `target` and renamed into place, so a request that finds `target` finds it whole."""
    tmp = target.with_name(f"{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            unsafe = [m.filename for m in members if _unsafe(m.filename)]
            if unsafe:
                raise ValueError(f"{archive.name} contains an unsafe path ({unsafe[0]}); it was not unpacked.")
            configs = sorted((m.filename for m in members if m.filename.rsplit("/", 1)[-1] == CONFIG_FILE),
                             key=lambda name: name.count("/"))
            if not configs:
                raise ValueError(f"{archive.name} holds no config.json: it is not a gptlab checkpoint.")
            folder = configs[0][: -len(CONFIG_FILE)]
            wanted = {folder + name: name for name in SAMPLING_FILES}
            tmp.mkdir(parents=True)
            budget = max_bytes
            for m in members:
                if m.filename not in wanted:
                    continue
                with zf.open(m) as source, open(tmp / wanted[m.filename], "wb") as out:
                    while chunk := source.read(2**20):
                        budget -= len(chunk)
                        if budget < 0:
                            raise ValueError(f"{archive.name} unpacks to more than {max_bytes / 2**20:,.0f} MB, this "
                                             "server's limit for a checkpoint; it was not unpacked.")
                        out.write(chunk)
    except _DAMAGED as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{archive.name} is damaged or not a plain zip ({e}); download the checkpoint again.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, target)
    except OSError:  # another request unpacked the same zip first
        shutil.rmtree(tmp, ignore_errors=True)


class LoadedModels:
    """The last few checkpoints' models, loaded once and shared by the requests that sample from
    them. A checkpoint saved again (a newer `best`) has new weights, so the key holds their mtime."""

    def __init__(self, size: int = 4):
        self.size = size
        self._models: dict[tuple, tuple[GPT, Tokenizer]] = {}
        self._lock = threading.Lock()

    def get(self, folder: Path, *, max_params: int | None = None,
            name: str = "This checkpoint") -> tuple[GPT, Tokenizer]:
        """(model, tokenizer) in eval mode. The model's size is checked against `max_params` before
        anything is allocated; a bad folder's error is about `name`, so no server path reaches a user."""
        weights = folder / WEIGHTS_FILE
        key = (str(folder), weights.stat().st_mtime_ns if weights.is_file() else None)
        with self._lock:
            if key not in self._models:
                try:
                    checkpoint = load_checkpoint(folder)
                    params = checkpoint.model_config.num_params()
                    if max_params is not None and params > max_params:
                        raise CheckpointError(name, [f"its model has {params / 1e6:,.1f}M parameters; this server "
                                                     f"allows {max_params / 1e6:.3g}M"])
                    model = checkpoint.load_model().eval()
                except CheckpointError as e:
                    raise CheckpointError(name, e.problems) from None
                if len(self._models) >= self.size:
                    self._models.pop(next(iter(self._models)))
                self._models[key] = (model, checkpoint.tokenizer)
            return self._models[key]


def _public(value, key: str = ""):
    """`value` with server paths reduced to file names, for what leaves the server."""
    if isinstance(value, dict):
        return {k: _public(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v, key) for v in value]
    if isinstance(value, str) and (os.path.isabs(value) or key in ("paths", "sources", "init_from")):
        return Path(value).name or value
    return value


def zip_for_sharing(folder: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """The checkpoint as a zip to hand to someone else: the same files, with the server's paths in
    config.json (where the data and a fine-tune's base came from) reduced to file names."""
    folder, archive = Path(folder), Path(archive)
    tmp = archive.with_name(f".{archive.name}.{secrets.token_hex(4)}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            if path.name == CONFIG_FILE:
                meta = json.loads(path.read_text(encoding="utf-8"))
                meta["extra"] = _public(meta.get("extra") or {})
                zf.writestr(CONFIG_FILE, json.dumps(meta, indent=2))
            else:
                zf.write(path, path.name)
    os.replace(tmp, archive)
    return archive
