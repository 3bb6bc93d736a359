"""The learning-rate preview: it is the trainer's own schedule (TrainConfig.lr_at, proved by a spy and
by the lr of every StepEvent of a real run), sampled sparsely for long runs without missing a corner,
and described in words, the time budget included."""

import pytest

from gptlab.config import ConfigError, TrainConfig
from gptlab.events import StepEvent
from gptlab.insight.dynamics_plots import schedule_figure
from gptlab.insight.schedule import lr_schedule
from gptlab.runfolder import read_events


def test_the_preview_matches_the_lr_of_every_step_of_a_real_run(tiny_run, tiny_train_config):
    steps = [e for e in read_events(tiny_run) if isinstance(e, StepEvent)]
    schedule = lr_schedule(tiny_train_config())
    assert [e.step for e in steps] == list(schedule.steps) == list(range(1, 21))
    assert [e.lr for e in steps] == list(schedule.lrs)  # exactly: the same function, the same arguments


def test_the_preview_calls_the_configs_own_schedule_function(monkeypatch):
    calls = []
    original = TrainConfig.lr_at

    def spy(self, step, time_fraction=0.0):
        calls.append((step, time_fraction))
        return original(self, step, time_fraction)

    monkeypatch.setattr(TrainConfig, "lr_at", spy)
    schedule = lr_schedule(TrainConfig(max_steps=50, warmup_steps=5))
    assert [s for s, _ in calls[:50]] == list(range(50)) and len(schedule.lrs) == 50


@pytest.mark.parametrize("kind", ["cosine", "linear", "wsd", "constant"])
def test_a_long_run_is_sampled_without_missing_the_corners(kind):
    config = TrainConfig(max_steps=1_000_000_000, warmup_steps=12_345, lr_schedule=kind, min_lr=1e-5)
    schedule = lr_schedule(config)
    assert len(schedule.steps) <= 404 and schedule.steps[0] == 1 and schedule.steps[-1] == config.max_steps
    assert list(schedule.steps) == sorted(set(schedule.steps))
    assert {12_345, 12_346} <= set(schedule.steps)
    assert schedule.lrs == tuple(config.lr_at(s - 1) for s in schedule.steps)
    assert schedule.peak == config.learning_rate
    assert schedule.final == pytest.approx(config.learning_rate if kind == "constant" else config.min_lr, rel=1e-3)


def test_the_words_follow_the_settings():
    assert "never decays" in lr_schedule(TrainConfig(max_steps=20, warmup_steps=100)).summary
    assert "wsd" not in (text := lr_schedule(TrainConfig(lr_schedule="wsd", max_steps=1000, warmup_steps=0)).summary)
    assert "starts at its peak" in text and "cools down linearly" in text and "about step 700" in text
    assert "budget" not in lr_schedule(TrainConfig()).summary


def test_a_time_budget_is_explained_and_the_clock_curve_ends_at_min_lr():
    config = TrainConfig(max_time=120, max_steps=2000, warmup_steps=50)
    schedule = lr_schedule(config)
    assert "With a 2:00 budget, the decay follows the clock" in schedule.summary
    assert "(it would need 16.7 steps a second)" in schedule.summary and "not known before Start" in schedule.summary
    assert schedule.clock_seconds[0] == 0 and schedule.clock_seconds[-1] == 120
    assert schedule.clock_lrs[0] == config.learning_rate and schedule.clock_lrs[-1] == pytest.approx(config.min_lr)
    assert len(schedule_figure(schedule).axes) == 2 and len(schedule_figure(lr_schedule(TrainConfig())).axes) == 1
    constant = lr_schedule(TrainConfig(max_time=60, lr_schedule="constant"))
    assert "does not change a constant rate" in constant.summary


def test_invalid_settings_are_the_configs_own_error_and_draw_a_message():
    with pytest.raises(ConfigError, match="min_lr must be between 0 and learning_rate"):
        TrainConfig(learning_rate=1e-3, min_lr=1e-2)
    fig = schedule_figure(None, "min_lr must be between 0 and learning_rate")
    assert "min_lr" in fig.axes[0].texts[0].get_text()
