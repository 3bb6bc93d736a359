"""Training-step throughput at fixed configurations, nanoGPT's CPU configuration among them.

    python bench/train_throughput.py [--steps 60] [--data ../shared/data/tinyshakespeare.txt]

Each row times the trainer's real optimiser step (batch sampling, forward, backward, clipping,
AdamW) after a warm-up, and reports tokens/s, the model's FLOP/s and that as a fraction of two fp32
matmul peaks measured in the same process: PyTorch's plain matmul, and the oneDNN kernel that our
Linear layers use (twice the plain one on AMD processors, where MKL runs AVX2 code). The reference
configuration is also timed with our Linear layers on MKL, to show what the kernel choice is worth.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import REFERENCE, REFERENCE_MODEL, REFERENCE_TRAIN, TINYSHAKESPEARE, matmul_peak_flops, print_table
from gptlab import kernels
from gptlab.config import ModelConfig, TrainConfig
from gptlab.data import TokenDataset, read_text_file, tokenize_corpus
from gptlab.model import GPT
from gptlab.trainer import Trainer


def step_rate(model_config: ModelConfig, train_config: TrainConfig, ids, steps: int, warmup: int = 10) -> float:
    data = TokenDataset(ids, model_config.block_size, train_config.val_fraction)
    trainer = Trainer(GPT(model_config), train_config, data, device=torch.device("cpu"))
    trainer.model.train()
    for _ in range(warmup):
        trainer._train_step()
    # Best of several chunks of steps, as the matmul peak is the best of several matmuls: on a shared
    # machine both then measure what the hardware does when left alone.
    best = 0.0
    for _ in range(max(1, steps // 10)):
        start, tokens = time.perf_counter(), 0
        for _ in range(10):
            tokens += trainer._train_step()[3]
        best = max(best, tokens / (time.perf_counter() - start))
    return best


def peaks() -> tuple[float, float]:
    return matmul_peak_flops(), matmul_peak_flops(onednn=True) if kernels.ONEDNN_LINEAR else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(TINYSHAKESPEARE))
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    tokenizer, ids = tokenize_corpus([read_text_file(args.data)], "char")
    reference = (REFERENCE_MODEL, REFERENCE_TRAIN)
    configs = {
        "nanoGPT CPU reference (4x4x128, ctx 64, batch 12)": (*reference, True),
        "  the same, Linear layers on MKL (GPTLAB_ONEDNN=0)": (*reference, False),
        "char-cpu preset": (ModelConfig.preset("char-cpu").__dict__, TrainConfig.preset("char-cpu").__dict__, True),
        "tiny preset": (ModelConfig.preset("tiny").__dict__, TrainConfig.preset("tiny").__dict__, True),
    }
    rows = []
    for name, (model_kw, train_kw, onednn) in configs.items():
        if onednn and not kernels.ONEDNN_LINEAR:
            name += " (no oneDNN in this build)"
        model_config = ModelConfig(**{**model_kw, "vocab_size": tokenizer.vocab_size})
        train_config = TrainConfig(**{**train_kw, "device": "cpu"})
        before = peaks()
        enabled, kernels.ONEDNN_LINEAR = kernels.ONEDNN_LINEAR, kernels.ONEDNN_LINEAR and onednn
        try:
            rate = step_rate(model_config, train_config, ids, args.steps)
        finally:
            kernels.ONEDNN_LINEAR = enabled
        plain, best = (max(a, b) for a, b in zip(before, peaks()))  # the higher of just before and just after
        flops = rate * model_config.flops_per_token()
        rows.append([name, rate, rate / REFERENCE["tokens_per_sec"], flops / 1e9, plain / 1e9, flops / plain,
                     best / 1e9 if best else "-", flops / best if best else "-"])
    print_table(f"Training throughput ({torch.get_num_threads()} threads, fp32, best 10-step chunk; reference "
                f"{REFERENCE['tokens_per_sec']:,} tokens/s). Peaks: best 2048x2048 fp32 matmul around each row, "
                "plain torch (a @ b) and through oneDNN as our Linear layers run it",
                ["configuration", "tokens/s", "vs reference", "GFLOP/s", "plain peak", "of plain peak",
                 "oneDNN peak", "of oneDNN peak"], rows)


if __name__ == "__main__":
    main()
