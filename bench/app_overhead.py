"""Training throughput through the app's background worker, with the live view being watched,
against the CLI on the same settings.

    python bench/app_overhead.py [--steps 400] [--preset char-cpu] [--repeats 2]

Both paths train the same model on the same text for the same number of steps; throughput is the
run's tokens divided by its training wall time (from its own done event), so start-up is left out
of both. The app path consumes the /train handler's stream exactly as a browser tab would: a loss
plot and a dynamics plot are drawn for every update.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
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


def cli_run(data: str, preset: str, steps: int, out: Path) -> float:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["train", "--data", data, "--preset", preset, "--max-steps", str(steps), "--out", str(out),
                         "--device", "cpu"])
    assert code == 0, "the CLI run failed"
    return done_rate(out)


def app_run(data: str, preset: str, steps: int, runs_dir: Path) -> tuple[float, int]:
    sys.path.insert(0, str(ROOT))
    import app  # noqa: F401  (the app's process settings: one malloc arena)
    from gptlab.service import SOURCES, START_FROM, Lab

    lab = Lab(runs_dir)
    settings = {**Lab.preset_settings(preset), "max_steps": steps}
    updates = 0
    owner = run_id = None
    for view in lab.start(owner="", source=SOURCES[1], files=[data], pasted="", tokenizer=settings["tokenizer"],
                          start_from=START_FROM[0], settings=settings):
        owner, run_id = view.owner, view.run_id
        updates += 1
    return done_rate(lab.registry.folder(owner, run_id)), updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(TINYSHAKESPEARE))
    parser.add_argument("--preset", default="char-cpu")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each, best kept")
    parser.add_argument("--only", choices=["cli", "app"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.only:  # one measurement, in a fresh process, printed for the parent
        with tempfile.TemporaryDirectory() as tmp:
            if args.only == "cli":
                print(cli_run(args.data, args.preset, args.steps, Path(tmp) / "cli"), 0)
            else:
                print(*app_run(args.data, args.preset, args.steps, Path(tmp) / "runs"))
        return

    # Each path runs in a process of its own, as it would for a user: threads and OpenMP pools that
    # one path leaves behind must not slow the other.
    rates: dict[str, list[float]] = {"cli": [], "app": []}
    updates = 0
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
        for path in ("cli", "app"):
            out = subprocess.run([sys.executable, __file__, "--only", path, "--data", args.data, "--preset",
                                  args.preset, "--steps", str(args.steps)], check=True, capture_output=True,
                                 text=True).stdout.split()
            rates[path].append(float(out[-2]))
            updates = max(updates, int(out[-1]))
    cli_best, app_best = max(rates["cli"]), max(rates["app"])
    print_table(f"Training throughput, app worker (watched, {updates} live updates) vs CLI; preset {args.preset}, "
                f"{args.steps} steps, best of {args.repeats}, each run in a fresh process",
                ["path", "tokens/s", "vs CLI", "every run (tokens/s)"],
                [["CLI (python -m gptlab train)", cli_best, 1.0, " ".join(f"{r:,.0f}" for r in rates["cli"])],
                 ["app worker, watched", app_best, app_best / cli_best, " ".join(f"{r:,.0f}" for r in rates["app"])]])


if __name__ == "__main__":
    main()
