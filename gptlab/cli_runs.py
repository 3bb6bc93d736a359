"""`python -m gptlab runs` and `sweep`: the run history of a folder, and a sweep trained and tabled.

gptlab.cli parses the flags (a sweep takes every flag of train) and dispatches here."""

from __future__ import annotations

import sys
from pathlib import Path

from gptlab.config import DEFAULT_PRESET, ModelConfig, TrainConfig


def cmd_runs(args) -> int:
    from gptlab.experiments.history import HEADERS, read_runs, table, with_changes

    records = read_runs(args.dir)
    if not records:
        raise ValueError(f"There are no runs in {args.dir}; train one with `python -m gptlab train --out "
                         f"{args.dir}/NAME`, or point --dir at the folder that holds your runs.")
    against = next((r for r in records if r.name == args.against), None)
    if args.against and against is None:
        raise ValueError(f"There is no run {args.against!r} in {args.dir}; choose one of: "
                         f"{', '.join(r.name for r in records)}.")
    _print_table(HEADERS, table(with_changes(records, against)))
    return 0


def _print_table(headers, rows) -> None:
    rows = [list(headers)] + rows
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_sweep(args) -> int:
    from gptlab.cli import _overrides
    from gptlab.experiments.history import read_run
    from gptlab.experiments.settings import Settings
    from gptlab.experiments.sweep import RESULT_HEADERS, ended_badly, grid, parse_axis, results_table
    from gptlab.events import DoneEvent, EvalEvent
    from gptlab.training import TrainingRun

    base = Settings.of(args.preset or DEFAULT_PRESET, {**_overrides(args, ModelConfig), **_overrides(args, TrainConfig)})
    points = grid(base, [parse_axis(text) for text in args.set])  # every point checked before any run starts
    out = Path(args.out)
    taken = [p.folder_name for p in points if (out / p.folder_name).exists()]
    if taken:
        raise ValueError(f"{out} already holds runs of these names ({', '.join(taken)}); choose another --out.")
    records = []
    for i, point in enumerate(points, 1):
        print(f"[{i}/{len(points)}] {point.label}", file=sys.stderr)
        run = TrainingRun.new(point.settings.model, point.settings.train, out / point.folder_name, args.data)
        for event in run.events():
            if isinstance(event, EvalEvent):
                print(f"    step {event.step}: val loss {event.val_loss:.4f}", file=sys.stderr)
            elif isinstance(event, DoneEvent):
                print(f"    {event.status}: {event.reason}", file=sys.stderr)
        records.append(read_run(run.out_dir))
    _print_table(RESULT_HEADERS, results_table(records))
    for name, status, reason in ended_badly(records):
        print(f"{name} {status}: {reason}")
    return 0
