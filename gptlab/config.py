"""Configuration: one dataclass per concern, validated on construction, serialisable with asdict.

No torch import here, so the UI and the CLI can validate settings and show parameter counts
without paying for torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from gptlab.fields import ConfigError, check as _check, check_bounds, check_types, from_form as _from_form  # noqa: F401
from gptlab.fields import known as _known, setting, shown, whole
from gptlab.presets import DEFAULT_PRESET, PRESETS, Preset  # noqa: F401  (the config's presets)


# Upper bounds on every size a user can type: generous (GPT-2 XL, or a long run on a GPU, fits
# well inside each), and finite, so a typo or a hostile form cannot ask for 1e22 of anything.
MAX_WIDTH = 65_536  # block_size, n_embd, n_head, batch_size, grad_accum_steps
MAX_LAYERS = 256
MAX_VOCAB = 1_048_576
# max_steps and every interval counted in steps; a billion, since a run meant to end by its time
# budget sets max_steps out of reach (no memory grows with it).
MAX_STEPS = 1_000_000_000
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; this is the range both signed and unsigned readers accept


class _Config:
    """What every config can do: be built from a dict (a checkpoint's JSON) or from a form's values,
    and be copied with changes; each is validated by its __post_init__."""
    _preset_part = ""  # the part of a Preset that holds this config's settings, if presets have one

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        return cls(**_known(cls, dict(values)))

    @classmethod
    def from_form(cls, values: dict[str, Any], **fixed):
        return _from_form(cls, values, **fixed)

    @classmethod
    def preset(cls, name: str, **overrides):
        """The named preset's settings for this config, with `overrides` on top."""
        _check(bool(cls._preset_part), f"{cls.__name__} has no presets; build it from its settings.")
        return cls.from_dict({**getattr(preset(name), cls._preset_part), **overrides})

    def replace(self, **changes):
        return replace(self, **_known(type(self), changes))


# --------------------------------------------------------------------------------------------
# Model


# The two GELUs differ by at most 0.0005; on CPU the exact one measured 2x faster forward and backward.
ACTIVATIONS = ("gelu_tanh", "gelu")
# gpt2: learned positions, LayerNorm, GELU, tied head. nanochat: transformers' NanoChatForCausalLM.
ARCHITECTURES = ("gpt2", "nanochat")


@dataclass(frozen=True)
class ModelConfig(_Config):
    _preset_part = "model"

    vocab_size: int = setting(65, "tokens the model knows (set from the tokenizer)",
                              bounds=(1, MAX_VOCAB))
    block_size: int = setting(256, "context length: how many tokens the model sees at once",
                              bounds=(1, MAX_WIDTH))
    n_layer: int = setting(6, "number of transformer blocks (depth)", bounds=(1, MAX_LAYERS))
    n_head: int = setting(6, "attention heads per block; must divide n_embd", bounds=(1, MAX_WIDTH))
    n_embd: int = setting(384, "width of the model (embedding size)", bounds=(1, MAX_WIDTH))
    dropout: float = setting(0.0, "fraction of activations zeroed in training; helps small data, slows learning")
    bias: bool = setting(True, "biases in Linear and LayerNorm layers, as GPT-2 has them (nanochat has none)")
    # GPT-2's tanh approximation; nanoGPT uses the exact one.
    activation: str = setting("gelu_tanh", "gelu_tanh (GPT-2's) or gelu (exact, as in nanoGPT; faster on CPU); "
                                           "nanochat always uses ReLU²", choices=ACTIVATIONS)
    # Last, so that the fields before it keep their places in forms and API parameter lists.
    architecture: str = setting("gpt2", "gpt2 (learned positions, LayerNorm, GELU, tied head) or nanochat (rotary, "
                                        "RMSNorm with QK-norm, ReLU², no biases, untied head, logit soft-cap)",
                                choices=ARCHITECTURES)

    def __post_init__(self):
        check_types(self)
        check_bounds(self)
        _check(self.n_embd % self.n_head == 0,
               f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
               f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}.")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}.")
        _check(self.activation in ACTIVATIONS,
               f"activation must be one of {', '.join(ACTIVATIONS)}, got {shown(self.activation)}.")
        _check(self.architecture in ARCHITECTURES,
               f"architecture must be one of {', '.join(ARCHITECTURES)}, got {shown(self.architecture)}.")
        _check(self.architecture != "nanochat" or self.head_size % 2 == 0,
               f"nanochat's rotary embeddings need an even head size, and n_embd / n_head is {self.head_size}; "
               f"try n_embd={self.n_head * (self.head_size + 1)}.")

    @property
    def biases(self) -> bool:
        """Whether the model has biases: bias is ignored by nanochat, which has none."""
        return self.bias and self.architecture == "gpt2"

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self, include_embeddings: bool = True) -> int:
        """Exact parameter count of gptlab.model.GPT (gpt2's lm_head shares wte's weight; nanochat's is
        its own, and counted as an embedding; nanochat's norms have no weights)."""
        C, b = self.n_embd, int(self.biases)
        nanochat = self.architecture == "nanochat"
        ln = 0 if nanochat else C + b * C
        block = (ln + 3 * C * C + b * 3 * C + C * C + b * C  # ln_1, attn.c_attn, attn.c_proj
                 + ln + 4 * C * C + b * 4 * C + 4 * C * C + b * C)  # ln_2, mlp.c_fc, mlp.c_proj
        total = self.n_layer * block + ln
        if include_embeddings:
            total += self.vocab_size * C + (self.vocab_size * C if nanochat else self.block_size * C)
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
OPTIMIZERS = ("adamw", "muon")


