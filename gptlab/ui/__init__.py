"""GPT Lab's web app: the tabs assembled, what crosses tabs wired, and the server launched.

This package is the only part of gptlab that imports gradio. Each tab is a module with a small
builder per panel; every handler takes named inputs, calls gptlab.service.Lab once and returns
named outputs ({component: value}).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import gradio as gr

from gptlab.config import DEFAULT_PRESET, TrainConfig
from gptlab.service import Lab, Limits
from gptlab.ui import compare_tab, data_tab, sample_tab, train_tab
from gptlab.ui.common import session

TITLE = "# GPT Lab\nTrain a small GPT on your own text and watch it go from gibberish to words."


def build_demo(lab: Lab) -> gr.Blocks:
    with gr.Blocks(title="GPT Lab") as demo:
        who = session(lab.registry.root)
        gr.Markdown(TITLE)
        with gr.Tab("Data"):
            data = data_tab.build(TrainConfig.preset(DEFAULT_PRESET).tokenizer)
        with gr.Tab("Train"):
            train, live_events = train_tab.build(lab, who, data)
        with gr.Tab("Compare"):
            compare = compare_tab.build(lab, who)
        with gr.Tab("Sample"):
            sample = sample_tab.build(lab, who)

        preview = data_tab.wire_preview(lab, data, train.fields["block_size"])
        size_summary = train_tab.wire_size_summary(lab, train, data)

        # Every run picker follows the Train tab's list of runs, and shows a run's final status.
        def sync_pickers(run_id, owner):
            choices = lab.run_choices(owner)
            return {sample.run: gr.update(choices=choices, value=run_id),
                    compare.run_a: gr.update(choices=choices, value=run_id),
                    compare.run_b: gr.update(choices=choices)}

        pickers = dict(fn=sync_pickers, inputs_kwargs={"run_id": train.runs, "owner": who.owner},
                       outputs=[sample.run, compare.run_a, compare.run_b], api_visibility="private")
        train.runs.change(**pickers)
        loaded = train_tab.attach_on_load(demo, lab, who, train)
        for event in (*live_events, loaded):
            event.then(**pickers)
        demo.load(**preview, api_visibility="private")
        demo.load(**size_summary)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="GPT Lab: train a small GPT in your browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also create a public Gradio share link")
    p.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password")
    p.add_argument("--runs-dir", default=os.environ.get("GPTLAB_RUNS_DIR", "runs"), help="where runs are kept")
    p.add_argument("--max-concurrent-trainings", type=int, default=1, help="trainings at once (default 1)")
    p.add_argument("--max-params", type=int, default=Limits.max_params, help="largest model, in parameters")
    p.add_argument("--max-upload-mb", type=float, default=Limits.max_upload_mb, help="largest upload, in MB")
    args = p.parse_args(argv)
    if args.auth is not None and ":" not in args.auth:
        p.error("--auth takes USER:PASS, e.g. --auth teacher:s3cret")
    if args.max_concurrent_trainings < 1 or args.max_params < 1 or args.max_upload_mb <= 0:
        p.error("--max-concurrent-trainings, --max-params and --max-upload-mb must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("SPACE_ID") and Path("/data").is_dir() and args.runs_dir == "runs":
        args.runs_dir = "/data/runs"  # Spaces' persistent storage, when the Space has it
    lab = Lab(args.runs_dir, max_concurrent=args.max_concurrent_trainings,
              limits=Limits(max_params=args.max_params, max_upload_mb=args.max_upload_mb))
    demo = build_demo(lab)
    host = "0.0.0.0" if os.environ.get("SPACE_ID") else args.host
    demo.queue(max_size=64).launch(server_name=host, server_port=args.port, share=args.share,
                                   auth=tuple(args.auth.split(":", 1)) if args.auth else None,
                                   max_file_size=int(args.max_upload_mb * 2**20), ssr_mode=False)
