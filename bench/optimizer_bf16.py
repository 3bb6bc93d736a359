"""fp32 AdamW against fp32 Muon and bf16 AdamW at the default preset's shape, in one run.

    python bench/optimizer_bf16.py [--budget 60] [--steps 40] [--data ../shared/data/tinyshakespeare.txt]

Each row: the optimiser step's tokens/s (the best chunk of 10 steps after a warm-up; the rows take
turns chunk by chunk, so a neighbour's load falls on all of them alike), then a fresh run of the
char-cpu preset for `--budget` seconds of wall time (its schedule follows the clock; the evaluations
before the first step and after the last are inside the budget, as in any run with --max-time) and
the validation loss it ends with. The rows share the seed, data and every other setting; Muon uses
its default rate (muon_lr 0.02), not one tuned here. bf16 rows need a CPU with native bf16
(AVX512-BF16 or AMX); elsewhere they are skipped.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from common import TINYSHAKESPEARE, print_table
from gptlab.config import ModelConfig, TrainConfig
from gptlab.data import DEFAULT_CORPUS, TokenDataset, read_text_file, tokenize_corpus
from gptlab.events import DoneEvent, EvalEvent
from gptlab.model import GPT
from gptlab.trainer import Trainer, resolve_precision

ROWS = {"fp32 AdamW": dict(optimizer="adamw", precision="fp32"),
        "fp32 Muon": dict(optimizer="muon", precision="fp32"),
        "bf16 AdamW": dict(optimizer="adamw", precision="bf16"),
        "bf16 Muon": dict(optimizer="muon", precision="bf16")}


def step_rates(model_config: ModelConfig, configs: dict[str, TrainConfig], ids, steps: int) -> dict[str, float]:
    data = TokenDataset(ids, model_config.block_size, configs[next(iter(configs))].val_fraction)
    trainers = {name: Trainer(GPT(model_config), c, data, device=torch.device("cpu")) for name, c in configs.items()}
    best = dict.fromkeys(configs, 0.0)
    for trainer in trainers.values():
        trainer.model.train()
        for _ in range(5):
            trainer._train_step()
    for _ in range(max(1, steps // 10)):
        for name, trainer in trainers.items():
            start, tokens = time.perf_counter(), 0
            for _ in range(10):
                tokens += trainer._train_step()[3]
            best[name] = max(best[name], tokens / (time.perf_counter() - start))
    return best


def budget_run(model_config: ModelConfig, train_config: TrainConfig, ids) -> tuple[float, int]:
    """(the final validation loss, the optimiser steps taken) of a run within train_config.max_time."""
    torch.manual_seed(train_config.seed)
    data = TokenDataset(ids, model_config.block_size, train_config.val_fraction)
    trainer = Trainer(GPT(model_config), train_config, data, device=torch.device("cpu"), checkpoint_seconds=None)
    val, steps = float("nan"), 0
    for event in trainer.run():
        if isinstance(event, EvalEvent):
            val = event.val_loss
        elif isinstance(event, DoneEvent):
            steps = event.step
    return val, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = TINYSHAKESPEARE if TINYSHAKESPEARE.exists() else DEFAULT_CORPUS  # the bundled one
    parser.add_argument("--data", default=str(default))
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per row")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per row for tokens/s")
    args = parser.parse_args()

    start_load = os.getloadavg()[0]
    tokenizer, ids = tokenize_corpus([read_text_file(args.data)], "char")
    model_config = ModelConfig.preset("char-cpu", vocab_size=tokenizer.vocab_size)
    native = resolve_precision("bf16", torch.device("cpu")) == "bf16"
    configs = {}
    for name, settings in ROWS.items():
        if settings["precision"] == "bf16" and not native:
            print(f"{name}: skipped, this CPU has no native bf16")
            continue
        configs[name] = TrainConfig.preset("char-cpu", device="cpu", sample_interval=0, snapshot_tokens=0, **settings)
    rates = step_rates(model_config, configs, ids, args.steps)
    rows, base = [], None
    for name, train_config in configs.items():
        timed = train_config.replace(max_time=args.budget, max_steps=10**9, eval_interval=10**9)
        val, steps = budget_run(model_config, timed, ids)
        base = base or (rates[name], val)
        rows.append([name, rates[name], rates[name] / base[0], steps, val, val - base[1]])
    print_table(f"char-cpu shape on {os.cpu_count()} CPUs, {args.budget:g} s each, load average {start_load:.2f} "
                f"at the start and {os.getloadavg()[0]:.2f} at the end; data {args.data}",
                ["row", "step tokens/s", "× fp32 AdamW", f"steps in {args.budget:g} s", "val loss", "Δ val loss"],
                rows)


if __name__ == "__main__":
    main()
