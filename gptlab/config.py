"""Configuration: one dataclass per concern, validated on construction, serialisable with asdict.

No torch import here, so the UI and the CLI can validate settings and show parameter counts
without paying for torch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


class ConfigError(ValueError):
    """A setting a user gave is out of range; the message says how to fix it."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_types(config) -> None:
    """Values from JSON files and forms arrive with any type: name the field rather than fail inside
    a comparison. A field's type is read off its default (None defaults are optional numbers)."""
    for f in fields(config):
        value, default = getattr(config, f.name), f.default
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "text"
        elif default is None or isinstance(default, (int, float)):
            ok = (default is None and value is None) or (isinstance(value, numbers.Real) and not isinstance(value, bool))
            kind = "a number" + (" or None" if default is None else "")
        else:
            continue
        _check(ok, f"{f.name} must be {kind}, got {value!r}.")


def _known(cls, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    _check(not unknown, f"Unknown {cls.__name__} setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(names))}.")
    return values


# --------------------------------------------------------------------------------------------
# Model


# The two GELUs differ by at most 0.0005; on CPU the exact one measured 2x faster forward and backward.
ACTIVATIONS = ("gelu_tanh", "gelu")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 65
    block_size: int = 256  # the context length in tokens
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2 has them
    activation: str = "gelu_tanh"  # GPT-2's tanh approximation; nanoGPT uses the exact "gelu"

    def __post_init__(self):
        _check_types(self)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                   f"{name} must be a positive whole number, got {value!r}.")
        _check(self.n_embd % self.n_head == 0,
               f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
               f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}.")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}.")
        _check(self.activation in ACTIVATIONS,
               f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        return cls(**_known(cls, dict(values)))

    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        return cls.from_dict({**preset(name).model, **overrides})

    def replace(self, **changes) -> "ModelConfig":
        return replace(self, **_known(ModelConfig, changes))

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self, include_embeddings: bool = True) -> int:
        """Exact parameter count of gptlab.model.GPT (the lm_head shares wte's weight)."""
        C, b = self.n_embd, int(self.bias)
        ln = C + b * C
        block = (ln + 3 * C * C + b * 3 * C + C * C + b * C  # ln_1, attn.c_attn, attn.c_proj
                 + ln + 4 * C * C + b * 4 * C + 4 * C * C + b * C)  # ln_2, mlp.c_fc, mlp.c_proj
        total = self.n_layer * block + ln
        if include_embeddings:
            total += self.vocab_size * C + self.block_size * C
        return total

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N for the weights plus the attention scores (PaLM, appendix B)."""
        return 6 * self.num_params(include_embeddings=False) + 6 * self.vocab_size * self.n_embd \
            + 12 * self.n_layer * self.n_embd * self.block_size

    def training_memory_bytes(self, batch_size: int, bytes_per_float: int = 4) -> int:
        """A rough estimate of training memory: weights, gradients, two AdamW moments and the
        activations autograd keeps (about 16 floats per channel per layer, plus the logits and
        their gradient). Good to a factor of about 1.5; use it to tell 'fits' from 'does not fit'."""
        weights_and_optimizer = 4 * self.num_params() * bytes_per_float
        tokens = batch_size * self.block_size
        activations = tokens * (self.n_layer * (16 * self.n_embd + 2 * self.n_head * self.block_size)
                                + 2 * self.vocab_size) * bytes_per_float
        return weights_and_optimizer + activations


# --------------------------------------------------------------------------------------------
# Training

LR_SCHEDULES = ("cosine", "linear", "wsd", "constant")
WSD_COOLDOWN = 0.3  # warmup-stable-decay: the last 30% of the run decays linearly to min_lr
TOKENIZERS = ("char", "gpt2")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    tokenizer: str = "char"
    val_fraction: float = 0.1
    batch_size: int = 32
    grad_accum_steps: int = 1
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off; the norm is reported either way
    max_steps: int = 2000
    max_time: float | None = None  # seconds of wall time; the schedule then follows the clock
    eval_interval: int = 250
    eval_batches: int = 20
    patience: int | None = None  # evaluations without a better val loss before stopping early
    sample_interval: int = 500  # steps between sample texts; 0 turns samples off
    sample_tokens: int = 200
    checkpoint_interval: int = 0  # steps between periodic checkpoints; 0: only best and last
    log_interval: int = 1
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere; bf16 also on CPUs that have it
    compile: bool = False

    def __post_init__(self):
        _check_types(self)
        _check(self.tokenizer in TOKENIZERS, f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}.")
        _check(0.0 < self.val_fraction < 1.0, f"val_fraction must be between 0 and 1 (e.g. 0.1), got {self.val_fraction}.")
        for name in ("batch_size", "grad_accum_steps", "max_steps", "eval_interval", "eval_batches",
                     "sample_tokens", "log_interval"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, f"{name} must be a positive whole number, got {value!r}.")
        for name in ("warmup_steps", "sample_interval", "checkpoint_interval"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 0, f"{name} must be 0 or more, got {value!r}.")
        _check(self.learning_rate > 0, f"learning_rate must be above 0, got {self.learning_rate}.")
        _check(0 <= self.min_lr <= self.learning_rate,
               f"min_lr must be between 0 and learning_rate ({self.learning_rate}), got {self.min_lr}.")
        _check(self.lr_schedule in LR_SCHEDULES,
               f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}.")
        _check(self.weight_decay >= 0, f"weight_decay must be 0 or more, got {self.weight_decay}.")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}.")
        _check(self.grad_clip >= 0, f"grad_clip must be 0 (off) or more, got {self.grad_clip}.")
        _check(self.max_time is None or self.max_time > 0, f"max_time must be a number of seconds above 0, got {self.max_time}.")
        _check(self.patience is None or (isinstance(self.patience, int) and self.patience > 0),
               f"patience must be a positive number of evaluations, or None to turn early stopping off; got {self.patience!r}.")
        _check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        _check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
               f"device must be auto, cpu, cuda, cuda:N or mps; got {self.device!r}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return cls(**_known(cls, dict(values)))

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        return cls.from_dict({**preset(name).train, **overrides})

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **_known(TrainConfig, changes))

    def lr_at(self, step: int, time_fraction: float = 0.0) -> float:
        """Learning rate at `step`: linear warmup, then the chosen decay to min_lr. With a wall-time
        budget the decay follows whichever is further along, the steps or the clock."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / (self.warmup_steps + 1)
        if self.lr_schedule == "constant":
            return self.learning_rate
        ratio = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        ratio = min(1.0, max(ratio, time_fraction))
        if self.lr_schedule == "linear":
            coeff = 1.0 - ratio
        elif self.lr_schedule == "wsd":
            coeff = min(1.0, (1.0 - ratio) / WSD_COOLDOWN)
        else:
            coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        return self.min_lr + coeff * (self.learning_rate - self.min_lr)


