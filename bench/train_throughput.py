"""Training-step throughput at fixed configurations, nanoGPT's CPU configuration among them.

    python bench/train_throughput.py [--steps 60] [--data ../shared/data/tinyshakespeare.txt]

Each row times the trainer's real optimiser step (batch sampling, forward, backward, clipping,
AdamW) after a warm-up, and reports tokens/s, the model's FLOP/s and that as a fraction of an fp32
matmul peak measured in the same process.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import REFERENCE, REFERENCE_MODEL, REFERENCE_TRAIN, TINYSHAKESPEARE, matmul_peak_flops, print_table
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(TINYSHAKESPEARE))
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    tokenizer, ids = tokenize_corpus([read_text_file(args.data)], "char")
    configs = {
        "nanoGPT CPU reference (4x4x128, ctx 64, batch 12)": (REFERENCE_MODEL, REFERENCE_TRAIN),
        "char-cpu preset": (ModelConfig.preset("char-cpu").__dict__, TrainConfig.preset("char-cpu").__dict__),
        "tiny preset": (ModelConfig.preset("tiny").__dict__, TrainConfig.preset("tiny").__dict__),
    }
    rows, peaks = [], []
    for name, (model_kw, train_kw) in configs.items():
        model_config = ModelConfig(**{**model_kw, "vocab_size": tokenizer.vocab_size})
        train_config = TrainConfig(**{**train_kw, "device": "cpu"})
        before = matmul_peak_flops()
        rate = step_rate(model_config, train_config, ids, args.steps)
        peak = max(before, matmul_peak_flops())  # the higher of just before and just after
        peaks.append(peak)
        flops = rate * model_config.flops_per_token()
        rows.append([name, rate, rate / REFERENCE["tokens_per_sec"], flops / 1e9, peak / 1e9, flops / peak])
    print_table(f"Training throughput ({torch.get_num_threads()} threads, fp32, best 10-step chunk; reference "
                f"{REFERENCE['tokens_per_sec']:,} tokens/s; peak = best 2048x2048 fp32 matmul around each row)",
                ["configuration", "tokens/s", "vs reference", "GFLOP/s", "peak GFLOP/s", "of peak"], rows)


if __name__ == "__main__":
    main()
