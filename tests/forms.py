"""What the app's forms send, for tests of the service and the API: every training setting of a
model that trains in a few seconds, and every decoding setting (greedy by default)."""

PASTE, UPLOAD, SHAKESPEARE = "Paste text", "Upload files", "Bundled Shakespeare"
SCRATCH = "Scratch (random weights)"


def hyper(**overrides) -> dict:
    """Every hyperparameter the /train endpoint takes, for a model that trains in a few seconds."""
    return {**dict(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0, bias=True, activation="gelu",
                   architecture="gpt2", batch_size=8, grad_accum_steps=1, learning_rate=3e-3, min_lr=3e-4, lr_schedule="cosine",
                   warmup_steps=2, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, max_steps=20, max_time=0,
                   eval_interval=10, eval_batches=2, patience=0, sample_interval=0, seed=1, precision="auto",
                   snapshot_tokens=48, optimizer="adamw", muon_lr=0.02),
            **overrides}


def tiny(**overrides) -> dict:
    """hyper() for a still smaller model and a four-step run: for tests that only need a checkpoint."""
    return hyper(**{**dict(n_embd=16, block_size=16, batch_size=4, max_steps=4, eval_interval=2, eval_batches=1,
                           warmup_steps=1), **overrides})


def decoding(**overrides) -> dict:
    """Every decoding setting the /sample endpoint takes; greedy, 24 new tokens."""
    return {**dict(strategy="greedy", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                   no_repeat_ngram_size=0, num_beams=4, length_penalty=1.0, max_new_tokens=24, seed=1, stop=""),
            **overrides}
