"""The training time machine: SnapshotEvents become a timeline (pure functions, on synthetic events);
a trained run has a snapshot at every evaluation, step 0 included, whose greedy and sampled texts are
what generate() writes from the checkpoint of that step, the same on every run of the same settings;
a resumed run continues its timeline; snapshot_tokens=0 turns it off; the service answers with data
and escaped HTML, and an old run without snapshots gets a sentence, not an error."""

import json
import shutil

import pytest

from gptlab.checkpoint import load_checkpoint
from gptlab.config import SampleConfig
from gptlab.data import DataError
from gptlab.events import EvalEvent, SnapshotEvent, StepEvent
from gptlab.generate import generate
from gptlab.insight.timeline import Continuation, Snapshot, last_step, nearest, snapshots
from gptlab.runfolder import METRICS_FILE, read_events
from gptlab.runs import RunError
from gptlab.service import Lab, Limits
from gptlab.timeline_view import NO_SNAPSHOTS, snapshot_html
from gptlab.tokenizers import CharTokenizer
from gptlab.training import TrainingRun, continuation, snapshot_prompts
from tests.forms import PASTE, SCRATCH, hyper


def snap(step, prompt, greedy="g", sampled="s", val_loss=2.0) -> SnapshotEvent:
    return SnapshotEvent(step, val_loss, prompt, greedy, sampled)


def eval_event(step, val_loss=2.0) -> EvalEvent:
    return EvalEvent(step, 2.0, val_loss, 7.4, 7.4, val_loss, True, 0, 0.0)


# ------------------------------------------------------------------------------------------------
# Pure functions, on synthetic events


def test_snapshots_group_each_evaluation_s_prompts_in_step_order():
    events = [eval_event(0, 4.0), snap(0, "a", "x", "y", 4.0), snap(0, "b", val_loss=4.0),
              StepEvent(1, 3.0, 1e-3, 1.0, 64, 100.0, 0.1, None),
              eval_event(10, 3.0), snap(10, "a", "xx", "yy", 3.0), snap(10, "b", val_loss=3.0)]
    timeline = snapshots(events)
    assert [s.step for s in timeline] == [0, 10]
    assert timeline[0] == Snapshot(0, 4.0, (Continuation("a", "x", "y"), Continuation("b", "g", "s")))
    assert timeline[1].val_loss == 3.0 and [t.prompt for t in timeline[1].texts] == ["a", "b"]
    assert snapshots([eval_event(0), StepEvent(1, 3.0, 1e-3, 1.0, 64, 100.0, 0.1, None)]) == []


def test_a_step_logged_again_keeps_its_later_texts():
    timeline = snapshots([snap(5, "a", "old"), snap(5, "b", "old"), snap(5, "a", "new"), snap(5, "b", "new")])
    assert [(t.prompt, t.greedy) for t in timeline[0].texts] == [("a", "new"), ("b", "new")]


@pytest.mark.parametrize("step, expected", [(0, 0), (4, 0), (5, 0), (6, 10), (10, 10), (22, 20), (10**9, 25),
                                            (-3, 0), (22.6, 25)])
def test_nearest_picks_the_closest_evaluation_and_the_earlier_of_a_tie(step, expected):
    timeline = [Snapshot(s, 1.0, ()) for s in (0, 10, 20, 25)]
    assert nearest(timeline, step).step == expected


def test_nearest_of_an_empty_timeline_is_none_and_last_step_looks_from_the_end():
    assert nearest([], 3) is None
    assert last_step([eval_event(0)]) is None
    events = [snap(0, "a"), eval_event(10), snap(10, "a"), StepEvent(11, 3.0, 1e-3, 1.0, 64, 1.0, 0.1, None)]
    assert last_step(events) == 10


