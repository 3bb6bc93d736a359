"""The run-folder format: which checkpoint a run folder means (its last for a resume; its best,
else its last, to stand for it), which run a checkpoint belongs to, and its metrics log read back
as typed events, each complete line once, with a sentence for a line that is not an event."""

import json

import pytest

from gptlab.checkpoint import CONFIG_FILE
from gptlab.events import CheckpointEvent, DoneEvent, EvalEvent, EventError, SampleEvent, StepEvent
from gptlab.runfolder import (BEST, INIT, LAST, LOSS_PLOT, METRICS_FILE, read_events, read_new_events,
                              resolve_checkpoint, run_folder_of)


def run_folder(root, *labels):
    """A run folder with checkpoint folders that hold only a config: all these rules look at."""
    for label in labels:
        (root / label).mkdir(parents=True)
        (root / label / CONFIG_FILE).write_text("{}", encoding="utf-8")
    root.mkdir(parents=True, exist_ok=True)
    return root


def test_a_run_folder_means_its_last_checkpoint_for_a_resume(tmp_path):
    run = run_folder(tmp_path / "run", INIT, BEST, LAST)
    assert resolve_checkpoint(run) == run / LAST
    assert resolve_checkpoint(run, prefer=LAST) == run / LAST


def test_a_run_folder_stands_for_its_best_checkpoint_else_its_last(tmp_path):
    both = run_folder(tmp_path / "both", INIT, BEST, LAST)
    assert resolve_checkpoint(both, prefer=BEST) == both / BEST
    no_best = run_folder(tmp_path / "no-best", INIT, LAST)  # stopped before its first evaluation
    assert resolve_checkpoint(no_best, prefer=BEST) == no_best / LAST


def test_a_checkpoint_folder_means_itself(tmp_path):
    run = run_folder(tmp_path / "run", INIT, BEST, LAST)
    for label in (INIT, BEST, LAST):
        assert resolve_checkpoint(run / label) == run / label
        assert resolve_checkpoint(run / label, prefer=BEST) == run / label


def test_a_folder_without_checkpoints_is_left_for_load_checkpoint_to_explain(tmp_path):
    empty = run_folder(tmp_path / "empty")
    assert resolve_checkpoint(empty) == empty and resolve_checkpoint(empty, prefer=BEST) == empty
    with pytest.raises(ValueError, match="prefer must be 'best' or 'last', not 'init'"):
        resolve_checkpoint(empty, prefer=INIT)


def test_the_run_folder_of_a_checkpoint_and_of_a_run(tmp_path):
    run = run_folder(tmp_path / "run", INIT, LAST)
    assert run_folder_of(run / LAST) == run and run_folder_of(run / INIT) == run
    assert run_folder_of(run) == run


def test_a_trained_run_folder(tiny_run):
    assert resolve_checkpoint(tiny_run) == tiny_run / LAST
    assert resolve_checkpoint(tiny_run, prefer=BEST) == tiny_run / BEST
    assert run_folder_of(tiny_run / BEST) == tiny_run and run_folder_of(tiny_run) == tiny_run
    events = read_events(tiny_run)
    assert isinstance(events[0], EvalEvent) and events[0].step == 0
    assert isinstance(events[-1], DoneEvent) and events[-1].step == 20 and events[-1].status == "finished"
    assert [e.step for e in events if isinstance(e, StepEvent)] == list(range(1, 21))
    assert {e.label for e in events if isinstance(e, CheckpointEvent)} == {BEST, LAST}
    assert (tiny_run / LOSS_PLOT).read_bytes().startswith(b"\x89PNG")


def test_new_events_are_read_once_from_a_byte_offset(tmp_path):
    one, two = (SampleEvent(step, f"sample {step}") for step in (1, 2))
    log = tmp_path / METRICS_FILE
    line = json.dumps(two.as_dict())
    log.write_text(json.dumps(one.as_dict()) + "\n" + line[:20], encoding="utf-8")
    first, offset = read_new_events(tmp_path)
    assert first == [one]  # typed events, and the half-written line is left for later
    with open(log, "a", encoding="utf-8") as f:
        f.write(line[20:] + "\n")
    second, offset = read_new_events(tmp_path, offset)
    assert second == [two] and read_new_events(tmp_path, offset) == ([], offset)
    assert read_events(tmp_path) == [one, two] and read_events(tmp_path, start=1) == [two]


def test_a_run_without_a_log_has_no_events(tmp_path):
    assert read_events(tmp_path) == [] and read_new_events(tmp_path, 7) == ([], 7)


@pytest.mark.parametrize("line, problem", [
    ('{"event": "step", "step": 1}', "it lacks 'loss'"),
    ('{"event": "warp", "step": 1}', "Unknown event kind 'warp'"),
    ("not json", "Expecting value"),
])
def test_a_line_that_is_not_an_event_names_the_log_and_the_problem(tmp_path, line, problem):
    (tmp_path / METRICS_FILE).write_text(json.dumps(SampleEvent(0, "ok").as_dict()) + "\n" + line + "\n")
    with pytest.raises(EventError) as e:
        read_events(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / METRICS_FILE} holds a line that is not a gptlab event (")
    assert problem in str(e.value) and "Remove that line" in str(e.value)