# --------------------------------------------------------------------------------------------
# Sampling

STRATEGIES = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class SampleConfig:
    strategy: str = "sample"
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = True
    stop_at_eot: bool = True
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        _check_types(self)
        _check(self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}.")
        _check(isinstance(self.max_new_tokens, int) and self.max_new_tokens > 0,
               f"max_new_tokens must be a positive whole number, got {self.max_new_tokens!r}.")
        if self.strategy == "sample":
            _check(self.temperature > 0, f"temperature must be above 0 for sampling (use strategy 'greedy' for "
                                         f"temperature 0), got {self.temperature}.")
        _check(self.top_k is None or (isinstance(self.top_k, int) and self.top_k > 0),
               f"top_k must be a positive whole number or None (off), got {self.top_k!r}.")
        _check(self.top_p is None or 0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1] or None (off), got {self.top_p}.")
        _check(self.min_p is None or 0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1] or None (off), got {self.min_p}.")
        _check(self.repetition_penalty > 0,
               f"repetition_penalty must be above 0 (1.0 is off; above 1 discourages repeats), got {self.repetition_penalty}.")
        _check(isinstance(self.no_repeat_ngram_size, int) and self.no_repeat_ngram_size >= 0,
               f"no_repeat_ngram_size must be 0 (off) or a positive whole number, got {self.no_repeat_ngram_size!r}.")
        _check(isinstance(self.num_beams, int) and self.num_beams >= 1, f"num_beams must be 1 or more, got {self.num_beams!r}.")
        _check(self.strategy == "beam" or self.num_beams == 1,
               f"num_beams={self.num_beams} needs strategy 'beam'; beam search is not combined with sampling.")
        _check(self.strategy != "beam" or self.num_beams >= 2, "beam search needs num_beams of 2 or more.")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))  # one stop string, not one per character
        _check(all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty text.")
        _check(self.seed is None or isinstance(self.seed, int), f"seed must be a whole number or None, got {self.seed!r}.")
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SampleConfig":
        return cls(**_known(cls, dict(values)))

    def replace(self, **changes) -> "SampleConfig":
        return replace(self, **_known(SampleConfig, changes))


# --------------------------------------------------------------------------------------------
# Presets: named model + training settings; any field can be overridden.


@dataclass(frozen=True)
class Preset:
    description: str
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "A toy model for tests and demos: trains in seconds, learns little.",
        model=dict(block_size=32, n_layer=2, n_head=2, n_embd=32),
        train=dict(batch_size=16, learning_rate=3e-3, min_lr=3e-4, warmup_steps=10, max_steps=200,
                   eval_interval=50, eval_batches=4, sample_interval=100, sample_tokens=60),
    ),
    "char-cpu": Preset(
        "The default: a character model sized for about two minutes on a laptop CPU.",
        # Tuned on the bundled corpus for a 120 s budget on 2 cores: a higher learning rate held flat,
        # then cooled down (wsd), beat nanoGPT's cosine at 1e-3; wider or deeper models did not pay
        # off. Batch 32 (2,048 tokens a step) beat 16, and 48, 64 or a context of 96-256 did no better.
        model=dict(block_size=64, n_layer=4, n_head=4, n_embd=128, activation="gelu"),
        train=dict(batch_size=32, learning_rate=6e-3, min_lr=6e-4, lr_schedule="wsd", warmup_steps=50,
                   max_steps=3000, weight_decay=0.1, beta2=0.99, eval_interval=250, eval_batches=10,
                   sample_interval=500),
    ),
    "nanogpt-cpu": Preset(
        "nanoGPT's documented CPU configuration for Shakespeare (a baseline to compare with).",
        model=dict(block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False, activation="gelu"),
        train=dict(batch_size=12, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=2000,
                   beta2=0.99, eval_interval=250, eval_batches=20, sample_interval=500),
    ),
    "char-gpu": Preset(
        "nanoGPT's Shakespeare character model: 10.7M parameters, for a GPU.",
        model=dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, activation="gelu"),
        train=dict(batch_size=64, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=5000,
                   beta2=0.99, eval_interval=250, eval_batches=20),
    ),
    "gpt2": Preset(
        "GPT-2 small (124M) with the GPT-2 tokenizer; needs a GPU to train.",
        model=dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
        train=dict(tokenizer="gpt2", batch_size=8, grad_accum_steps=8, learning_rate=6e-4, min_lr=6e-5,
                   warmup_steps=200, max_steps=5000, beta2=0.95, eval_interval=250, eval_batches=20),
    ),
}
DEFAULT_PRESET = "char-cpu"


