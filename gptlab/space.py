"""Where the app runs: on a Hugging Face Space or not, on which hardware, and whether runs survive a restart.

A Space sets SPACE_ID ("owner/name") in the app's environment, and SPACES_ZERO_GPU=true on ZeroGPU
hardware, which lends a GPU only to functions decorated for it (GPT Lab's training is not, so it
trains on the CPU there). A dedicated GPU shows as CUDA. Persistent storage, where a Space has it,
is mounted at /data; without it the disk is reset on every restart and sleep. No torch import
unless a Space asks (tests pass `cuda`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from gptlab.presets import DEFAULT_PRESET, PRESETS

STORAGE = Path("/data")
GPU_PRESET = "char-gpu"
_SPACE_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Space:
    """What the app needs to know about its host. `id` is None off Spaces."""
    id: str | None = None
    gpu: bool = False  # a CUDA device the training can use
    zero_gpu: bool = False
    storage: Path | None = None  # persistent storage, when mounted and writable

    @property
    def duplicate_url(self) -> str | None:
        return f"https://huggingface.co/spaces/{self.id}?duplicate=true" if self.id else None

    @property
    def presets(self) -> tuple[str, ...]:
        """The presets offered: on a Space without a GPU only those that train in minutes on its CPU."""
        if self.id and not self.gpu:
            return tuple(name for name, preset in PRESETS.items() if not preset.gpu)
        return tuple(PRESETS)

    @property
    def default_preset(self) -> str:
        return GPU_PRESET if self.id and self.gpu else DEFAULT_PRESET

    def runs_dir(self, asked: str, default: str = "runs") -> str:
        """Where runs go: the persistent storage when the Space has it and no other place was asked for."""
        return str(self.storage / "runs") if self.storage is not None and asked == default else asked

    def keeps_runs(self, runs_dir: str | os.PathLike) -> bool:
        """Whether runs in `runs_dir` survive a restart (off Spaces the disk is the user's own)."""
        if not self.id:
            return True
        return self.storage is not None and Path(runs_dir).resolve().is_relative_to(self.storage.resolve())


def detect(environ: Mapping[str, str] | None = None, *, storage: Path = STORAGE,
           cuda: Callable[[], bool] | None = None) -> Space:
    environ = os.environ if environ is None else environ
    space_id = environ.get("SPACE_ID", "").strip()
    if not _SPACE_ID.match(space_id):  # unset (not a Space), or nothing a Space would set
        return Space()
    zero_gpu = environ.get("SPACES_ZERO_GPU", "").lower() == "true"
    gpu = not zero_gpu and (cuda or _cuda_available)()
    writable = storage.is_dir() and os.access(storage, os.W_OK)
    return Space(id=space_id, gpu=gpu, zero_gpu=zero_gpu, storage=storage if writable else None)


def _cuda_available() -> bool:
    import torch  # only on a Space: the app imports torch anyway, the library's light modules need not

    return torch.cuda.is_available()


def banner_markdown(space: Space, runs_dir: str | os.PathLike) -> str:
    """What a visitor of a Space should know first: how to get their own copy, which presets fit this
    hardware, and whether runs outlive a restart. Empty off Spaces."""
    if not space.id:
        return ""
    lines = [f"**Your own copy**: [Duplicate this Space]({space.duplicate_url}) for a private copy on hardware "
             "you choose, where no one else's runs share its CPU or GPU."]
    fitting = ", ".join(space.presets)
    if space.gpu:
        lines.append(f"**Hardware**: a GPU, so every preset fits and the settings start from "
                     f"**{space.default_preset}**.")
    elif space.zero_gpu:
        lines.append("**Hardware**: ZeroGPU lends its GPU only to code written for it, and GPT Lab's training is not, "
                     f"so it trains on the CPU here: only the CPU presets are offered ({fitting}).")
    else:
        lines.append(f"**Hardware**: CPU only, so only the presets that train in minutes on it are offered "
                     f"({fitting}); a copy on a GPU offers the GPU presets too.")
    if space.keeps_runs(runs_dir):
        lines.append("**Runs are kept** in the Space's persistent storage: they survive restarts (a run cut off by "
                     "one resumes from its newest checkpoint).")
    else:
        where = ("this app keeps its runs outside the Space's persistent storage (its --runs-dir)" if space.storage
                 else "this Space has no persistent storage")
        lines.append(f"**Runs are temporary here**: {where}, so runs are lost when the Space restarts or sleeps "
                     "(after 48 hours without visitors). Download what you want to keep, or add persistent "
                     "storage in the Space's settings.")
    return "\n\n".join(lines)
