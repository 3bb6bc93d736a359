"""The gradient norm panel: the trainer counts the steps clipping acted on in each log window (a real
run is the oracle), old logs without the count still read, and the summary's share clipped, median
and spikes are right on synthetic norms."""

import json
import random

import pytest

from gptlab.events import Event, StepEvent
from gptlab.insight.gradnorm import grad_norm_summary, spike_steps
from gptlab.plots import dynamics_figure
from gptlab.runfolder import read_events


def step(n, norm, clipped=None, window=None, loss=2.0):
    return StepEvent(n, loss=loss, lr=1e-3, grad_norm=norm, tokens_seen=n * 64, tokens_per_sec=1000.0,
                     elapsed=n * 0.1, eta=None, clipped=clipped, window=window)


def test_an_old_step_line_without_the_clipped_count_still_reads():
    line = {"event": "step", "step": 3, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.75, "tokens_seen": 384,
            "tokens_per_sec": 1234.5, "elapsed": 1.5, "eta": None}
    event = Event.from_dict(json.loads(json.dumps(line)))
    assert event.clipped is None and event.window is None and event.grad_norm == 0.75
    new = step(4, 1.5, clipped=3, window=10)
    assert Event.from_dict(json.loads(json.dumps(new.as_dict()))) == new


def test_a_real_run_counts_every_step_whose_norm_was_over_the_threshold(tiny_run):
    steps = [e for e in read_events(tiny_run) if isinstance(e, StepEvent)]  # log_interval 1, grad_clip 1.0
    assert sum(e.window for e in steps) == 20
    assert [e.clipped for e in steps] == [int(e.grad_norm > 1.0) for e in steps]


def test_the_trainer_counts_clipped_steps_in_each_log_window(tmp_path, tiny_text, tiny_model_config,
                                                             tiny_train_config):
    import torch

    from gptlab.training import TrainingRun

    data = tmp_path / "tiny.txt"
    data.write_text(tiny_text, encoding="utf-8")
    for clip, expected in ((1e-9, [5, 5, 2]), (0.0, [0, 0, 0])):
        torch.manual_seed(0)
        run = TrainingRun.new(tiny_model_config(), tiny_train_config(max_steps=12, log_interval=5, grad_clip=clip),
                              tmp_path / f"run-{clip}", data_paths=[data])
        steps = [e for e in run.events() if isinstance(e, StepEvent)]
        assert [e.step for e in steps] == [5, 10, 12] and [e.window for e in steps] == [5, 5, 2]
        assert [e.clipped for e in steps] == expected


def test_the_share_clipped_is_exact_with_counts_and_from_logged_steps_without():
    exact = grad_norm_summary([step(10, 2.0, clipped=4, window=10), step(20, 0.5, clipped=1, window=10)], 1.0)
    assert exact.exact and exact.share_clipped == pytest.approx(5 / 20) and exact.median == 1.25
    assert "25% of steps clipped at 1" in exact.caption()
    legacy = grad_norm_summary([step(10, 2.0), step(20, 0.5), step(30, 0.7), step(40, 3.0)], 1.0)
    assert not legacy.exact and legacy.share_clipped == 0.5 and "~50% clipped at 1" in legacy.caption()
    off = grad_norm_summary([step(10, 2.0, clipped=0, window=10)], 0.0)
    assert off.share_clipped is None and "no clipping" in off.caption()
    assert grad_norm_summary([], 1.0).caption() == "gradient norm: no steps yet"
    spiky = grad_norm_summary([step(i, 9.0 if i == 30 else 1.0, clipped=0, window=1) for i in range(1, 41)], 10.0)
    assert spiky.spikes == (30,) and spiky.caption() == "gradient norm: 0% of steps clipped at 10, 1 spike"


def test_spikes_are_found_where_planted_and_noise_has_none():
    rng = random.Random(0)
    norms = [1.0 + 0.2 * rng.random() for _ in range(200)]
    assert spike_steps(list(range(200)), norms) == []
    for at in (60, 120, 180):
        norms[at] = 8.0
    assert spike_steps(list(range(200)), norms) == [60, 120, 180]
    # The steep fall of the first steps is not a spike, though each early norm dwarfs later ones.
    falling = [50.0 / (1 + i) + 0.5 for i in range(100)]
    assert spike_steps(list(range(100)), falling) == []


def test_the_dynamics_figure_draws_the_clip_threshold_and_the_share():
    events = [step(i, 1.5 if i % 4 == 0 else 0.5, clipped=int(i % 4 == 0), window=1) for i in range(1, 41)]
    fig = dynamics_figure(events, grad_clip=1.0)
    norm_ax = fig.axes[1]
    assert "25% of steps clipped at 1" in norm_ax.get_title()
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in norm_ax.get_lines())
    assert "no clipping" in dynamics_figure(events, grad_clip=0.0).axes[1].get_title()
