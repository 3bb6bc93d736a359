"""What an agent (an MCP client, a script) needs: runs as plain data, a training started without
waiting for it, and where a run is, read in one call.

The browser's calls stream component updates; an agent asks, reads a JSON-able dict, and asks again.
Its key to its runs is the browser's kind of owner token: start_training makes one when given none,
and every later call passes it back, so one agent never sees another's (or a browser's) runs. A
malformed token is refused rather than silently replaced by a fresh one, which would hide the
agent's runs from it.
"""

from __future__ import annotations

from typing import Any

from gptlab import views
from gptlab.events import EvalEvent, StepEvent
from gptlab.runs import RunError
from gptlab.service.base import OWNER_PATTERN, SOURCES, START_FROM
from gptlab.service.training import Training

AGENT_PRESET = "tiny"  # trains in seconds on any hardware: the agent's default
OWNER_HELP = ('Pass the owner token that start_training returned (its "owner"), or call start_training with '
              'owner "" to get a new one.')
HINTS = {"running": "Call run_status again in a few seconds; stop ends it early and keeps its last checkpoint.",
         "finished": "Call sample with this run_id to read what it writes."}
LATER = "Call sample with this run_id (checkpoint 'best', or 'last' if it never evaluated)."


class Agent(Training):
    def _agent_owner(self, owner: str | None, *, new_ok: bool = False) -> str:
        if isinstance(owner, str) and OWNER_PATTERN.match(owner):
            return owner
        if not owner and new_ok:
            return self.owner_or_new(None)
        raise RunError(OWNER_HELP if not owner else f"That is not an owner token this server made. {OWNER_HELP}")

    @staticmethod
    def _row(info) -> dict[str, Any]:
        return {"run_id": info.id, "name": info.name, "status": info.status, "reason": info.reason,
                "step": info.step, "max_steps": info.train.get("max_steps"),
                "best_val_loss": None if info.best_val_loss is None else round(info.best_val_loss, 4)}

    def list_runs(self, *, owner: str | None) -> dict[str, Any]:
        """The owner's runs, newest first; an empty owner has none yet (and is told how to get one)."""
        if not owner:
            return {"owner": None, "runs": [], "hint": OWNER_HELP}
        owner = self._agent_owner(owner)
        return {"owner": owner, "runs": [self._row(info) for info in self.registry.list(owner)]}

    def run_status(self, *, owner: str | None, run_id: str | None) -> dict[str, Any]:
        """Where one run is now: its row, progress, latest losses and sample, and what to call next."""
        owner = self._agent_owner(owner)
        if not run_id:
            raise RunError("No run chosen: pass a run_id (list_runs shows yours; start_training returns the one it "
                           "starts).")
        info = self.registry.get(owner, run_id)
        events = self.registry.events(owner, run_id)
        step = next((e for e in reversed(events) if isinstance(e, StepEvent)), None)
        evaluation = next((e for e in reversed(events) if isinstance(e, EvalEvent)), None)
        return {"owner": owner, **self._row(info), "step": step.step if step else info.step,
                "progress_percent": round(100 * views.progress_fraction(info, events), 1),
                "loss": round(step.loss, 4) if step else None,
                "val_loss": round(evaluation.val_loss, 4) if evaluation else None,
                "tokens_per_sec": round(step.tokens_per_sec) if step else None,
                "seconds_left": round(step.eta) if step and step.eta is not None and info.status == "running" else None,
                "latest_sample": views.latest_sample(events),
                "summary": views.without_paths(views.run_status_markdown(info, events)),
                "hint": HINTS.get(info.status, LATER)}

    def start_training(self, *, owner: str | None, text: str | None, preset: str | None,
                       max_steps: int | None) -> dict[str, Any]:
        """Start a run in the background and return at once with its status (owner token included)."""
        owner = self._agent_owner(owner, new_ok=True)
        settings = self.preset_settings(preset or AGENT_PRESET)
        if max_steps:
            settings["max_steps"] = max_steps
        source = SOURCES[2] if text and text.strip() else SOURCES[0]
        run_id = self._launch(owner, source=source, files=None, pasted=text if source == SOURCES[2] else None,
                              tokenizer=settings["tokenizer"], start_from=START_FROM[0], settings=settings)
        return self.run_status(owner=owner, run_id=run_id)
