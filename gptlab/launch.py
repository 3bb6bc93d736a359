"""A run on several processes, launched from Python: `torchrun ... -m gptlab train` as a subprocess.

The app trains a run on N GPUs this way (gptlab.runs). The job writes the run folder as any run does
(rank 0 alone writes), so whoever watches it reads metrics.jsonl as usual. Stopping sends SIGTERM to
torchrun, which passes it to every rank; the ranks agree to stop at the end of the step in progress,
rank 0 saves last/, and all exit (gptlab.distributed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import gptlab
from gptlab.config import ModelConfig, TrainConfig, to_dict
from gptlab.events import DoneEvent
from gptlab.runfolder import read_events

LOG_FILE = "torchrun.log"  # the job's own output (torchrun's and every rank's), beside metrics.jsonl
PID_FILE = "torchrun.pid"  # while the job runs: its torchrun's process id (see stop_orphan)
# torchrun gives the ranks this long after its SIGTERM before it kills them; a stop waits a little longer.
STOP_GRACE_S = 30.0


def train_command(out_dir: str | os.PathLike, processes: int, *, model_config: ModelConfig | None = None,
                  train_config: TrainConfig | None = None, data_paths: Sequence[str | os.PathLike] = (),
                  init_from: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
                  max_steps: int | None = None, max_time: float | None = None) -> list[str]:
    """The torchrun command line that trains `out_dir` on `processes` processes of this machine:
    a new run (every setting spelt out, so the job trains exactly these configs), a fine-tune
    (init_from) or a resume (resume: a checkpoint; max_steps and max_time, 0 for no time budget)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(processes)}",
               "-m", "gptlab", "train", "--out", str(out_dir)]
    if resume is not None:
        command += ["--resume", str(resume)]
        command += ["--max-steps", str(max_steps)] if max_steps is not None else []
        command += ["--max-time", str(max_time)] if max_time is not None else []
        return command
    if init_from is not None:
        command += ["--init-from", str(init_from)]
    if data_paths:
        command += ["--data", *map(str, data_paths)]
    for config in (model_config, train_config):
        values = to_dict(config)
        for f in fields(config):
            value = values[f.name]
            if f.name == "vocab_size" or value is None:  # the tokenizer sets the one; None is each field's default
                continue
            flag = "--" + f.name.replace("_", "-")
            command += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return command


class Job:
    """One torchrun job training one run folder."""

    def __init__(self, command: list[str], folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        package_root = str(Path(gptlab.__file__).resolve().parent.parent)  # so -m gptlab finds this gptlab
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        with open(self.folder / LOG_FILE, "ab") as log:
            # A session of its own: a Ctrl-C meant for the server reaches the job through stop(), once.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        (self.folder / PID_FILE).write_text(str(self.process.pid), encoding="utf-8")
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Ask every rank to stop after the step in progress (SIGTERM to torchrun, which passes it on)."""
        if self.process.poll() is None and not self._stopping.is_set():
            self._stopping.set()
            self.process.send_signal(signal.SIGTERM)

    def wait(self, stop: threading.Event, poll_s: float = 0.5) -> tuple[str, str]:
        """Train until the job ends, passing `stop` on when it is set: (status, reason) of the run,
        read from its log, or 'failed' with the job's last words when it ended without saying."""
        while True:
            try:
                code = self.process.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    self.stop()
                    try:
                        code = self.process.wait(timeout=STOP_GRACE_S + 10)
                    except subprocess.TimeoutExpired:
                        self.process.kill()
                        code = self.process.wait()
                    break
        (self.folder / PID_FILE).unlink(missing_ok=True)
        done = next((e for e in reversed(read_events(self.folder)) if isinstance(e, DoneEvent)), None)
        if done is not None:
            return done.status, done.reason
        if self._stopping.is_set():  # stopped while it was still starting: nothing trained, nothing lost
            return "stopped", "stopped by request before training began"
        return "failed", (f"the training processes ended (exit status {code}) before the run did: "
                          f"{self.last_words()}")

    def last_words(self, lines: int = 3) -> str:
        """The end of the job's own log: torchrun names the rank that failed, and how."""
        try:
            text = (self.folder / LOG_FILE).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "its log could not be read"
        kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(" ")]
        return " / ".join(kept[-lines:]) or "it wrote nothing"


def stop_orphan(folder: str | os.PathLike) -> bool:
    """Stop a job that outlived the server that started it (its session is its own, so a killed server
    leaves it training): SIGTERM, as a server's shutdown would send, so it saves last/ and ends. True
    if there was one. The process id is trusted only while it still names a torchrun."""
    path = Path(folder) / PID_FILE
    try:
        pid = int(path.read_text(encoding="utf-8"))
        alive = b"torch.distributed.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        alive = False
    path.unlink(missing_ok=True)
    if alive:
        os.kill(pid, signal.SIGTERM)
    return alive
