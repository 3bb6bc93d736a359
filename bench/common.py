"""Shared pieces of the benchmarks: the reference figures, a matmul peak, and table printing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINYSHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# karpathy/nanoGPT's documented CPU configuration, as measured on this 2-core machine (issue 5).
REFERENCE = dict(tokens_per_sec=17_000, val_loss=1.886, wall_s=120)
# nanoGPT's model has no biases (its train.py default) and the exact GELU (nn.GELU()).
REFERENCE_MODEL = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False, activation="gelu")
REFERENCE_TRAIN = dict(batch_size=12, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=2000,
                       beta2=0.99, eval_interval=250, eval_batches=20, grad_clip=1.0, weight_decay=0.1)


def matmul_peak_flops(n: int = 2048, repeats: int = 10, onednn: bool = False) -> float:
    """fp32 FLOP/s of an n×n matmul, best of `repeats`: the ceiling a training step can approach.

    The plain `a @ b` is what PyTorch does by default (MKL's sgemm). onednn=True times the kernel
    that gptlab's Linear layers use instead (see gptlab/kernels.py); where oneDNN is faster, it is
    the honest ceiling for our step."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    matmul = (lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")) if onednn else (lambda: a @ b)
    matmul()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[f"{c:,.3f}" if isinstance(c, float) and abs(c) < 100 else
                         f"{c:,.0f}" if isinstance(c, (int, float)) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
