"""The run report: one Markdown page that says what a run was and what it reached, read from its
folder alone (init/'s config as the run started, the newest checkpoint's data and hardware, the
metrics log, loss.png).

Everything the run supplied (file names, sample text, a run's name) is escaped or fenced, so it
cannot break the page; local paths never appear (only file names), since a Hub push publishes it.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gptlab.checkpoint import BEST, CONFIG_FILE, INIT, LAST
from gptlab.events import DoneEvent, EvalEvent, Event, SampleEvent, SnapshotEvent, StepEvent
from gptlab.runfolder import LOSS_PLOT, METRICS_FILE, newest_checkpoint, read_events

REPORT_FILE = "report.md"
MAX_SAMPLES = 8  # a long run samples hundreds of times; the report shows the first, the last, and some between

# A kind of sample the report shows: its event class -> (heading, text). The time machine's snapshots
# show the prompt and its greedy continuation at each evaluation, with the validation loss then.
SAMPLE_KINDS: dict[type[Event], Callable[[Event], tuple[str, str]]] = {
    SampleEvent: lambda e: (f"Step {e.step:,}", e.text),
    SnapshotEvent: lambda e: (f"Step {e.step:,} (time machine, greedy; validation loss {e.val_loss:.3f})",
                              e.prompt + e.greedy),
}


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class Section:
    title: str
    body: str  # Markdown


@dataclass(frozen=True)
class RunReport:
    title: str
    sections: tuple[Section, ...]
    loss_plot: Path | None  # the run's loss.png, which the page references as LOSS_PLOT beside it

    def section(self, title: str) -> Section | None:
        return next((s for s in self.sections if s.title == title), None)

    def markdown(self, level: int = 1, skip: tuple[str, ...] = ()) -> str:
        """The page; level 2 makes its title a ## heading (to embed it in another page), and `skip`
        leaves sections out by title."""
        out = ["#" * level + " " + self.title, ""]
        for s in self.sections:
            if s.title not in skip:
                out += ["#" * (level + 1) + " " + s.title, "", s.body.rstrip("\n"), ""]
        return "\n".join(out)


# -- Markdown that user text cannot break --------------------------------------------------------

# What makes emphasis, code, links, tables or strikethrough anywhere in a line ("_" only at a word's
# edge: max_steps stays readable); the rest of Markdown's syntax starts a line, and is handled there.
_INLINE_SYNTAX = re.compile(r"([\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_LINE_START = re.compile(r"^(\s*)([#+=>-]|\d+(?=[.)]))")


def inline(value) -> str:
    """Text safe inside a line or a table cell: HTML made inert, Markdown's punctuation escaped,
    line breaks turned into spaces."""
    return _INLINE_SYNTAX.sub(r"\\\1", html.escape(" ".join(str(value).split()), quote=False))


def paragraph(value) -> str:
    """inline(value), with nothing at its start that would make it a heading, a list or a quote."""
    def guard(m: re.Match) -> str:  # "12." becomes "12\.", "#" becomes "\#"
        mark = m.group(2)
        return m.group(1) + (mark + "\\" if mark[0].isdigit() else "\\" + mark)
    return _LINE_START.sub(guard, inline(value))


def fenced(text: str) -> str:
    """text as a code block whose fence is longer than any run of backticks inside it (CommonMark),
    so no sample can close it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text.rstrip(chr(10))}\n{fence}"


def table(rows: list[tuple[object, object]], header: tuple[str, str] = ("Setting", "Value")) -> str:
    return "\n".join([f"| {header[0]} | {header[1]} |", "|---|---|"]
                     + [f"| {inline(k)} | {inline(_number(v))} |" for k, v in rows])


