"""The run report: what it says of the tiny run (checked against its init/ config and its events), what it
says when parts are missing, that no text from the run can break the page (rendered with markdown-it, a
CommonMark parser), and the service's download."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from gptlab import report as report_module
from gptlab.checkpoint import CONFIG_FILE
from gptlab.events import EvalEvent, Event, SampleEvent
from gptlab.report import (MAX_SAMPLES, REPORT_FILE, ReportError, fenced, inline, paragraph, run_report, write_report)
from gptlab.runfolder import LOSS_PLOT, METRICS_FILE, read_events
from gptlab.runs import RunError

markdown_it = pytest.importorskip("markdown_it")
SECTIONS = ["Results", "Loss curve", "Time", "Hardware", "Data", "Configuration", "Samples"]


def render(text: str) -> str:
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def headings(html: str, level: int) -> list[str]:
    import re
    return re.findall(rf"<h{level}>(.*?)</h{level}>", html)


def copy_run(tiny_run: Path, tmp_path: Path, name: str = "run") -> Path:
    shutil.copytree(tiny_run, tmp_path / name)
    return tmp_path / name


def append(run_dir: Path, *events: Event) -> None:
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(e.as_dict()) + "\n" for e in events)


def test_the_tiny_runs_report_holds_its_config_losses_plot_and_hardware(tiny_run, tmp_path):
    page = write_report(tiny_run, tmp_path / "out").read_text(encoding="utf-8")
    html = render(page)
    assert headings(html, 1) == ["Run report: run"] and headings(html, 2) == SECTIONS

    started = json.loads((tiny_run / "init" / CONFIG_FILE).read_text(encoding="utf-8"))
    for name in ("n_layer", "n_embd", "block_size", "vocab_size"):
        assert f"| {name} | {started['model'][name]} |" in page
    for name in ("learning_rate", "batch_size", "max_steps", "eval_interval"):
        assert f"| {name} | {started['train'][name]:g} |" in page

    evals = [e for e in read_events(tiny_run) if isinstance(e, EvalEvent)]
    last, best = evals[-1], min(evals, key=lambda e: e.val_loss)
    for label, value in (("train loss", last.train_loss), ("validation loss", last.val_loss),
                         ("validation perplexity", last.val_ppl), ("best validation loss", best.val_loss)):
        assert f"| {label} | {value:.5g} |" in page
    assert f"| step of the best validation loss | {best.step} |" in page
    assert "The run finished at step 20: reached max" in page

    assert f"![Training and validation loss]({LOSS_PLOT})" in page and '<img src="loss.png"' in html
    assert (tmp_path / "out" / LOSS_PLOT).read_bytes() == (tiny_run / LOSS_PLOT).read_bytes()
    assert "| device | cpu |" in page and "| precision | fp32 |" in page and "| torch | 2." in page
    assert "| sources | tiny.txt |" in page and str(tiny_run.parent) not in page  # file names, never paths
    assert "| tokens seen | 10,240 |" in page or "| tokens seen |" in page


def without_snapshots(run_dir):
    """The run's log without its time-machine snapshots (a run trained with --snapshot-tokens 0)."""
    lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    (run_dir / METRICS_FILE).write_text("".join(f"{line}\n" for line in lines if '"snapshot"' not in line))


def test_the_time_machine_snapshots_are_the_reports_samples(tiny_run, tmp_path):
    body = run_report(copy_run(tiny_run, tmp_path)).section("Samples").body
    assert "**Step 0 (time machine, greedy; validation loss" in body and "**Step 20 (time machine" in body