@dataclass(frozen=True)
class TrainConfig(_Config):
    _preset_part = "train"

    tokenizer: str = setting("char", "char (one token per character) or gpt2 (GPT-2's byte-pair encoding)",
                             choices=TOKENIZERS)
    val_fraction: float = setting(0.1, "share of the text held out at the end for validation")
    batch_size: int = setting(32, "windows per micro-batch", bounds=(1, MAX_WIDTH))
    grad_accum_steps: int = setting(1, "micro-batches summed into one optimiser step", bounds=(1, MAX_WIDTH))
    learning_rate: float = setting(1e-3, "peak learning rate after warmup")
    min_lr: float = setting(1e-4, "learning rate at the end of the decay")
    lr_schedule: str = setting("cosine", "after warmup: cosine or linear decay, wsd (flat, then a linear cool-down "
                                         "over the last 30%), or constant", choices=LR_SCHEDULES)
    # Not refused above max_steps: a preset's warmup with a short trial run (--max-steps 20) is the
    # common case, and the rate then just rises for the whole run, as lr_at documents.
    warmup_steps: int = setting(100, "steps of linear warmup from 0 to the peak learning rate (more than "
                                     "max_steps is allowed: the rate then rises all run)", bounds=(0, MAX_STEPS))
    weight_decay: float = setting(0.1, "AdamW weight decay on Linear weights (not biases, norms, embeddings)")
    beta1: float = setting(0.9, "AdamW's first-moment decay")
    beta2: float = setting(0.99, "AdamW's second-moment decay (0.99 suits small models, 0.95 large ones)")
    # The norm is reported even with clipping off.
    grad_clip: float = setting(1.0, "clip the gradient norm to this value (0: off)")
    max_steps: int = setting(2000, "stop after this many optimiser steps", bounds=(1, MAX_STEPS))
    max_time: float | None = setting(None, "stop after this many seconds of wall time (the schedule then follows "
                                           "the clock)", off=0)
    eval_interval: int = setting(250, "evaluate train and validation loss every this many steps",
                                 bounds=(1, MAX_STEPS))
    eval_batches: int = setting(20, "batches per evaluation (fixed windows, so evaluations compare)",
                                bounds=(1, 100_000))
    patience: int | None = setting(None, "stop early after this many evaluations without a better validation loss",
                                   off=0, bounds=(1, 1_000_000))
    sample_interval: int = setting(500, "print a sample every this many steps (0: never)", bounds=(0, MAX_STEPS))
    sample_tokens: int = setting(200, "length of those samples in tokens", bounds=(1, 100_000))
    snapshot_tokens: int = setting(48, "time machine: at every evaluation, continue two fixed prompts by this many "
                                       "tokens, greedy and sampled (0: off)", bounds=(0, 1000))
    checkpoint_interval: int = setting(0, "also keep a checkpoint every this many steps (0: only best and last)",
                                       bounds=(0, MAX_STEPS))
    log_interval: int = setting(1, "report the training loss every this many steps", bounds=(1, MAX_STEPS))
    seed: int = setting(1337, "random seed; the same seed and settings give the same run",
                        bounds=(0, MAX_SEED))
    device: str = setting("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    precision: str = setting("auto", "auto (bf16 on CUDA, else fp32), fp32, or bf16 (mixed precision; on a CPU only "
                                     "where it has native bf16)", choices=PRECISIONS)
    compile: bool = setting(False, "compile the model with torch.compile (pays off on long GPU runs)")
    fsdp: bool = setting(False, "under torchrun, shard the weights, gradients and optimiser state across the "
                                "processes (FSDP) instead of copying them to each (DDP); for models too big for one device")
    # Last, so the positions of the settings before them (the API's parameters) stay as they were.
    optimizer: str = setting("adamw", "adamw for every weight, or muon for the hidden matrices (Linear weights "
                                      "other than embeddings and the output head) with AdamW for the rest",
                             choices=OPTIMIZERS)
    muon_lr: float = setting(0.02, "Muon's peak learning rate (with --optimizer muon); the schedule scales it as it "
                                   "scales learning_rate")

    def __post_init__(self):
        check_types(self)
        _check(self.tokenizer in TOKENIZERS, f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {shown(self.tokenizer)}.")
        _check(0.0 < self.val_fraction < 1.0, f"val_fraction must be between 0 and 1 (e.g. 0.1), got {self.val_fraction}.")
        _check(self.patience is None or self.patience > 0,
               f"patience must be a positive number of evaluations, or None to turn early stopping off; got {shown(self.patience)}.")
        check_bounds(self)
        _check(self.learning_rate > 0, f"learning_rate must be above 0, got {self.learning_rate}.")
        _check(0 <= self.min_lr <= self.learning_rate,
               f"min_lr must be between 0 and learning_rate ({self.learning_rate}), got {self.min_lr}.")
        _check(self.lr_schedule in LR_SCHEDULES,
               f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {shown(self.lr_schedule)}.")
        _check(self.weight_decay >= 0, f"weight_decay must be 0 or more, got {self.weight_decay}.")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}.")
        _check(self.grad_clip >= 0, f"grad_clip must be 0 (off) or more, got {self.grad_clip}.")
        _check(self.max_time is None or self.max_time > 0, f"max_time must be a number of seconds above 0, got {self.max_time}.")
        _check(self.optimizer in OPTIMIZERS,
               f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {shown(self.optimizer)}.")
        _check(self.muon_lr > 0, f"muon_lr must be above 0 (Muon's usual rate is about 0.02), got {self.muon_lr}.")
        _check(not (self.fsdp and self.optimizer == "muon"),
               "optimizer muon does not work with fsdp (Muon needs each whole matrix, FSDP shards them); "
               "drop fsdp (DDP copies the weights) or use optimizer adamw.")
        _check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {shown(self.precision)}.")
        _check(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
               f"device must be auto, cpu, cuda, cuda:N or mps; got {shown(self.device)}.")

    def lr_at(self, step: int, time_fraction: float = 0.0) -> float:
        """Learning rate at `step`: linear warmup, then the chosen decay to min_lr. With a wall-time
        budget the decay follows whichever is further along, the steps or the clock. A warmup longer
        than the run never reaches the peak: the rate rises to learning_rate * max_steps /
        (warmup_steps + 1) at the last step, and there is no decay."""
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
GENERATION_PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class SampleConfig(_Config):
    strategy: str = setting("sample", "greedy (always the likeliest token), sample (draw from the "
                                      "distribution) or beam (beam search)", label="decoding", choices=STRATEGIES)
    max_new_tokens: int = setting(200, "how many tokens to generate at most", label="max new tokens",
                                 bounds=(1, 100_000))
    temperature: float = setting(0.8, "below 1 sharpens the distribution, above 1 flattens it",
                                 range=(0.05, 2.0), step=0.05)
    top_k: int | None = setting(None, "sample only from the k likeliest tokens", label="top-k", off=0,
                                  bounds=(1, MAX_VOCAB))
    top_p: float | None = setting(None, "sample only from the likeliest tokens that cover this probability",
                                  label="top-p", range=(0.05, 1.0), step=0.05, off=1.0)
    min_p: float | None = setting(None, "drop tokens less likely than this fraction of the likeliest one",
                                  label="min-p", range=(0.0, 0.5), step=0.01, off=0.0)
    repetition_penalty: float = setting(1.0, "above 1 makes tokens already in the text less likely",
                                        label="repetition penalty (1: off)", range=(1.0, 2.0), step=0.05)
    no_repeat_ngram_size: int = setting(0, "never repeat an n-gram of this many tokens",
                                        label="no-repeat n-gram size (0: off)", bounds=(0, MAX_WIDTH))
    num_beams: int = setting(1, "beams kept by beam search", label="beams", range=(2, 8), step=1, bounds=(1, 64))
    length_penalty: float = setting(1.0, "beam search: above 0 favours longer texts, below 0 shorter ones",
                                    range=(-2.0, 2.0), step=0.1)
    early_stopping: bool = setting(True, "beam search: stop once every beam has ended")
    stop_at_eot: bool = setting(True, "stop at the end-of-text token")
    stop: tuple[str, ...] = setting((), "stop when one of these texts appears", label="stop strings")
    seed: int | None = setting(None, "random seed; the same seed and settings give the same text",
                               bounds=(0, MAX_SEED))
    precision: str = setting("fp32", "fp32 (exact), or bf16: generate from a bfloat16 copy of the model, which "
                             "reads half the bytes per token (faster for large models on CPUs with bf16 "
                             "instructions; the tokens may differ from fp32's)", choices=GENERATION_PRECISIONS)

    def __post_init__(self):
        check_types(self)
        _check(self.precision in GENERATION_PRECISIONS, f"precision must be one of "
               f"{', '.join(GENERATION_PRECISIONS)}, got {shown(self.precision)}.")
        _check(self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}, got {shown(self.strategy)}.")
        _check(self.max_new_tokens > 0, f"max_new_tokens must be a positive whole number, got {shown(self.max_new_tokens)}.")
        if self.strategy == "sample":
            _check(self.temperature > 0, f"temperature must be above 0 for sampling (use strategy 'greedy' for "
                                         f"temperature 0), got {self.temperature}.")
        _check(self.top_k is None or self.top_k > 0,
               f"top_k must be a positive whole number or None (off), got {shown(self.top_k)}.")
        _check(self.top_p is None or 0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1] or None (off), got {self.top_p}.")
        _check(self.min_p is None or 0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1] or None (off), got {self.min_p}.")
        _check(self.repetition_penalty > 0,
               f"repetition_penalty must be above 0 (1.0 is off; above 1 discourages repeats), got {self.repetition_penalty}.")
        _check(self.no_repeat_ngram_size >= 0,
               f"no_repeat_ngram_size must be 0 (off) or a positive whole number, got {shown(self.no_repeat_ngram_size)}.")
        _check(self.num_beams >= 1, f"num_beams must be 1 or more, got {shown(self.num_beams)}.")
        check_bounds(self)
        _check(self.strategy == "beam" or self.num_beams == 1,
               f"num_beams={self.num_beams} needs strategy 'beam'; beam search is not combined with sampling.")
        _check(self.strategy != "beam" or self.num_beams >= 2, "beam search needs num_beams of 2 or more.")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))  # one stop string, not one per character
        _check(isinstance(self.stop, (tuple, list)) and all(isinstance(s, str) and s for s in self.stop),
               f"stop must be a list of non-empty texts, got {self.stop!r:.80}.")
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def from_form(cls, values: dict[str, Any], **fixed) -> "SampleConfig":
        """Settings from a decoding form. The form keeps every control's value whichever strategy is
        chosen, so the ones the strategy does not use are dropped here; stop strings arrive as one
        text separated by "|"."""
        values = dict(values)
        strategy = values.get("strategy", fixed.get("strategy", "sample"))
        if strategy != "sample":
            for name in ("top_k", "top_p", "min_p"):
                values.pop(name, None)
        if strategy != "beam":
            values.pop("num_beams", None)
        if isinstance(values.get("stop"), str):
            values["stop"] = tuple(s for s in values["stop"].split("|") if s)
        if values.get("seed") == "":
            values["seed"] = None
        return _from_form(cls, values, **fixed)


# The form fields of the app and the API, in the order the API has always taken them.
MODEL_FORM = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "activation", "architecture")
TRAIN_FORM = ("batch_size", "grad_accum_steps", "learning_rate", "min_lr", "lr_schedule", "warmup_steps",
              "weight_decay", "beta1", "beta2", "grad_clip", "max_steps", "max_time", "eval_interval",
              "eval_batches", "patience", "sample_interval", "seed", "precision", "snapshot_tokens",
              "optimizer", "muon_lr")