def _number(v) -> object:
    if isinstance(v, float):
        return f"{v:.5g}" if math.isfinite(v) else str(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000:
        return f"{v:,}"
    return "none" if v is None else v


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# -- the report ------------------------------------------------------------------------------------

def _config_json(folder: Path | None) -> dict | None:
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")) if folder else None
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def run_report(run_dir: str | os.PathLike) -> RunReport:
    """The report of a run folder. A run without evaluations, samples, loss.png or init/ still gets one,
    which says what is missing."""
    run = Path(run_dir)
    if not (run / METRICS_FILE).is_file() and not any((run / n / CONFIG_FILE).is_file() for n in (INIT, BEST, LAST)):
        raise ReportError("This folder holds no run (no metrics.jsonl and no checkpoint), so there is nothing "
                          "to report; train a run first.")
    events = read_events(run)
    started = _config_json(run / INIT)
    newest = _config_json(newest_checkpoint(run) or (run / BEST if (run / BEST).is_dir() else run / LAST))
    extra = _dict((newest or started or {}).get("extra"))
    plot = run / LOSS_PLOT if (run / LOSS_PLOT).is_file() else None
    sections = (_results(events), _loss_curve(plot), _time(events), _hardware(_dict(extra.get("hardware")), _dict(extra.get("distributed"))),
                _data(_dict(extra.get("data")), _dict(extra.get("stats"))), _configuration(started, newest),
                _samples(events))
    return RunReport(title=f"Run report: {inline(run.name)}", sections=sections, loss_plot=plot)


def _results(events: list[Event]) -> Section:
    evals = [e for e in events if isinstance(e, EvalEvent)]
    done = next((e for e in reversed(events) if isinstance(e, DoneEvent)), None)
    lines = []
    if done is not None and done is events[-1]:
        lines.append(f"The run {inline(done.status)} at step {done.step:,}: {inline(done.reason)}.")
    elif events:
        lines.append(f"The run has no end in its log: it is still training, or it was interrupted at step "
                     f"{events[-1].step:,} (resume it to go on).")
    if not evals:
        return Section("Results", "\n\n".join(lines + ["No evaluation was logged, so there are no losses to "
                                                       "report: a run evaluates at step 0 and every eval_interval."]))
    last, best = evals[-1], min(evals, key=lambda e: e.val_loss)
    rows = [("step of the last evaluation", last.step), ("train loss", last.train_loss),
            ("validation loss", last.val_loss), ("train perplexity", last.train_ppl),
            ("validation perplexity", last.val_ppl), ("best validation loss", best.val_loss),
            ("step of the best validation loss", best.step), ("best validation perplexity", best.val_ppl)]
    return Section("Results", "\n\n".join(lines + [table(rows, ("Metric", "Value"))]))


def _loss_curve(plot: Path | None) -> Section:
    if plot is None:
        return Section("Loss curve", f"No loss plot: {LOSS_PLOT} is drawn when a run ends, and this run has none.")
    return Section("Loss curve", f"![Training and validation loss]({LOSS_PLOT})")


def _time(events: list[Event]) -> Section:
    timed = [e for e in events if isinstance(e, (StepEvent, EvalEvent, DoneEvent))]
    if not timed:
        return Section("Time", "No step was logged.")
    last = timed[-1]
    speeds = [e.tokens_per_sec for e in events if isinstance(e, StepEvent)]
    rows = [("wall time (resumed sessions included)", _duration(last.elapsed)), ("steps", last.step),
            ("tokens seen", last.tokens_seen)]
    if last.elapsed > 0:
        rows.append(("tokens per second, overall", last.tokens_seen / last.elapsed))
    if speeds:
        rows.append(("tokens per second, median training step", sorted(speeds)[len(speeds) // 2]))
    return Section("Time", table(rows, ("What", "Value")))


def _hardware(hw: dict, world: dict) -> Section:
    if not hw:
        return Section("Hardware", "Not recorded (the run was made by an older GPT Lab).")
    rows = [("device", hw.get("device"))]
    if isinstance(world.get("world_size"), int) and world["world_size"] > 1:  # the newest stretch's world
        rows += [("processes", f"{world['world_size']} ({world.get('backend')}, {'FSDP' if world.get('fsdp') else 'DDP'})"),
                 ("global batch", f"{world.get('global_batch_formula')} (batch x accumulation x processes) = "
                                  f"{world.get('global_batch')} windows")]
    rows += [("GPU", hw["gpu"])] if hw.get("gpu") else []
    rows += [("CPU", hw.get("cpu")), ("CPU cores", hw.get("cpu_cores")), ("torch threads", hw.get("torch_threads")),
             ("precision", hw.get("precision")), ("torch", hw.get("torch"))]
    return Section("Hardware", table([(k, v) for k, v in rows if v is not None], ("What", "Value")))


def _data(data: dict, stats: dict) -> Section:
    if not data and not stats:
        return Section("Data", "Not recorded.")
    out = [paragraph(data["description"]), ""] if isinstance(data.get("description"), str) else []
    sources = [Path(str(p)).name for p in data.get("sources") or []]  # file names only: paths are private
    rows = [("sources", ", ".join(sources))] if sources else []
    rows += [(k, v) for k, v in data.items() if k not in ("sources", "paths", "description")]
    rows += [(k, v) for k, v in stats.items() if k not in data]
    return Section("Data", "\n".join(out + [table(rows, ("What", "Value"))]))


def _configuration(started: dict | None, newest: dict | None) -> Section:
    meta, note = started, "As the run started (init/config.json)."
    if meta is None:
        meta, note = newest, "The run has no init/ checkpoint; these are its newest checkpoint's settings."
    if meta is None:
        return Section("Configuration", "Not recorded: the run has no checkpoint.")
    out = [note, "", "Model:", "", table(list(_dict(meta.get("model")).items()))]
    if meta.get("train"):
        out += ["", "Training:", "", table(list(_dict(meta["train"]).items()))]
    return Section("Configuration", "\n".join(out))


def _samples(events: list[Event]) -> Section:
    found = [SAMPLE_KINDS[type(e)](e) for e in events if type(e) in SAMPLE_KINDS]
    if not found:
        return Section("Samples", "No samples were logged (sample_interval 0 turns them off).")
    shown = found
    if len(found) > MAX_SAMPLES:  # evenly spread, the first and the last included
        picks = sorted({round(i * (len(found) - 1) / (MAX_SAMPLES - 1)) for i in range(MAX_SAMPLES)})
        shown = [found[i] for i in picks]
    out = [f"{len(shown)} of {len(found)} samples."] if shown is not found else []
    for heading, text in shown:
        out += ["", f"**{inline(heading)}**", "", fenced(text)]
    return Section("Samples", "\n".join(out).lstrip("\n"))


def write_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """REPORT_FILE in out_dir, with the run's loss.png copied beside it; returns the report's path."""
    report = run_report(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Each file whole or not at all: two requests may write the same report at once.
    unique = secrets.token_hex(4)
    if report.loss_plot is not None:
        shutil.copyfile(report.loss_plot, out / f".{LOSS_PLOT}.{unique}")
        os.replace(out / f".{LOSS_PLOT}.{unique}", out / LOSS_PLOT)
    else:
        (out / LOSS_PLOT).unlink(missing_ok=True)  # from an earlier report of the same folder
    path = out / REPORT_FILE
    (out / f".{REPORT_FILE}.{unique}").write_text(report.markdown(), encoding="utf-8")
    os.replace(out / f".{REPORT_FILE}.{unique}", path)
    return path