def test_a_run_without_samples_plot_or_init_still_gets_a_report_that_says_so(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    without_snapshots(run_dir)
    (run_dir / LOSS_PLOT).unlink()
    shutil.rmtree(run_dir / "init")
    out = tmp_path / "out"
    (out).mkdir()
    (out / LOSS_PLOT).write_bytes(b"stale")  # from an earlier report of a run that had one
    page = write_report(run_dir, out).read_text(encoding="utf-8")
    assert "No samples were logged" in page and "No loss plot" in page and "![" not in page
    assert not (out / LOSS_PLOT).exists()
    assert "has no init/ checkpoint; these are its newest checkpoint's settings" in page
    assert "| max_steps | 20 |" in page
    assert headings(render(page), 2) == SECTIONS


def test_a_run_still_training_and_one_without_evaluations(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    (run_dir / METRICS_FILE).write_text("\n".join(line for line in lines if '"done"' not in line) + "\n")
    assert "still training, or it was interrupted at step 20" in run_report(run_dir).markdown()

    (run_dir / METRICS_FILE).write_text("\n".join(l for l in lines if '"eval"' not in l and '"done"' not in l) + "\n")
    assert "No evaluation was logged" in run_report(run_dir).section("Results").body

    with pytest.raises(ReportError, match="train a run first"):
        run_report(tmp_path / "empty")


def test_text_from_the_run_cannot_break_the_page(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path, name="# my *run* | <b>x</b>")
    evil = "````\n# Not a heading\n</code></pre><script>alert(1)</script>\n| a | b |\n```"
    append(run_dir, SampleEvent(20, evil), SampleEvent(21, "plain"))
    config = json.loads((run_dir / "last" / CONFIG_FILE).read_text(encoding="utf-8"))
    config["extra"]["data"]["sources"] = ["/home/me/[link](javascript:x) | <img src=x onerror=y>.txt"]
    config["extra"]["data"]["description"] = "# Heading?\n- list? <script>"
    (run_dir / "last" / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")

    html = render(write_report(run_dir, tmp_path / "out").read_text(encoding="utf-8"))
    assert headings(html, 2) == SECTIONS and len(headings(html, 1)) == 1  # nothing added a heading
    assert "<script>" not in html and "<img src=x" not in html and "<b>" not in html and 'href="javascript' not in html
    codes = [block for block in html.split("<code")[1:]]
    assert any(evil.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in c for c in codes)
    assert "/home/me" not in html
    assert "<li>" not in html  # the description did not become a list


def test_inline_and_fenced_are_inert_for_any_text():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("`*_[]()#|<>&!-+=~\\ \n1.ab")), max_size=30))
    def check(text):
        rendered = render(f"x {inline(text)} y")
        assert rendered.startswith("<p>x ") and rendered.count("<p>") == 1
        assert not any(tag in rendered for tag in ("<em>", "<strong>", "<code>", "<a ", "<h", "<table"))
        if text.strip():
            alone = render(paragraph(text))
            assert alone.startswith("<p>") and alone.count("<p>") == 1 and "<li>" not in alone, alone
        block = render(fenced(text))
        assert block.count("<pre>") == 1 and block.endswith("</code></pre>\n")

    check()


def test_long_runs_show_some_samples_and_other_kinds_of_sample_are_one_entry(tiny_run, tmp_path, monkeypatch):
    run_dir = copy_run(tiny_run, tmp_path)
    without_snapshots(run_dir)
    append(run_dir, *[SampleEvent(21 + i, f"sample {i}") for i in range(30)])
    body = run_report(run_dir).section("Samples").body
    assert f"{MAX_SAMPLES} of 30 samples." in body and "sample 0\n" in body and "sample 29\n" in body

    @dataclass(frozen=True)
    class NoteEvent(Event):  # some later kind of sample
        text: str

    monkeypatch.setitem(report_module.SAMPLE_KINDS, NoteEvent, lambda e: (f"Snapshot at step {e.step}", e.text))
    monkeypatch.setattr(report_module, "read_events", lambda run: [NoteEvent(5, "then")])
    body = run_report(run_dir).section("Samples").body
    assert "**Snapshot at step 5**" in body and "then" in body


def test_the_service_writes_the_report_under_the_downloads_root(tmp_path, tiny_text, tiny_model_config,
                                                                 tiny_train_config):
    from gptlab.service import Lab

    lab = Lab(tmp_path / "runs")
    owner = Lab.owner_or_new("")
    run_id = lab.registry.start(owner, model_config=tiny_model_config(), texts=[tiny_text],
                                train_config=tiny_train_config(max_steps=4, eval_interval=2))
    lab.registry.wait(run_id, timeout=300)
    files = lab.report(owner=owner, run_id=run_id)
    assert files.report.name == REPORT_FILE and files.report.is_relative_to(lab.downloads_root)
    assert files.files == (files.report, files.report.parent / LOSS_PLOT)
    assert "| max_steps | 4 |" in files.report.read_text(encoding="utf-8")
    with pytest.raises(RunError, match="no run yet"):
        lab.report(owner=owner, run_id="")
    with pytest.raises(RunError):
        lab.report(owner=Lab.owner_or_new(""), run_id=run_id)  # another browser's run
    (lab.registry.folder(owner, run_id) / METRICS_FILE).write_text("not json\n", encoding="utf-8")
    with pytest.raises(RunError) as e:
        lab.report(owner=owner, run_id=run_id)
    assert str(tmp_path) not in str(e.value)
