"""Endpoints for agents and scripts: the runs as JSON, a training started without waiting for it, and a
run's status in one call. Over MCP (`python app.py --mcp`) they are tools beside stop and sample.

They have no components: gr.api derives each endpoint from its handler's signature and docstring. A
browser's live view streams component updates until a run ends; an agent asks again instead.
"""

from __future__ import annotations

import json

import gradio as gr

from gptlab.service import Lab
from gptlab.service.agent import AGENT_PRESET
from gptlab.ui.common import agent_tool, user_errors


def build(lab: Lab) -> None:
    """Registers /list_runs, /start_training and /run_status (inside the app's Blocks)."""

    @agent_tool
    @user_errors
    def list_runs(owner: str) -> str:
        """List your training runs, newest first: each run's id, name, status, step, max_steps and best validation loss.

        Args:
            {owner}
        Returns:
            JSON text: {{"owner": ..., "runs": [{{"run_id": ..., "status": ..., ...}}, ...]}}.
        """
        return json.dumps(lab.list_runs(owner=owner), indent=1)

    @agent_tool
    @user_errors
    def start_training(owner: str = "", text: str = "", preset: str = AGENT_PRESET, max_steps: int = 0) -> str:
        """Start training a small GPT in the background and return at once; a busy server says to try again later.

        Args:
            {owner}
            text: the text to learn (a few thousand characters at least); "" trains on the bundled Shakespeare (about 1 MB).
            preset: named model and training settings; "tiny" trains in seconds. Names: {presets}.
            max_steps: optimiser steps to train for; 0 keeps the preset's.
        Returns:
            JSON text: the new run's status, with "owner" (keep it) and "run_id"; then call run_status.
        """
        return json.dumps(lab.start_training(owner=owner, text=text, preset=preset, max_steps=max_steps), indent=1)

    @agent_tool
    @user_errors
    def run_status(owner: str, run_id: str) -> str:
        """Read where one of your runs is now: status, step, progress, latest losses and sample, and what to call next.

        Args:
            {owner}
            run_id: the run to read (from start_training or list_runs).
        Returns:
            JSON text: status (running, finished, stopped, failed, ...), step, progress_percent, loss, val_loss, hint.
        """
        return json.dumps(lab.run_status(owner=owner, run_id=run_id), indent=1)

    gr.api(start_training, api_name="start_training")
    # Reads only: they need not wait behind one another or a training start.
    gr.api(list_runs, api_name="list_runs", concurrency_limit=None)
    gr.api(run_status, api_name="run_status", concurrency_limit=None)
