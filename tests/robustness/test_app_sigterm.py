"""SIGTERM to the app's process (what a Space restart sends): the run in training saves last/ and is
marked stopped, so it resumes after the restart."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gptlab.checkpoint import load_checkpoint
from tests.forms import PASTE, SCRATCH, hyper

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_stops_the_training_run_and_saves_its_last_checkpoint(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1"}
    runs = tmp_path / "runs"
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and app.poll() is None, "the app did not start"
            time.sleep(0.3)
        from gradio_client import Client

        client = Client(url, verbose=False)
        job = client.submit(owner="", source=PASTE, files=None, pasted="to be or not to be, that is it. " * 80,
                            tokenizer="char", start_from=SCRATCH, **hyper(max_steps=100_000, eval_interval=100_000),
                            api_name="/train")
        deadline = time.monotonic() + 120  # a loaded machine can take a while to prepare the run
        while not list(runs.glob("*/metrics.jsonl")) or len(next(runs.glob("*/metrics.jsonl")).read_text().splitlines()) < 5:
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if app.poll() is None:
            app.kill()
    (status_file,) = runs.glob("*/status.json")
    status = json.loads(status_file.read_text())
    assert status["status"] == "stopped"
    last = load_checkpoint(status_file.parent / "last")
    assert last.step == status["step"] > 0 and last.resumable