def test_the_fixed_prompts_are_the_usual_one_and_a_validation_line():
    tokenizer = CharTokenizer(sorted(set("abc de\nROMEO:")))
    val = tokenizer.encode("bc de\nROMEO: abc abc abc abc\n")
    usual, piece = snapshot_prompts(tokenizer, val, block_size=64)
    assert tokenizer.decode(usual) == "\n"
    assert tokenizer.decode(piece) == "ROMEO: abc abc a"  # from the first line start, 16 tokens
    assert len(snapshot_prompts(tokenizer, val, block_size=16)[1]) == 4  # a quarter of a small context
    no_newline = CharTokenizer(list("ab"))
    assert no_newline.decode(snapshot_prompts(no_newline, no_newline.encode("abba" * 10), 64)[1]) == ("abba" * 4)


def test_a_continuation_is_the_text_after_the_prompt():
    tokenizer = CharTokenizer(list("abc"))
    assert continuation(tokenizer, tokenizer.encode("ab"), tokenizer.encode("ca")) == "ca"


def test_the_html_escapes_the_user_s_text():
    html = snapshot_html(Snapshot(250, 1.5, (Continuation("<b>", "<script>x</script>", "&amp;"),)), asked=260)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp;amp;" in html
    assert "step 250" in html and "nearest to step 260" in html and "1.500" in html


# ------------------------------------------------------------------------------------------------
# A trained run's timeline


def texts_at(run_dir, which: str, prompt_text: str, n: int = 48) -> tuple[str, str]:
    """The oracle: what generate() writes from that checkpoint, greedy and sampled with the run's seed."""
    checkpoint = load_checkpoint(run_dir / which)
    model, tokenizer = checkpoint.load_model(), checkpoint.tokenizer
    prompt = tokenizer.encode(prompt_text)
    out = []
    for config in (SampleConfig(strategy="greedy", max_new_tokens=n),
                   SampleConfig(strategy="sample", max_new_tokens=n, temperature=0.8,
                                seed=checkpoint.train_config.seed)):
        out.append(tokenizer.decode(list(generate(model, prompt, config, eot=tokenizer.eot))))
    return out[0], out[1]


def test_every_evaluation_of_a_run_has_snapshots_step_0_included(tiny_run):
    events = read_events(tiny_run)
    timeline = snapshots(events)
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert [s.step for s in timeline] == [e.step for e in evals] == [0, 10, 20]
    assert [s.val_loss for s in timeline] == [e.val_loss for e in evals]
    for s in timeline:
        assert [t.prompt for t in s.texts] == ["\n", "all that"]  # the usual prompt, then the validation line
        assert all(0 < len(t.greedy) <= 48 and 0 < len(t.sampled) <= 48 for t in s.texts)
    assert timeline[0].texts != timeline[-1].texts  # training changed what the model writes


def test_the_texts_are_what_the_checkpoint_of_that_step_writes(tiny_run):
    timeline = {s.step: s for s in snapshots(read_events(tiny_run))}
    assert load_checkpoint(tiny_run / "last").step == 20
    for step, which in ((0, "init"), (20, "last")):  # init/ holds the weights of step 0
        for text in timeline[step].texts:
            assert (text.greedy, text.sampled) == texts_at(tiny_run, which, text.prompt)


def test_the_same_settings_give_the_same_timeline(tiny_run, tiny_model_config, tiny_train_config, tmp_path):
    again = TrainingRun.new(tiny_model_config(), tiny_train_config(), tmp_path / "again",
                            data_paths=[tiny_run.parent / "tiny.txt"])
    assert snapshots(again.events()) == snapshots(read_events(tiny_run))


def test_a_resumed_run_continues_its_timeline(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    list(TrainingRun.resume(run_dir, max_steps=30).events())
    timeline = snapshots(read_events(run_dir))
    assert [s.step for s in timeline] == [0, 10, 20, 30]
    lines = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()]
    assert sum(1 for d in lines if d["event"] == "snapshot" and d["step"] == 20) == 2  # none logged twice
    for text in timeline[-1].texts:
        assert (text.greedy, text.sampled) == texts_at(run_dir, "last", text.prompt)


