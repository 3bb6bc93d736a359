"""The dynamics service, without gradio: the learning-rate preview answers every setting (invalid ones
with the config's own message), the live view carries the gradient-norm panel and the doctor's
reading, and a diverging run gets a fix that fills settings a new run accepts."""

import pytest

from gptlab.config import ModelConfig, TrainConfig
from gptlab.runs import RunError
from gptlab.service import Lab, Limits
from tests.forms import PASTE, SCRATCH, hyper

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20


def start(lab, **overrides):
    return list(lab.start(owner="", source=PASTE, files=None, pasted=TEXT, tokenizer="char", start_from=SCRATCH,
                          settings=hyper(**overrides)))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(tmp_path_factory.mktemp("dynamics") / "runs", limits=Limits(poll_seconds=0.05))


def test_the_preview_follows_the_settings_and_the_servers_time_cap(lab):
    preview = lab.lr_preview(settings=hyper(max_steps=40, warmup_steps=4, max_time=0))
    config = TrainConfig.from_form(hyper(max_steps=40, warmup_steps=4, max_time=0))
    assert preview.schedule.lrs == tuple(config.lr_at(s) for s in range(40))
    assert preview.data()["lr"] == list(preview.schedule.lrs)
    # Start caps every run's time (TrainingCaps.admit), so the preview's budget is the cap's.
    assert preview.schedule.max_time == lab.caps.max_seconds == 3600
    assert "This server stops every run after 1:00:00: were the run slower than 0.0111 steps a second, the decay " \
           "would follow the clock" in preview.text and "With a" not in preview.text
    longer = lab.lr_preview(settings=hyper(max_time=7200))
    assert longer.schedule.max_time == 3600 and "With a 1:00:00 budget" in longer.text
    assert "You asked for 2:00:00; this server stops every run after 1:00:00" in longer.text
    timed = lab.lr_preview(settings=hyper(max_time=90))
    assert "With a 1:30 budget" in timed.text and "This server" not in timed.text and len(timed.figure.axes) == 2
    assert lab.lr_preview(settings=hyper(warmup_steps=500, max_steps=20)).schedule.final < 3e-3


@pytest.mark.parametrize("changes, message", [
    (dict(min_lr=1.0), "min_lr must be between 0 and learning_rate"),
    (dict(max_steps=0), "max_steps must be between 1"),
    (dict(warmup_steps=1.5), "warmup_steps must be a whole number"),
    (dict(learning_rate="fast"), "learning_rate must be a number"),
    (dict(lr_schedule="zigzag"), "lr_schedule must be one of"),
])
def test_invalid_settings_give_the_configs_message_not_a_crash(lab, changes, message):
    preview = lab.lr_preview(settings=hyper(**changes))
    assert preview.schedule is None and preview.text.startswith("**Problem**: ") and message in preview.text
    assert message in preview.data()["problem"] and message in preview.figure.axes[0].texts[0].get_text()


def test_the_live_view_carries_the_clip_threshold_and_the_doctors_reading(lab):
    views = start(lab, max_steps=20, grad_clip=0.5)
    final = views[-1]
    assert "clipped at 0.5" in final.dynamics.axes[1].get_title()
    assert final.doctor is not None and final.doctor.markdown.startswith("**Loss doctor**")
    report = lab.loss_doctor(owner=final.owner, run_id=final.run_id)
    assert report.diagnoses and report.view.markdown == final.doctor.markdown
    assert report.data()[0]["kind"] == report.diagnoses[0].kind


def test_a_diverging_run_is_diagnosed_and_its_fix_is_valid_settings(lab):
    final = start(lab, learning_rate=1e4, min_lr=1e3, grad_clip=0.0, max_steps=30)[-1]
    report = lab.loss_doctor(owner=final.owner, run_id=final.run_id)
    assert report.diagnoses[0].kind == "diverged" and "diverged" in report.view.fixes
    fix = lab.doctor_fix(owner=final.owner, run_id=final.run_id, kind="diverged")
    assert fix["learning_rate"] == pytest.approx(1e4 / 3, rel=1e-2) and fix["grad_clip"] == 1.0
    settings = {**hyper(learning_rate=1e4, min_lr=1e3, grad_clip=0.0, max_steps=30), **fix}
    ModelConfig.from_form(settings), TrainConfig.from_form(settings)
    with pytest.raises(RunError, match="no longer reads that"):
        lab.doctor_fix(owner=final.owner, run_id=final.run_id, kind="overfitting")


def test_the_doctor_without_a_run_says_what_to_do(lab):
    with pytest.raises(RunError, match="start one on the Train tab"):
        lab.loss_doctor(owner="", run_id="")
    with pytest.raises(RunError):
        lab.loss_doctor(owner="", run_id="0123456789abcdef")