# One line each, shared by the CLI's --help and the app's labels.
FIELD_HELP: dict[str, str] = {
    "block_size": "context length: how many tokens the model sees at once",
    "n_layer": "number of transformer blocks (depth)",
    "n_head": "attention heads per block; must divide n_embd",
    "n_embd": "width of the model (embedding size)",
    "dropout": "fraction of activations zeroed in training; helps small data, slows learning",
    "bias": "biases in Linear and LayerNorm layers, as GPT-2 has them",
    "activation": "gelu_tanh (GPT-2's) or gelu (exact, as in nanoGPT; faster on CPU)",
    "tokenizer": "char (one token per character) or gpt2 (GPT-2's byte-pair encoding)",
    "val_fraction": "share of the text held out at the end for validation",
    "batch_size": "windows per micro-batch",
    "grad_accum_steps": "micro-batches summed into one optimiser step",
    "learning_rate": "peak learning rate after warmup",
    "min_lr": "learning rate at the end of the decay",
    "lr_schedule": "after warmup: cosine or linear decay, wsd (flat, then a linear cool-down over the last 30%), or constant",
    "warmup_steps": "steps of linear warmup from 0 to the peak learning rate",
    "weight_decay": "AdamW weight decay on Linear weights (not biases, norms, embeddings)",
    "beta1": "AdamW's first-moment decay",
    "beta2": "AdamW's second-moment decay (0.99 suits small models, 0.95 large ones)",
    "grad_clip": "clip the gradient norm to this value (0: off)",
    "max_steps": "stop after this many optimiser steps",
    "max_time": "stop after this many seconds of wall time (the schedule then follows the clock)",
    "eval_interval": "evaluate train and validation loss every this many steps",
    "eval_batches": "batches per evaluation (fixed windows, so evaluations compare)",
    "patience": "stop early after this many evaluations without a better validation loss",
    "sample_interval": "print a sample every this many steps (0: never)",
    "sample_tokens": "length of those samples in tokens",
    "checkpoint_interval": "also keep a checkpoint every this many steps (0: only best and last)",
    "log_interval": "report the training loss every this many steps",
    "seed": "random seed; the same seed and settings give the same run",
    "device": "auto (CUDA, then MPS, then CPU), cpu, cuda or mps",
    "precision": "auto (bf16 on CUDA, else fp32), fp32, or bf16 (mixed precision; on a CPU only where it has native bf16)",
    "compile": "compile the model with torch.compile (pays off on long GPU runs)",
}


def preset(name: str) -> Preset:
    _check(name in PRESETS, f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]


def to_dict(config) -> dict[str, Any]:
    values = asdict(config)
    if "stop" in values:
        values["stop"] = list(values["stop"])
    return values
