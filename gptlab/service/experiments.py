"""Experiments: the browser's run history, runs overlaid, and sweeps queued in the background (the
exercises, seeds and the scaling lab are sweeps too)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping, Sequence

from matplotlib.figure import Figure

from gptlab.config import DEFAULT_PRESET, ConfigError, ModelConfig, vocab_size_for
from gptlab.events import SampleEvent
from gptlab.experiments import compare, history
from gptlab.experiments.figures import MAX_OVERLAY, overlay_figure, scaling_figure
from gptlab.experiments.scaling import fit_power_law, predict
from gptlab.experiments.settings import Settings
from gptlab.experiments.sweep import axis, ended_badly, grid, results_table
from gptlab.runs import RunError
from gptlab.service.base import LabBase
from gptlab.sweeps import ACTIVE

BUDGETS = ("seconds per run", "steps per run")
# The exercises of the teaching material, each one click: (setting, values from the base settings, budget).
EXERCISES: dict[str, tuple[str, Any, tuple[str, float]]] = {
    "learning rate: too low / just right / too high": (
        "learning_rate", lambda s: [s.train.learning_rate / 100, s.train.learning_rate, 1.0], (BUDGETS[0], 40)),
    "model size": ("model_size", lambda s: ["2x64", "4x128", "6x192"], (BUDGETS[0], 40)),
    "batch size": ("batch_size", lambda s: [4, 16, 64], (BUDGETS[0], 40)),
    "train longer": ("max_steps", lambda s: [250, 1000, 3000], (BUDGETS[1], 0)),
}
SCALING_SIZES = "2x32, 2x64, 4x96, 4x128"
SWEEP_REDRAW_POLLS = 5  # polls of a sweep's queue (2 s each) between redraws of a run's growing curve


@dataclass(frozen=True)
class RunsTable:
    headers: list[str]
    rows: list[list[str]]
    ids: list[str]  # the run id of each row
    choices: list[tuple[str, str]]  # (label, run id) for the run pickers, newest first


@dataclass(frozen=True)
class Overlay:
    figure: Figure
    samples: list[list[str]]  # [run name, its latest sample]


@dataclass(frozen=True)
class SweepView:
    sweep_id: str | None
    status: str
    progress: float  # percent of its runs ended
    table: list[list[str]]  # under RESULT_HEADERS
    figure: Figure | None
    scaling: str = ""  # the fitted law and the prediction, for a ladder of model sizes


class Experiments(LabBase):
    # -- history -------------------------------------------------------------------------------

    def _records(self, owner: str) -> list[history.RunRecord]:
        """The owner's runs, oldest first, with the registry's name and status (it knows 'running')."""
        out = []
        for info in reversed(self.registry.list(owner)):
            record = history.read_run(self.registry.root / info.id)
            if record is not None:
                out.append(replace(record, name=info.name, status=info.status, reason=info.reason,
                                   started=info.created))
        return out

    def runs_table(self, *, owner: str | None, against: str | None = None) -> RunsTable:
        """Every run of this browser with what it changed from the one before (or from `against`)."""
        owner = self.owner_or_new(owner)
        records = self._records(owner)
        ids = [r.folder.name for r in records]
        base = records[ids.index(against)] if against in ids else None
        if against and base is None:
            raise RunError("That run is not in this browser's history any more; pick another to compare against.")
        rows = history.table(history.with_changes(records, base))
        return RunsTable(list(history.HEADERS), rows[::-1], ids[::-1], self.run_choices(owner))  # newest first

    def rename_run(self, *, owner: str | None, run_id: str | None, name: str | None) -> str:
        if not run_id:
            raise RunError("Choose a run to rename.")
        info = self.registry.rename(self.owner_or_new(owner), run_id, name or "")
        return f"Renamed to **{info.name}**."

    def delete_run(self, *, owner: str | None, run_id: str | None) -> str:
        if not run_id:
            raise RunError("Choose a run to delete.")
        owner = self.owner_or_new(owner)
        name = self.registry.get(owner, run_id).name
        self.registry.delete(owner, run_id)
        return f"Deleted **{name}** and its checkpoints."

    # -- overlay -------------------------------------------------------------------------------

    def overlay(self, *, owner: str | None, run_ids: Sequence[str] | None, x_axis: str, smoothing) -> Overlay:
        """Up to 8 runs' whole loss histories on one chart, and each one's latest sample."""
        owner = self.owner_or_new(owner)
        run_ids = list(dict.fromkeys(run_ids or []))
        if not run_ids:
            raise RunError("Choose one or more runs to overlay.")
        if len(run_ids) > MAX_OVERLAY:
            raise RunError(f"One chart shows at most {MAX_OVERLAY} runs; you chose {len(run_ids)}. Leave some out.")
        curves, samples = self._curves(owner, run_ids, x_axis, smoothing)
        return Overlay(overlay_figure(curves, axis=x_axis), samples)

    def _curves(self, owner: str, run_ids: Sequence[str], x_axis: str, smoothing,
                names: Sequence[str] | None = None) -> tuple[list, list]:
        if x_axis not in compare.X_AXES:
            raise RunError(f"The x axis is one of: {', '.join(compare.X_AXES)}.")
        try:
            weight = float(smoothing or 0.0)
        except (TypeError, ValueError):
            raise RunError("Smoothing is a number from 0 (none) to 0.99.") from None
        curves, samples = [], []
        for i, run_id in enumerate(run_ids):
            info = self.registry.get(owner, run_id)
            name = names[i] if names else info.name
            events = self.registry.events(owner, run_id)
            record = history.read_run(self.registry.root / info.id)
            train_tokens = record.stats.get("train_tokens") if record else None
            try:
                curves.append(compare.curve(name, events, axis=x_axis, smoothing=weight, train_tokens=train_tokens))
            except ValueError as e:
                raise RunError(f"{name}: {e}") from None
            sample = next((e.text for e in reversed(events) if isinstance(e, SampleEvent)), "(no sample yet)")
            samples.append([name, sample])
        return curves, samples

    # -- sweeps --------------------------------------------------------------------------------

    def _base(self, preset: str | None, tokenizer: str, settings: Mapping[str, Any]) -> Settings:
        model, train = self._configs(tokenizer, settings)
        return Settings(preset or DEFAULT_PRESET, model, train)

    def start_sweep(self, *, owner: str | None, source: str, files, pasted, tokenizer: str, preset: str | None,
                    settings: Mapping[str, Any], axis_a: str | None, values_a: str | None, axis_b: str | None = None,
                    values_b: str | None = None, budget_kind: str = BUDGETS[0], budget=None) -> Iterator[SweepView]:
        """Queue one run per value (or per pair of values) and watch the queue until it ends."""
        axes = [axis(name, _values(text)) for name, text in ((axis_a, values_a), (axis_b, values_b)) if name]
        if not axes:
            raise ConfigError("Choose a setting to sweep, and give it 2 to 6 values separated by commas.")
        yield from self._sweep(owner, source, files, pasted, self._budgeted(self._base(preset, tokenizer, settings),
                                                                              budget_kind, budget), axes)

    def exercise(self, *, owner: str | None, source: str, files, pasted, tokenizer: str, preset: str | None,
                 settings: Mapping[str, Any], exercise: str) -> Iterator[SweepView]:
        if exercise not in EXERCISES:
            raise ConfigError(f"Choose one of the exercises: {', '.join(EXERCISES)}.")
        name, values, (kind, amount) = EXERCISES[exercise]
        base = self._base(preset, tokenizer, settings)
        yield from self._sweep(owner, source, files, pasted, self._budgeted(base, kind, amount),
                               [axis(name, values(base))], name=exercise)

    def repeat_seeds(self, *, owner: str | None, source: str, files, pasted, tokenizer: str, preset: str | None,
                     settings: Mapping[str, Any], seeds, budget_kind: str = BUDGETS[0], budget=None) -> Iterator[SweepView]:
        """The same settings over 2-5 seeds: their spread is how much luck alone moves the loss."""
        if not isinstance(seeds, (int, float)) or not 2 <= seeds <= 5 or seeds != int(seeds):
            raise ConfigError("Repeat over 2 to 5 seeds.")
        base = self._budgeted(self._base(preset, tokenizer, settings), budget_kind, budget)
        seed = base.train.seed
        yield from self._sweep(owner, source, files, pasted, base, [axis("seed", [seed + i for i in range(int(seeds))])],
                               name=f"seeds ×{int(seeds)}")

    def _budgeted(self, base: Settings, kind: str, amount) -> Settings:
        """Every run of a sweep gets the same budget: seconds (steps then only an upper bound) or steps."""
        if kind not in BUDGETS:
            raise ConfigError(f"The budget is one of: {', '.join(BUDGETS)}.")
        if kind == BUDGETS[0] and amount not in (None, 0, ""):
            # The clock alone ends each run: max_steps is set out of its reach (the server's step cap).
            return replace(base, train=base.train.replace(max_time=float(amount), max_steps=self.caps.max_steps))
        if kind == BUDGETS[1] and amount not in (None, 0, ""):
            return replace(base, train=base.train.replace(max_steps=amount, max_time=None))
        return base  # the form's own max_steps / max_time

    def _sweep(self, owner, source, files, pasted, base: Settings, axes, name: str = "") -> Iterator[SweepView]:
        owner = self.owner_or_new(owner)
        points = grid(base, axes, max_runs=self.limits.max_sweep_runs)
        admitted = []
        for p in points:  # every limit of a single run, checked for every run before any starts
            sized = p.settings.model.replace(vocab_size=vocab_size_for(p.settings.train.tokenizer))
            try:
                self._check_size(sized)
                admitted.append((p.label, p.settings.model, self.caps.admit(sized, p.settings.train)))
            except ValueError as e:
                raise ConfigError(f"The run {p.label}: {e}") from None
        paths, texts = self._documents(source, files, pasted)
        sweep_id = self.sweeps.submit(owner, admitted, data_paths=paths, texts=texts,
                                      name=name or " × ".join(a.name for a in axes), axes=[a.name for a in axes])
        yield from self.watch_sweep(owner=owner, sweep_id=sweep_id)

    def watch_sweep(self, *, owner: str | None, sweep_id: str | None = None) -> Iterator[SweepView]:
        """A sweep's progress until it ends; without an id, this browser's latest sweep (a refresh
        re-attaches to it)."""
        owner = self.owner_or_new(owner)
        with self.watchers.hold(owner):  # a live view like a run's: it holds one of the server's workers
            yield from self._watch_sweep(owner, sweep_id)

    def _watch_sweep(self, owner: str, sweep_id: str | None) -> Iterator[SweepView]:
        if not sweep_id:
            sweeps = self.sweeps.list(owner)
            if not sweeps:
                yield SweepView(None, "No sweep yet: choose a setting and its values, or an exercise, then start.",
                                0.0, [], None)
                return
            sweep_id = next((s.id for s in sweeps if s.status in ACTIVE), sweeps[0].id)
        seen, polls = None, 0
        while True:
            info = self.sweeps.get(owner, sweep_id)
            active = info.status in ACTIVE or self.sweeps.is_active(sweep_id)
            # The view reads every run's log and draws a figure, on the cores the sweep trains on: it is
            # rebuilt when a run starts or ends, and otherwise every SWEEP_REDRAW_POLLS-th poll.
            state = (info.status, tuple((p.run_id, p.status) for p in info.points))
            if state != seen or polls % SWEEP_REDRAW_POLLS == 0 or not active:
                yield self._sweep_view(owner, info)
                seen = state
            if not active:
                return
            polls += 1
            time.sleep(max(self.limits.poll_seconds, 2.0))

    def _sweep_view(self, owner: str, info) -> SweepView:
        found = [(p, self._record(owner, p.run_id)) for p in info.points if p.run_id]
        started = [p for p, r in found if r is not None]
        records = [replace(r, name=p.label) for p, r in found if r is not None]
        curves = self._curves(owner, [p.run_id for p in started], compare.X_AXES[0], 0.6,
                              names=[p.label for p in started])[0] if started else []
        bands = [("these settings", curves)] if info.axes == ["seed"] and len(curves) >= 2 else []
        scaling = ""
        figure = overlay_figure([] if bands else curves, bands=bands)
        if info.axes == ["model_size"]:
            figure, scaling = self._scaling(info, records, figure)
        lines = [f"**{info.name}** · {info.status}" + (f": {info.reason}" if info.reason else ""),
                 f"{info.done} of {len(info.points)} runs ended"]
        running = next((p for p in info.points if p.status == "running"), None)
        if running:
            lines.append(f"training now: {running.label}")
        if info.axes == ["seed"] and len(records) >= 2:
            spread = compare.Spread("these settings", tuple(r.val_loss for r in records if r.val_loss is not None))
            lines.append(f"mean validation loss {spread.mean:.4f}, spread over seeds {spread.width:.4f} "
                         f"({spread.low:.4f} to {spread.high:.4f})")
        failed = [p for p in info.points if p.status == "failed" and not p.run_id]
        lines += [f"{p.label} could not start: {p.reason}" for p in failed]
        lines += [f"**{name}** {status}: {reason}" for name, status, reason in ended_badly(records)]
        return SweepView(info.id, "  \n".join(lines), round(100 * info.done / len(info.points), 1),
                         results_table(records), figure, scaling)

    def _scaling(self, info, records, figure):
        done = [(ModelConfig.from_dict(r.model).num_params(include_embeddings=False), r.val_loss)
                for r in records if r.status == "finished" and r.val_loss is not None]
        if len(done) < 3:
            return figure, f"The fit needs at least three finished sizes; {len(done)} so far."
        sizes, losses = [n for n, _ in done], [v for _, v in done]
        try:
            fit = fit_power_law(sizes, losses)
        except ValueError as e:
            return figure, str(e)
        ordered = sorted(sizes)
        next_up = ordered[-1] * ordered[-1] / ordered[-2]
        guess = predict(sizes, losses, next_up)
        spread = (f"; refitting without each point in turn puts it between {guess.low:.3f} and {guess.high:.3f}"
                  if guess.refits else "; four or more sizes would let the fit say how sure it is")
        return (scaling_figure(sizes, losses, fit, guess),
                f"**{fit}** (fit error {fit.rmse:.4f}). The next size up, {next_up:,.0f} parameters, would reach "
                f"about **{guess.loss:.3f}**{spread}. An extrapolation from {len(done)} small runs: treat it as a guess.")

    def _record(self, owner: str, run_id: str):
        """The run's record with the registry's status; None for a run deleted since (or never started)."""
        try:
            info = self.registry.get(owner, run_id)
        except RunError:
            return None
        record = history.read_run(self.registry.root / info.id)
        return replace(record, status=info.status, reason=info.reason) if record else None

    def cancel_sweep(self, *, owner: str | None, sweep_id: str | None) -> str:
        if not sweep_id:
            return "No sweep to cancel."
        return ("Cancelling: the run in flight stops after its current step, and the rest of the queue is dropped."
                if self.sweeps.cancel(self.owner_or_new(owner), sweep_id) else "That sweep is not in the queue.")

    def resume_sweep(self, *, owner: str | None, sweep_id: str | None) -> Iterator[SweepView]:
        if not sweep_id:
            raise RunError("There is no sweep to resume yet.")
        owner = self.owner_or_new(owner)
        self.sweeps.resume(owner, sweep_id)
        yield from self.watch_sweep(owner=owner, sweep_id=sweep_id)

    def sweep_choices(self, owner: str | None) -> list[tuple[str, str]]:
        return [(f"{s.name} · {s.status}", s.id) for s in self.sweeps.list(self.owner_or_new(owner))]

    def seed_verdict(self, *, owner: str | None, sweep_a: str | None, sweep_b: str | None) -> str:
        """Whether the seeds of sweep B beat those of sweep A by more than their spread."""
        if not sweep_a or not sweep_b or sweep_a == sweep_b:
            raise RunError("Choose two different seed sweeps, A and B.")
        owner = self.owner_or_new(owner)
        spreads = []
        for sweep_id in (sweep_a, sweep_b):
            info = self.sweeps.get(owner, sweep_id)
            records = [self._record(owner, p.run_id) for p in info.points if p.run_id]
            losses = [r.val_loss for r in records if r and r.val_loss is not None and math.isfinite(r.val_loss)]
            spreads.append(compare.Spread(info.name, tuple(losses)))
        return compare.verdict(*spreads)


def _values(text: str | None) -> list[str]:
    return [v.strip() for v in str(text or "").split(",") if v.strip()]

