"""Training throughput through the app's background worker, with the Train tab open and watched,
against the CLI on the same settings; the app must train at 0.95x the CLI's speed or better.

    python bench/app_overhead.py [--steps 400] [--preset char-cpu] [--repeats 2] [--snapshot-tokens 48]

What is measured: both paths train the same model on the same text for the same number of steps;
throughput is the run's tokens divided by its training wall time (from its own done event), so
start-up is left out of both. Each evaluation's time-machine snapshots (its fixed prompts continued
by --snapshot-tokens tokens, greedy and sampled) are part of training now, so both paths make them.

The app path builds the real UI (gptlab.ui.build_demo) and runs its /train handler in a worker
thread, as Gradio does, while training runs in the registry's background thread. Every live update
the handler yields goes through the Train tab's show() and then each output component's own
postprocess, as Gradio does before sending it: the loss and dynamics figures are drawn and encoded,
the status, progress and sample texts, and the time machine's slider range; whatever panels the
live view carries are consumed the way a browser tab's stream consumes them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

from common import ROOT, TINYSHAKESPEARE, print_table  # noqa: E402  (puts the project on sys.path)
from gptlab.cli import main as cli_main  # noqa: E402
from gptlab.events import DoneEvent  # noqa: E402
from gptlab.runfolder import read_events  # noqa: E402


def done_rate(run_dir: Path) -> float:
    done = [e for e in read_events(run_dir) if isinstance(e, DoneEvent)][-1]
    return done.tokens_seen / done.elapsed


def cli_run(data: str, preset: str, steps: int, snapshot_tokens: int, out: Path) -> float:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["train", "--data", data, "--preset", preset, "--max-steps", str(steps), "--out", str(out),
                         "--device", "cpu", "--snapshot-tokens", str(snapshot_tokens)])
    assert code == 0, "the CLI run failed"
    return done_rate(out)


def app_run(data: str, preset: str, steps: int, snapshot_tokens: int, runs_dir: Path) -> tuple[float, int]:
    sys.path.insert(0, str(ROOT))
    import app  # noqa: F401  (the app's process settings: one malloc arena)
    from gptlab.config import MODEL_FORM, TRAIN_FORM
    from gptlab.service import SOURCES, START_FROM, Lab
    from gptlab.ui import build_demo

    lab = Lab(runs_dir)
    train = next(f for f in build_demo(lab).fns.values() if f.api_name == "train")
    owner_box, run_box = train.outputs[:2]  # the session's owner and run id come first (TrainTab.live_outputs)
    settings = {**Lab.preset_settings(preset), "max_steps": steps, "snapshot_tokens": snapshot_tokens}
    inputs = dict(owner="", source=SOURCES[1], files=[data], pasted="", tokenizer=settings["tokenizer"],
                  start_from=START_FROM[0], **{name: settings[name] for name in (*MODEL_FORM, *TRAIN_FORM)})

    def browser_tab() -> tuple[int, str, str]:
        updates, owner, run_id = 0, None, None
        for update in train.fn(**inputs):
            for component, value in update.items():
                if isinstance(value, dict):  # gr.update(...): new properties, sent as they are
                    sent = value
                else:  # as Gradio does before sending: figures drawn and encoded, texts as they go out
                    sent = component.postprocess(value)
                    sent = sent.model_dump() if hasattr(sent, "model_dump") else sent
                json.dumps(sent, default=str)
            owner, run_id = update.get(owner_box, owner), update.get(run_box, run_id)
            updates += 1
        return updates, owner, run_id

    with ThreadPoolExecutor(1) as pool:  # Gradio runs handlers in worker threads, never in the main one
        updates, owner, run_id = pool.submit(browser_tab).result()
    return done_rate(lab.registry.folder(owner, run_id)), updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(TINYSHAKESPEARE))
    parser.add_argument("--preset", default="char-cpu")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each, best kept")
    parser.add_argument("--snapshot-tokens", type=int, default=48,
                        help="the time machine's tokens per prompt at each evaluation, in both paths (0: off)")
    parser.add_argument("--only", choices=["cli", "app"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.only:  # one measurement, in a fresh process, printed for the parent
        with tempfile.TemporaryDirectory() as tmp:
            if args.only == "cli":
                print(cli_run(args.data, args.preset, args.steps, args.snapshot_tokens, Path(tmp) / "cli"), 0)
            else:
                print(*app_run(args.data, args.preset, args.steps, args.snapshot_tokens, Path(tmp) / "runs"))
        return

    # Each path runs in a process of its own, as it would for a user: threads and OpenMP pools that
    # one path leaves behind must not slow the other.
    rates: dict[str, list[float]] = {"cli": [], "app": []}
    updates = 0
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
        for path in ("cli", "app"):
            out = subprocess.run([sys.executable, __file__, "--only", path, "--data", args.data, "--preset",
                                  args.preset, "--steps", str(args.steps), "--snapshot-tokens",
                                  str(args.snapshot_tokens)], check=True, capture_output=True,
                                 text=True).stdout.split()
            rates[path].append(float(out[-2]))
            updates = max(updates, int(out[-1]))
    cli_best, app_best = max(rates["cli"]), max(rates["app"])
    ratio = app_best / cli_best
    print_table(f"Training throughput, app worker (Train tab watched, {updates} live updates) vs CLI; preset "
                f"{args.preset}, {args.steps} steps, time machine {args.snapshot_tokens} tokens, best of "
                f"{args.repeats}, each run in a fresh process",
                ["path", "tokens/s", "vs CLI", "every run (tokens/s)"],
                [["CLI (python -m gptlab train)", cli_best, 1.0, " ".join(f"{r:,.0f}" for r in rates["cli"])],
                 ["app worker, Train tab watched", app_best, ratio, " ".join(f"{r:,.0f}" for r in rates["app"])]])
    print(f"\n{'PASS' if ratio >= 0.95 else 'FAIL'}: the app trains at {ratio:.3f}x the CLI's speed "
          "(the bar: >= 0.95x the CLI)")


if __name__ == "__main__":
    main()
