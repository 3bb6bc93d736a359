"""Named presets: model and training settings that fit a purpose; any field can be overridden
(`ModelConfig.preset("char-cpu", n_layer=6)`). Plain data, validated when a config is built from it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    description: str
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    gpu: bool = False  # too slow on a CPU to offer there (a CPU-only Space leaves it out)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "A toy model for tests and demos: trains in seconds, learns little.",
        model=dict(block_size=32, n_layer=2, n_head=2, n_embd=32),
        train=dict(batch_size=16, learning_rate=3e-3, min_lr=3e-4, warmup_steps=10, max_steps=200,
                   eval_interval=50, eval_batches=4, sample_interval=100, sample_tokens=60),
    ),
    "char-cpu": Preset(
        "The GPT-2 architecture at the default's size (the default until nanochat-cpu; AdamW).",
        # Tuned on the bundled corpus for a 120 s budget on 2 cores: a higher learning rate held flat,
        # then cooled down (wsd), beat nanoGPT's cosine at 1e-3; wider or deeper models did not pay
        # off. Batch 32 (2,048 tokens a step) beat 16, and 48, 64 or a context of 96-256 did no better.
        model=dict(block_size=64, n_layer=4, n_head=4, n_embd=128, activation="gelu"),
        train=dict(batch_size=32, learning_rate=6e-3, min_lr=6e-4, lr_schedule="wsd", warmup_steps=50,
                   max_steps=3000, weight_decay=0.1, beta2=0.99, eval_interval=250, eval_batches=10,
                   sample_interval=500),
    ),
    "nanochat-cpu": Preset(
        "The default: a character model sized for about two minutes on a laptop CPU, built as nanochat "
        "(rotary positions, RMSNorm, ReLU², untied head) and trained with Muon.",
        # On the bundled corpus in 120 s on 2 cores, nanochat with Muon beat char-cpu (GPT-2, AdamW) by
        # 0.14 nats; nanochat with AdamW alone gained about half of that (bench/train_quality.py). A
        # context of 128 at batch 16 (the same 2,048 tokens a step) beat 64 at batch 32 by about 0.03 on
        # average over five runs each (the preset, another seed or nearby rates); batch 8, 12 or 32 at 128, a context of 192 or 256, six layers, width 192,
        # and Muon or AdamW rates of 0.01 or 0.04 did no better within the runs' noise (about ±0.02).
        model=dict(block_size=128, n_layer=4, n_head=4, n_embd=128, bias=False, architecture="nanochat"),
        train=dict(batch_size=16, learning_rate=6e-3, min_lr=6e-4, lr_schedule="wsd", warmup_steps=50,
                   max_steps=3000, weight_decay=0.1, beta2=0.99, eval_interval=250, eval_batches=10,
                   sample_interval=500, optimizer="muon"),
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
        gpu=True,
    ),
    "gpt2": Preset(
        "GPT-2 small (124M) with the GPT-2 tokenizer; needs a GPU to train.",
        model=dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
        train=dict(tokenizer="gpt2", batch_size=8, grad_accum_steps=8, learning_rate=6e-4, min_lr=6e-5,
                   warmup_steps=200, max_steps=5000, beta2=0.95, eval_interval=250, eval_batches=20),
        gpu=True,
    ),
}
DEFAULT_PRESET = "nanochat-cpu"
