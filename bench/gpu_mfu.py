"""Model FLOPs utilisation (MFU) of a GPT-2 124M training step on a GPU, in bf16.

    python bench/gpu_mfu.py                          # GPT-2 small shape, context 1024, batch 16, torch.compile
    python bench/gpu_mfu.py --no-compile --batch-size 8
    python bench/gpu_mfu.py --peak-tflops 312        # a GPU the table below does not name
    python bench/gpu_mfu.py --device cpu --quick     # a smoke run of the script itself, no GPU needed

The step is the trainer's own: bf16 autocast, fused AdamW, SDPA attention (flash attention where the
GPU has it), gradient clipping, one host sync for the loss. The denominator is the device's published
dense bf16 peak. Random tokens stand in for text: a step costs the same whatever the tokens say. The
vocabulary is padded to 50,304 (a multiple of 64), as nanoGPT does for its MFU figure (37% on an A100).
"""

from __future__ import annotations

import argparse
import time

import torch

from common import print_table
from gptlab.config import ModelConfig, TrainConfig
from gptlab.data import TokenDataset
from gptlab.model import GPT
from gptlab.trainer import Trainer

# Published dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, matched against the device name in order.
PEAK_BF16_TFLOPS = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("A100", 312.0)]


def published_peak(device_name: str) -> float | None:
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in device_name), None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first; compilation happens here")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if the table lacks it")
    parser.add_argument("--quick", action="store_true", help="a tiny model and a few steps: checks the script runs")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device here. This benchmark needs a GPU; "
                         "--device cpu --quick only checks that the script runs.")
    model_config = ModelConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0)
    if args.quick:
        model_config = ModelConfig(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0)
        args.steps, args.warmup, args.batch_size = 3, 1, 4
    train_config = TrainConfig(batch_size=args.batch_size, learning_rate=6e-4, warmup_steps=0, max_steps=10**6,
                               precision="bf16" if device.type == "cuda" else "fp32",
                               compile=not args.no_compile and not args.quick, device=args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # only fp32 leftovers; the matmuls run in bf16
    ids = torch.randint(0, model_config.vocab_size, (max(10**6, 4 * args.batch_size * model_config.block_size),),
                        generator=torch.Generator().manual_seed(0))
    trainer = Trainer(GPT(model_config), train_config, TokenDataset(ids, model_config.block_size, 0.01), device=device)
    trainer.model.train()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        trainer._train_step()
    sync()
    start, tokens = time.perf_counter(), 0
    for _ in range(args.steps):
        tokens += trainer._train_step()[3]
    sync()
    seconds = time.perf_counter() - start

    rate = tokens / seconds
    flops = rate * model_config.flops_per_token()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else published_peak(name) if device.type == "cuda" else None
    rows = [["device", name], ["model", f"{model_config.n_layer}x{model_config.n_head}x{model_config.n_embd}, "
                                        f"context {model_config.block_size}, {model_config.num_params() / 1e6:.1f}M"],
            ["precision / torch.compile", f"{trainer.precision} / {train_config.compile}"],
            ["batch (sequences)", args.batch_size], ["step time (ms)", 1e3 * seconds / args.steps],
            ["tokens/s", rate], ["model TFLOP/s", flops / 1e12]]
    if device.type == "cuda":
        rows.append(["flash attention enabled", torch.backends.cuda.flash_sdp_enabled()])
        rows.append(["peak memory (GiB)", torch.cuda.max_memory_allocated(device) / 2**30])
    if peak:
        rows += [["published dense bf16 peak (TFLOP/s)", peak / 1e12], ["MFU", flops / peak]]
    elif device.type == "cuda":
        rows.append(["MFU", "unknown peak for this device: pass --peak-tflops"])
    print_table(f"Training-step utilisation, {args.steps} steps after {args.warmup} warm-up, torch {torch.__version__}",
                ["metric", "value"], rows)


if __name__ == "__main__":
    main()
