"""The loss doctor on synthetic curves with a known answer: each diagnosis fires on the curve it
names and not on its look-alikes (a healthy curve gives only 'healthy', noise is not divergence, a
single bump is not overfitting), and every fix is settings that the configs accept."""

import math
import random
from dataclasses import asdict

import pytest
from hypothesis import given, settings, strategies as st

from gptlab.config import ModelConfig, TrainConfig
from gptlab.events import DoneEvent, EvalEvent, StepEvent
from gptlab.insight.doctor import FIX_SETTINGS, KINDS, diagnose
from gptlab.insight.dynamics_plots import doctor_markdown

V = 65
LN_V = math.log(V)
TRAIN = asdict(TrainConfig(max_steps=300, warmup_steps=10, learning_rate=1e-3, min_lr=1e-4))
MODEL = asdict(ModelConfig(vocab_size=V))


def curve(losses, norms=None, evals=(), done="finished", reason="reached max_steps (300)", clip=1.0):
    events = []
    for i, loss in enumerate(losses, 1):
        norm = norms[i - 1] if norms else 0.5
        events.append(StepEvent(i, loss=loss, lr=1e-3, grad_norm=norm, tokens_seen=i * 64, tokens_per_sec=1e3,
                                elapsed=i * 0.1, eta=None, clipped=int(bool(clip) and norm > clip), window=1))
    for step, train, val in evals:
        best = min(v for s, _, v in evals if s <= step)
        events.append(EvalEvent(step, train_loss=train, val_loss=val, train_ppl=math.exp(train), val_ppl=math.exp(val),
                                best_val_loss=best, is_best=val == best, tokens_seen=step * 64, elapsed=step * 0.1))
    events.sort(key=lambda e: (e.step, isinstance(e, EvalEvent)))
    if done:
        events.append(DoneEvent(len(losses), status=done, reason=reason, tokens_seen=len(losses) * 64,
                                elapsed=30.0, best_val_loss=None))
    return events


def healthy_losses(n=300, noise=0.05, seed=0):
    rng = random.Random(seed)
    return [1.5 + (LN_V - 1.5) * math.exp(-i / 25) + rng.gauss(0, noise) for i in range(n)]


def healthy_evals(n=300):
    return [(s, 1.5 + (LN_V - 1.5) * math.exp(-s / 25), 1.6 + (LN_V - 1.6) * math.exp(-s / 25))
            for s in range(0, n + 1, 50)]


def kinds(events, train=TRAIN, model=MODEL):
    return [d.kind for d in diagnose(events, V, train, model)]


def assert_fix_is_valid(diagnosis, train=TRAIN, model=MODEL):
    assert diagnosis.fix and diagnosis.fix_label and set(diagnosis.fix) <= set(FIX_SETTINGS)
    model_fix = {k: v for k, v in diagnosis.fix.items() if k in MODEL}
    train_fix = {k: v for k, v in diagnosis.fix.items() if k in TRAIN and k not in MODEL}
    assert set(model_fix) | set(train_fix) == set(diagnosis.fix)
    ModelConfig.from_dict({**model, **model_fix})
    TrainConfig.from_dict({**train, **train_fix})


def test_a_healthy_curve_is_healthy_and_only_that():
    found = diagnose(curve(healthy_losses(), evals=healthy_evals()), V, TRAIN, MODEL)
    assert [d.kind for d in found] == ["healthy"] and found[0].fix == {}
    for seed in range(5):  # noisier mini-batches are still healthy
        assert kinds(curve(healthy_losses(noise=0.15, seed=seed), evals=healthy_evals())) == ["healthy"]


def test_too_early_to_tell_and_every_kind_is_named():
    assert diagnose(curve(healthy_losses(5), done=None), V, TRAIN, MODEL) == []
    assert "too early" in doctor_markdown([])
    assert set(KINDS) == {"diverged", "plateau", "overfitting", "spiky", "too_slow", "healthy"}


