"""Launching the app: flags, the login, and the Gradio settings that keep a public server safe."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

import gradio as gr

from gptlab.admission import TrainingCaps
from gptlab.service import Lab, Limits
from gptlab.space import detect as detect_space

log = logging.getLogger("gptlab.ui")

AUTH_ENV = "GPTLAB_AUTH"
FAILED_LOGIN_DELAY_S = 1.0  # a wrong password costs this long, one at a time: ~1 guess a second at most
QUEUE_SIZE = 64
MCP_PIN = "mcp==1.30.0"  # what gradio 6.31's mcp extra asks for (mcp>=1.21,<2); requirements-dev.txt pins it


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="GPT Lab: train a small GPT in your browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also create a public Gradio share link")
    p.add_argument("--mcp", action="store_true",
                   help="also serve list_runs, start_training, run_status, stop and sample as MCP tools at "
                        f"/gradio_api/mcp/ (needs `pip install {MCP_PIN}`; GRADIO_MCP_SERVER=true does the same)")
    p.add_argument("--auth", metavar="USER:PASS",
                   help=f"ask for this user name and password (better: set {AUTH_ENV}=USER:PASS, or use --auth-file, "
                        "which keep the password out of the process list)")
    p.add_argument("--auth-file", metavar="PATH", help="a file holding USER:PASS on its first line")
    p.add_argument("--runs-dir", default=os.environ.get("GPTLAB_RUNS_DIR", "runs"), help="where runs are kept")
    p.add_argument("--max-concurrent-trainings", type=int, default=1, help="trainings at once (default 1)")
    p.add_argument("--max-params", type=int, default=Limits.max_params, help="largest model, in parameters")
    p.add_argument("--max-upload-mb", type=float, default=Limits.max_upload_mb, help="largest upload, in MB")
    p.add_argument("--max-run-minutes", type=float, default=TrainingCaps.max_seconds / 60,
                   help="every run stops after this long (default %(default)g)")
    p.add_argument("--max-steps-per-run", type=int, default=TrainingCaps.max_steps,
                   help="the most optimiser steps a run may ask for (default %(default)s)")
    p.add_argument("--max-train-memory-mb", type=float, default=TrainingCaps.max_memory_mb,
                   help="largest training-memory estimate a run may have (default %(default)g)")
    args = p.parse_args(argv)
    try:
        args.credentials = credentials(args.auth, args.auth_file, os.environ.get(AUTH_ENV))
    except ValueError as e:
        p.error(str(e))
    numbers = ("max_concurrent_trainings", "max_params", "max_upload_mb", "max_run_minutes", "max_steps_per_run",
               "max_train_memory_mb")
    if not all(0 < getattr(args, n) < float("inf") for n in numbers):
        p.error(", ".join("--" + n.replace("_", "-") for n in numbers) + " must be positive numbers")
    return args


def credentials(flag: str | None, file: str | None, env: str | None) -> tuple[str, str] | None:
    """(user, password) from --auth, --auth-file or the environment, in that order; None: no login."""
    value, where = flag, "--auth"
    if value is None and file is not None:
        try:
            value, where = Path(file).read_text(encoding="utf-8").splitlines()[0].strip(), "--auth-file"
        except (OSError, IndexError, UnicodeDecodeError):
            raise ValueError(f"--auth-file {file} cannot be read as a USER:PASS line") from None
    if value is None and env:
        value, where = env, AUTH_ENV
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{where} takes USER:PASS, e.g. teacher:s3cret")
    return user, password


def throttled_login(user: str, password: str):
    """Gradio's auth callable: a constant-time check, and every wrong guess waits its turn, so
    guessing runs at about one password a second however many clients try."""
    lock = threading.Lock()

    def check(given_user: str, given_password: str) -> bool:
        ok = secrets.compare_digest(given_user.encode(), user.encode()) & \
            secrets.compare_digest(given_password.encode(), password.encode())
        if not ok:
            with lock:
                log.warning("a failed login for user %r", given_user[:64])
                time.sleep(FAILED_LOGIN_DELAY_S)
        return bool(ok)
    return check


def exposure_warnings(host: str, share: bool, has_login: bool) -> list[str]:
    warnings = []
    if share:
        warnings.append("--share makes a public link: anyone who has it can use this app and its CPU.")
    if host not in ("127.0.0.1", "localhost", "::1") and not share:
        warnings.append(f"listening on {host}: other machines on the network can reach this app.")
    if warnings and not has_login:
        warnings.append(f"Ask for a password with {AUTH_ENV}=USER:PASS (or --auth-file PATH).")
    return warnings


def launch(demo: gr.Blocks, lab: Lab, **kwargs):
    """Start the server with what every GPT Lab server needs: the queue, the upload cap, and
    downloads served from their own folder (wherever the runs directory is)."""
    lab.downloads_root.mkdir(parents=True, exist_ok=True)
    return demo.queue(max_size=QUEUE_SIZE).launch(
        max_file_size=int(lab.limits.max_upload_mb * 2**20), ssr_mode=False,
        allowed_paths=[str(lab.downloads_root.resolve())], **kwargs)


def mcp_problem(has_login: bool, switch: str = "--mcp") -> str | None:
    """Why the MCP server (asked for by `switch`) cannot work here, as the line to print; None when it can."""
    if has_login:
        # Gradio 6.31 mounts its MCP endpoint beside the login, not behind it: a caller without the
        # password could still list the tools and call those that skip the queue.
        return (f"{switch} cannot be combined with a login ({AUTH_ENV}, --auth or --auth-file): Gradio's MCP "
                "endpoint does not ask for the password. Drop one of them.")
    try:
        import mcp  # noqa: F401  (gradio's MCP server needs it; only asked for with --mcp)
    except ImportError:
        return f"{switch} needs the mcp package: pip install {MCP_PIN} (or pip install -r requirements-dev.txt)"
    return None


def main(argv=None) -> None:
    from gptlab.ui import build_demo

    args = parse_args(argv)
    # Gradio's own switch counts too: a Space cannot pass flags, but its settings can set variables.
    switch = "--mcp" if args.mcp else "GRADIO_MCP_SERVER=true"
    args.mcp = args.mcp or os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true"
    if args.mcp and (problem := mcp_problem(args.credentials is not None, switch)):
        print(problem, file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own requests, one line each
    space = detect_space()
    args.runs_dir = space.runs_dir(args.runs_dir)  # a Space's persistent storage, when it has one
    lab = Lab(args.runs_dir, max_concurrent=args.max_concurrent_trainings,
              limits=Limits(max_params=args.max_params, max_upload_mb=args.max_upload_mb),
              caps=TrainingCaps(max_steps=args.max_steps_per_run, max_seconds=args.max_run_minutes * 60,
                                max_memory_mb=args.max_train_memory_mb))
    host = "0.0.0.0" if space.id else args.host
    for warning in exposure_warnings(host, args.share, args.credentials is not None):
        log.warning(warning)
    demo = build_demo(lab, space)
    stop_runs_on_sigterm(lab, demo)
    launch(demo, lab, server_name=host, server_port=args.port, share=args.share, mcp_server=args.mcp,
           auth=throttled_login(*args.credentials) if args.credentials else None)


def stop_runs_on_sigterm(lab: Lab, demo: gr.Blocks, timeout_s: float = 15.0) -> None:
    """A Space restart sends SIGTERM: stop every run first, so each saves its last/ checkpoint and
    is marked stopped (resumable), then close the server. The wait stays under the grace period a
    platform gives before SIGKILL; a run it cannot wait for shows as interrupted after the restart."""
    def stop(signum, frame):
        log.warning("SIGTERM: stopping every run (each saves its last checkpoint), then exiting")
        lab.registry.stop_all(timeout_s)
        demo.close()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