SAMPLE_FORM = ("strategy", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram_size",
               "num_beams", "length_penalty", "max_new_tokens", "seed", "stop")


def field_info(cls, name: str):
    """A config field, with its help, label, choices and range in `.metadata`."""
    found = next((f for f in fields(cls) if f.name == name), None)
    _check(found is not None, f"{cls.__name__} has no setting {name!r}.")
    return found


# One line each, shared by the CLI's --help and the app's labels (read off the fields above).
FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for cls in (ModelConfig, TrainConfig)
                              for f in fields(cls) if f.name != "vocab_size"}


def preset(name: str) -> Preset:
    _check(name in PRESETS, f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]


GPT2_VOCAB_SIZE = 50257
# Before the text is read, a char model's vocabulary is unknown. A byte's worth of characters covers
# most text, and errs on the large side where a size is checked against a limit.
CHAR_VOCAB_GUESS = 256


def vocab_size_for(tokenizer: str, known: int | None = None) -> int:
    """The vocabulary to size a model with: GPT-2's, or a char vocabulary once the text is known."""
    if tokenizer == "gpt2":
        return GPT2_VOCAB_SIZE
    if known is None or (whole(known) and known == 0):
        return CHAR_VOCAB_GUESS
    _check(whole(known) and 1 <= known <= MAX_VOCAB,
           f"vocab_size must be a whole number between 1 and {MAX_VOCAB:,}, got {shown(known)}.")
    return int(known)


def to_dict(config) -> dict[str, Any]:
    values = asdict(config)
    if "stop" in values:
        values["stop"] = list(values["stop"])
    return values