def test_a_nan_divergence_lowers_the_learning_rate_and_turns_clipping_on():
    events = curve(healthy_losses(40), done="failed", reason="the loss became nan at step 41; the weights were not "
                                                              "updated. Lower the learning rate (it was 1.00e-03)")
    train = {**TRAIN, "grad_clip": 0.0}
    [found] = diagnose(events, V, train, MODEL)
    assert found.kind == "diverged" and "the loss became nan at step 41" in found.message
    assert found.fix == {"learning_rate": pytest.approx(1e-3 / 3, rel=1e-2), "min_lr": pytest.approx(1e-4 / 3, rel=1e-2),
                         "grad_clip": 1.0}
    assert_fix_is_valid(found, train)
    # Even a NaN in the first few steps is read.
    early = curve([LN_V, LN_V], done="failed", reason="the loss became nan at step 3")
    assert kinds(early) == ["diverged"]
    # As the trainer ends such a run now: status "diverged", for a NaN or a loss far above ln V.
    blown = curve([LN_V, LN_V], done="diverged", reason="the loss reached 21.32 at step 2, above 6.87; the last ...")
    assert kinds(blown) == ["diverged"] and "the loss reached 21.32 at step 2" in diagnose(blown, V, TRAIN, MODEL)[0].message


def test_a_loss_that_climbs_back_above_random_guessing_is_diverging():
    losses = healthy_losses(150) + [1.6 + 0.05 * i for i in range(150)]  # up to ~9, far above ln V
    found = diagnose(curve(losses), V, TRAIN, MODEL)
    assert found[0].kind == "diverged" and "diverging" in found[0].message
    assert "grad_clip" not in found[0].fix  # clipping is on already
    assert_fix_is_valid(found[0])


def test_noise_and_a_short_bump_are_not_divergence():
    losses = healthy_losses(noise=0.3)
    losses[200:203] = [3.5, 3.8, 3.2]  # three bad batches
    assert "diverged" not in kinds(curve(losses))


def test_a_plateau_near_ln_v_raises_the_learning_rate():
    rng = random.Random(1)
    losses = [LN_V - 0.02 * rng.random() for _ in range(300)]
    found = diagnose(curve(losses), V, TRAIN, MODEL)
    assert [d.kind for d in found] == ["plateau"]
    assert found[0].fix == {"learning_rate": 3e-3, "min_lr": 3e-4}
    assert_fix_is_valid(found[0])
    tiny = diagnose(curve(losses), V, {**TRAIN, "learning_rate": 1e-6, "min_lr": 1e-7}, MODEL)[0]
    assert tiny.fix == {"learning_rate": 1e-3, "min_lr": 1e-4} and "raise the learning rate to 0.001" in tiny.fix_label
    # Still in warmup: too early to call it a plateau.
    assert "plateau" not in kinds(curve(losses[:50], done=None), train={**TRAIN, "warmup_steps": 100})


def test_a_rising_validation_loss_while_training_falls_is_overfitting():
    evals = [(0, LN_V, LN_V), (50, 2.0, 2.1), (100, 1.7, 1.9), (150, 1.5, 1.95), (200, 1.3, 2.0), (250, 1.1, 2.1)]
    found = diagnose(curve(healthy_losses(250), evals=evals, done=None), V, TRAIN, MODEL)
    overfit = next(d for d in found if d.kind == "overfitting")
    assert "step 100" in overfit.message and "1.900" in overfit.message and "'best'" in overfit.message
    assert overfit.fix == {"dropout": 0.1, "patience": 3}
    assert_fix_is_valid(overfit)
    more = next(d for d in diagnose(curve(healthy_losses(250), evals=evals, done=None), V,
                                    {**TRAIN, "patience": 5}, {**MODEL, "dropout": 0.2}) if d.kind == "overfitting")
    assert more.fix == {"dropout": 0.3}
    most = next(d for d in diagnose(curve(healthy_losses(250), evals=evals, done=None), V,
                                    {**TRAIN, "patience": 5}, {**MODEL, "dropout": 0.5}) if d.kind == "overfitting")
    assert most.fix == {} and "More text" in most.message  # nothing left to turn up: more data is the fix