def test_snapshot_tokens_0_turns_the_time_machine_off(tiny_run, tiny_model_config, tiny_train_config, tmp_path):
    run = TrainingRun.new(tiny_model_config(), tiny_train_config(max_steps=2, snapshot_tokens=0), tmp_path / "off",
                          data_paths=[tiny_run.parent / "tiny.txt"])
    events = list(run.events())
    assert any(isinstance(e, EvalEvent) for e in events) and not any(isinstance(e, SnapshotEvent) for e in events)


# ------------------------------------------------------------------------------------------------
# The service


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(lab, owner, run_id, live views) of a finished 20-step run, evaluated every 10 steps."""
    lab = Lab(tmp_path_factory.mktemp("timeline") / "runs", limits=Limits(poll_seconds=0.05))
    views = list(lab.start(owner="", source=PASTE, files=None, pasted=(
        "the quick brown fox jumps over the lazy dog.\nall that glitters is not gold.\n") * 40, tokenizer="char",
        start_from=SCRATCH, settings=hyper(max_steps=20, eval_interval=10)))
    return lab, views[-1].owner, views[-1].run_id, views


def test_the_live_view_carries_the_newest_snapshot_step(trained):
    _, _, _, views = trained
    steps = [v.snapshot_step for v in views if v.snapshot_step is not None]
    assert steps == sorted(steps) and steps[-1] == 20


def test_the_timeline_endpoint_returns_the_snapshots_as_data(trained):
    lab, owner, run_id, _ = trained
    data = lab.timeline(owner=owner, run_id=run_id)
    assert data.steps == [0, 10, 20] and data.message == ""
    json.dumps(data.snapshots)  # plain data, as the API sends it
    assert data.snapshots[0]["step"] == 0 and {"prompt", "greedy", "sampled"} <= set(data.snapshots[0]["texts"][0])


def test_the_time_machine_shows_the_nearest_evaluation(trained):
    lab, owner, run_id, _ = trained
    assert lab.time_machine(owner=owner, run_id=run_id, step=13.0).step == 10
    assert lab.time_machine(owner=owner, run_id=run_id, step=None).step == 20  # none given: the latest
    view = lab.time_machine(owner=owner, run_id=run_id, step="0")
    assert view.step == 0 and "step 0</b> · validation loss" in view.html
    both = lab.compare_steps(owner=owner, run_id=run_id, step_a=0, step_b=None)
    assert (both.step_a, both.step_b) == (0, 20) and both.html_a != both.html_b


@pytest.mark.parametrize("step", ["soon", -1, float("nan"), True])
def test_a_step_that_is_not_one_is_refused_with_a_sentence(trained, step):
    lab, owner, run_id, _ = trained
    with pytest.raises(DataError, match="must be a training step: a whole number of 0 or more"):
        lab.time_machine(owner=owner, run_id=run_id, step=step)


def test_no_run_or_another_s_run_is_refused(trained):
    lab, owner, run_id, _ = trained
    with pytest.raises(RunError, match="There is no run yet"):
        lab.timeline(owner=owner, run_id=None)
    with pytest.raises(RunError, match="There is no run"):
        lab.compare_steps(owner="someone-else-entirely", run_id=run_id, step_a=0, step_b=10)


def test_an_old_run_without_snapshots_gets_a_sentence(trained):
    lab, owner, run_id, _ = trained
    log = lab.registry.folder(owner, run_id) / METRICS_FILE
    kept = log.read_text(encoding="utf-8")
    try:
        log.write_text("".join(line + "\n" for line in kept.splitlines() if '"snapshot"' not in line), encoding="utf-8")
        view = lab.time_machine(owner=owner, run_id=run_id, step=10)
        assert view.step is None and NO_SNAPSHOTS in view.html
        assert lab.timeline(owner=owner, run_id=run_id).message == NO_SNAPSHOTS
        assert NO_SNAPSHOTS in lab.compare_steps(owner=owner, run_id=run_id, step_a=0, step_b=10).html_a
    finally:
        log.write_text(kept, encoding="utf-8")
