"""How good the model gets in a fixed wall-time budget: the number a user feels.

    python bench/train_quality.py [--data ../shared/data/tinyshakespeare.txt] [--budget 120]
                                  [--preset NAME] [--set n_layer=6 --set learning_rate=3e-3 ...]

With no --preset it measures the app's default preset (gptlab.presets.DEFAULT_PRESET).

The budget covers everything a user waits for: reading and tokenizing the text, building the
model, training, evaluations, checkpoints and the final evaluation. Afterwards (outside the budget)
the final weights are measured on the whole validation split, the last 10% of the text, in
non-overlapping windows of the model's context, and reported in nats and in bits per character
(nats / ln 2: with the character tokenizer one token is one character).
"""

from __future__ import annotations

import argparse
import ast
import math
import tempfile
import time

import torch

from common import REFERENCE, TINYSHAKESPEARE, matmul_peak_flops, print_table
from gptlab import kernels
from gptlab.config import ModelConfig, TrainConfig
from gptlab.presets import DEFAULT_PRESET
from gptlab.training import TrainingRun


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


@torch.no_grad()
def full_split_loss(model, dataset, split: str = "val", batch_size: int = 64) -> float:
    model.eval()
    total, n = 0.0, 0
    for x, y in dataset.eval_batches(split, batch_size):
        _, loss = model(x, y)
        total += loss.item() * x.size(0)
        n += x.size(0)
    return total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(TINYSHAKESPEARE))
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of wall time, everything included")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"default: the app's default, {DEFAULT_PRESET}")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a ModelConfig or TrainConfig field")
    args = parser.parse_args()

    overrides = parse_overrides(args.set)
    model_fields = set(ModelConfig.__dataclass_fields__)
    model_over = {k: v for k, v in overrides.items() if k in model_fields}
    train_over = {k: v for k, v in overrides.items() if k not in model_fields}

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run = TrainingRun.new(
            ModelConfig.preset(args.preset, **model_over),
            TrainConfig.preset(args.preset, **{"max_steps": 10**9, "device": "cpu", **train_over,
                                               "max_time": args.budget}),
            out, data_paths=[args.data])
        run.trainer.elapsed = time.perf_counter() - start  # preparing the data counts against the budget
        events = list(run.events())
        wall = time.perf_counter() - start
        done = events[-1]
        steps = [e for e in events if e.kind == "step"]
        evals = [e for e in events if e.kind == "eval"]
        val = full_split_loss(run.trainer.model, run.data.dataset)

    mc = run.model_config
    tokens_per_sec = done.tokens_seen / sum(1 for _ in steps) * len(steps) / max(1e-9, steps[-1].elapsed - steps[0].elapsed) \
        if len(steps) > 1 else 0.0
    steady = sorted(e.tokens_per_sec for e in steps[len(steps) // 10:])
    steady_rate = steady[len(steady) // 2] if steady else 0.0
    peak, onednn_peak = matmul_peak_flops(), matmul_peak_flops(onednn=True) if kernels.ONEDNN_LINEAR else None
    flops = steady_rate * mc.flops_per_token()
    print(f"preset {args.preset} {overrides or ''}: {mc.n_layer}x{mc.n_head}x{mc.n_embd}, context {mc.block_size}, "
          f"{mc.num_params() / 1e6:.2f}M parameters; {done.reason}")
    print_table(f"Quality at a fixed wall time ({args.budget:g} s budget; reference: nanoGPT's CPU config, "
                f"val loss {REFERENCE['val_loss']} in about {REFERENCE['wall_s']} s)",
                ["metric", "value"],
                [["wall time, everything included (s)", wall],
                 ["optimiser steps", done.step],
                 ["tokens seen", done.tokens_seen],
                 ["val loss, whole validation split (final weights)", val],
                 ["val loss, last in-run evaluation", evals[-1].val_loss],
                 [f"val bits per {'character' if run.train_config.tokenizer == 'char' else 'token'}", val / math.log(2)],
                 ["val loss vs reference 1.886", val / REFERENCE["val_loss"]],
                 ["val perplexity", math.exp(val)],
                 ["steady tokens/s (median)", steady_rate],
                 ["mean tokens/s over the run", tokens_per_sec],
                 ["model GFLOP/s (steady)", flops / 1e9],
                 ["fraction of plain fp32 matmul peak (torch a @ b)", flops / peak],
                 ["plain matmul peak GFLOP/s (this run)", peak / 1e9]]
                + ([["fraction of oneDNN fp32 matmul peak (our Linear's kernel)", flops / onednn_peak],
                    ["oneDNN matmul peak GFLOP/s (this run)", onednn_peak / 1e9]] if onednn_peak else []))


if __name__ == "__main__":
    main()