def test_a_single_bump_or_a_rising_training_loss_is_not_overfitting():
    bump = [(0, LN_V, LN_V), (50, 2.0, 2.1), (100, 1.7, 1.9), (150, 1.6, 1.95), (200, 1.5, 1.85), (250, 1.4, 1.8)]
    assert "overfitting" not in kinds(curve(healthy_losses(250), evals=bump, done=None))
    both_rise = [(0, LN_V, LN_V), (50, 2.0, 2.1), (100, 2.1, 2.2), (150, 2.2, 2.3), (200, 2.3, 2.4)]
    assert "overfitting" not in kinds(curve(healthy_losses(200), evals=both_rise, done=None))


def test_spiky_gradient_norms_turn_clipping_on_or_lower_the_rate():
    rng = random.Random(2)
    norms = [0.5 + 0.1 * rng.random() for _ in range(300)]
    for at in range(60, 300, 40):
        norms[at] = 5.0
    events = curve(healthy_losses(), norms=norms, evals=healthy_evals(), clip=0.0)
    found = diagnose(events, V, {**TRAIN, "grad_clip": 0.0}, MODEL)
    spiky = next(d for d in found if d.kind == "spiky")
    assert spiky.fix == {"grad_clip": 1.0} and "first at step 61" in spiky.message
    clipped = next(d for d in diagnose(curve(healthy_losses(), norms=norms), V, TRAIN, MODEL) if d.kind == "spiky")
    assert clipped.fix == {"learning_rate": 5e-4, "min_lr": 5e-5} and "2% of steps were clipped" in clipped.message
    assert_fix_is_valid(clipped)
    one = [0.5] * 300
    one[150] = 5.0
    assert "spiky" not in kinds(curve(healthy_losses(), norms=one))


def test_a_run_that_ends_while_the_loss_still_falls_steeply_is_too_slow():
    steady = [LN_V - 2.5 * i / 300 for i in range(300)]  # a straight fall to the very end
    found = diagnose(curve(steady), V, TRAIN, MODEL)
    assert [d.kind for d in found] == ["too_slow"]
    assert found[0].fix == {"learning_rate": 2e-3, "min_lr": 2e-4}
    brisk = {**TRAIN, "learning_rate": 6e-3, "min_lr": 6e-4, "max_time": 120.0}
    slow = diagnose(curve(steady), V, brisk, MODEL)[0]
    assert slow.fix == {"max_steps": 600, "max_time": 240.0}
    for d, train in ((found[0], TRAIN), (slow, brisk)):
        assert_fix_is_valid(d, train)
    assert "too_slow" not in kinds(curve(steady, done=None))  # still running: the end is not known yet


def test_the_markdown_lists_each_diagnosis_with_its_fix():
    found = diagnose(curve([LN_V] * 300), V, TRAIN, MODEL)
    text = doctor_markdown(found, finished=True)
    assert "**Not learning**" in text and "learning_rate = 0.003" in text and "final reading" in text


@settings(max_examples=60, deadline=None)
@given(losses=st.lists(st.floats(0.0, 20.0), max_size=80), norms_scale=st.floats(0.01, 100.0),
       vals=st.lists(st.floats(0.0, 20.0), max_size=8), lr=st.floats(1e-7, 1.0), clip=st.sampled_from([0.0, 0.5, 1.0]),
       dropout=st.sampled_from([0.0, 0.3, 0.5, 0.9]), done=st.sampled_from([None, "finished", "failed", "stopped"]))
def test_any_curve_gets_a_reading_whose_fixes_the_configs_accept(losses, norms_scale, vals, lr, clip, dropout, done):
    train = {**TRAIN, "learning_rate": lr, "min_lr": lr / 10, "grad_clip": clip}
    model = {**MODEL, "dropout": dropout}
    norms = [norms_scale * (1 + (i % 7 == 0) * 9) for i in range(len(losses))]
    evals = [(10 * i, v, v) for i, v in enumerate(vals)]
    found = diagnose(curve(losses, norms=norms, evals=evals, done=done, reason="the loss became nan at step 3",
                           clip=clip), V, train, model)
    assert [d.kind for d in found] == list(dict.fromkeys(d.kind for d in found)) and set(d.kind for d in found) <= set(KINDS)
    assert "healthy" not in [d.kind for d in found] or len(found) == 1
    for d in found:
        if d.fix:
            assert_fix_is_valid(d, train, model)
