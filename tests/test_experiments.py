"""Settings as a command, a file and a URL (round trips), the changes between runs, and the
scaling-law fit on synthetic data with a known exponent."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shlex
from dataclasses import asdict

import numpy as np
import pytest

from gptlab.config import DEFAULT_PRESET, PRESETS, ConfigError
from gptlab.experiments.changes import Change, changes, describe, flatten
from gptlab.experiments.scaling import fit_power_law, predict
from gptlab.experiments.settings import (Settings, load_settings_json, settings_from_query, settings_json,
                                         settings_query, train_command)

CHANGED = {"learning_rate": 0.0031, "n_layer": 3, "bias": False, "lr_schedule": "wsd", "batch_size": 6,
           "max_steps": 4, "eval_interval": 2, "sample_interval": 0, "seed": 7, "dropout": 0.1}


# -- the command -------------------------------------------------------------------------------------

def test_the_command_names_only_what_differs_from_the_preset():
    assert train_command(Settings.of(DEFAULT_PRESET)) == "python -m gptlab train"
    command = train_command(Settings.of("tiny", {"learning_rate": 0.004, "bias": False}), data=["my text.txt"])
    assert command == "python -m gptlab train --data 'my text.txt' --preset tiny --no-bias --learning-rate 0.004"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_command_parses_back_to_the_same_configs(preset):
    from gptlab.cli import _overrides, build_parser
    from gptlab.config import ModelConfig, TrainConfig

    settings = Settings.of(preset, {"learning_rate": 1 / 3 * 1e-2, "n_embd": 96, "n_head": 4, "bias": False,
                                    "patience": 3, "max_time": 12.5})
    args = build_parser().parse_args(shlex.split(train_command(settings))[3:])
    chosen = args.preset or DEFAULT_PRESET
    assert ModelConfig.preset(chosen, **_overrides(args, ModelConfig)) == settings.model
    assert TrainConfig.preset(chosen, **_overrides(args, TrainConfig)) == settings.train


def test_running_the_command_trains_the_same_config(tmp_path, tiny_text):
    from gptlab.checkpoint import load_checkpoint
    from gptlab.cli import main

    data = tmp_path / "text.txt"
    data.write_text(tiny_text, encoding="utf-8")
    settings = Settings.of("tiny", CHANGED)
    argv = shlex.split(train_command(settings, data=[str(data)], out=str(tmp_path / "run")))[3:] + ["--device", "cpu"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    trained = load_checkpoint(tmp_path / "run" / "last")
    assert trained.model_config == settings.model.replace(vocab_size=trained.model_config.vocab_size)
    assert trained.train_config == settings.train.replace(device="cpu")


# -- the file ------------------------------------------------------------------------------------------

def test_a_settings_file_round_trips():
    settings = Settings.of("tiny", CHANGED)
    text = settings_json(settings)
    assert json.loads(text)["settings"]["learning_rate"] == 0.0031
    assert load_settings_json(text) == settings
    assert load_settings_json(text.encode()) == settings


@pytest.mark.parametrize("text, says", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "not a GPT Lab settings file"),
    ('{"format": "gptlab-settings", "version": 9, "settings": {}}', "version 9"),
    ('{"format": "gptlab-settings", "version": 1, "preset": "huge", "settings": {}}', "Unknown preset 'huge'"),
    ('{"format": "gptlab-settings", "version": 1, "settings": {"learning_rat": 0.1}}', "Unknown setting(s): learning_rat"),
    ('{"format": "gptlab-settings", "version": 1, "settings": {"n_layer": "six"}}', "n_layer"),
    ('{"format": "gptlab-settings", "version": 1, "settings": {"n_head": 5}}', "divisible by n_head"),
    ('{"format": "gptlab-settings", "version": 1, "settings": {"vocab_size": 5}}', "Unknown setting(s): vocab_size"),
    ('{"format": "gptlab-settings", "version": 1, "settings": []}', "object of name: value pairs"),
])
def test_a_bad_settings_file_names_the_problem(text, says):
    with pytest.raises(ConfigError, match=None) as caught:
        load_settings_json(text)
    assert says in str(caught.value)


def test_a_settings_file_that_is_not_text_or_too_big_is_refused():
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings_json(b"\xff\xfe\x00junk")
    with pytest.raises(ConfigError, match="few hundred bytes"):
        load_settings_json(b" " * 100_000)


# -- the URL ----------------------------------------------------------------------------------------------

def test_a_url_query_round_trips():
    settings = Settings.of("tiny", CHANGED)
    query = settings_query(settings)
    assert query.startswith("preset=tiny&") and "bias=false" in query
    assert settings_from_query(query) == settings
    assert settings_from_query(dict(p.split("=") for p in query.split("&"))) == settings


def test_a_url_without_settings_restores_nothing():
    assert settings_from_query("") is None
    assert settings_from_query({}) is None


@pytest.mark.parametrize("query, says", [
    ("preset=tiny&n_layer=2.5", "n_layer in the link must be a whole number"),
    ("learning_rate=fast", "learning_rate in the link must be a number"),
    ("learning_rate=nan", "learning_rate in the link must be a number"),
    ("bias=maybe", "bias in the link must be true or false"),
    ("colour=red", "Unknown setting(s): colour"),
    ("preset=nope", "Unknown preset"),
    ("dropout=1.5", "dropout must be in [0, 1)"),
])
def test_a_bad_url_names_the_field(query, says):
    with pytest.raises(ConfigError) as caught:
        settings_from_query(query)
    assert says in str(caught.value)


def test_off_in_a_url_means_none():
    assert settings_from_query("patience=0").train.patience is None
    assert settings_from_query("patience=4").train.patience == 4


# -- changes -------------------------------------------------------------------------------------------------

def test_changes_list_what_differs_in_order_and_ignore_the_vocabulary():
    a = Settings.of("tiny")
    b = Settings.of("tiny", {"learning_rate": 0.004, "n_layer": 4})
    before = flatten(asdict(a.model), asdict(a.train))
    after = flatten(asdict(b.model.replace(vocab_size=99)), asdict(b.train))
    found = changes(before, after)
    assert found == [Change("n_layer", 2, 4), Change("learning_rate", a.train.learning_rate, 0.004)]
    assert describe(found) == f"n_layer 2 → 4, learning_rate {a.train.learning_rate:g} → 0.004"
    assert changes(before, before) == [] and describe([]) == "same settings"


def test_changes_count_a_setting_only_one_run_has_and_shorten_a_long_list():
    found = changes({"a": 1}, {"b": 2, "patience": None})
    assert found == [Change("b", None, 2), Change("a", 1, None)]  # patience: None in both
    many = [Change(f"s{i}", i, i + 1) for i in range(6)]
    assert describe(many, limit=2) == "s0 0 → 1, s1 1 → 2 (+4 more)"
    assert str(Change("patience", None, 3)) == "patience off → 3"


# -- the power law ------------------------------------------------------------------------------------------

def test_the_fit_recovers_a_known_exponent_exactly():
    n = np.array([1e5, 3e5, 1e6, 3e6, 1e7])
    fit = fit_power_law(n, 40.0 * n**-0.3 + 1.2)
    assert fit.alpha == pytest.approx(0.3, rel=1e-4)
    assert fit.a == pytest.approx(40.0, rel=1e-3) and fit.c == pytest.approx(1.2, abs=1e-4)
    assert fit.rmse < 1e-6


def test_the_fit_is_the_least_squares_one_on_noisy_data():
    rng = np.random.default_rng(0)
    n = np.geomspace(1e4, 1e7, 5)
    loss = 12.0 * n**-0.25 + 1.5 + rng.normal(0, 0.01, n.size)
    fit = fit_power_law(n, loss)
    assert 0.15 < fit.alpha < 0.35
    sse = float(np.sum((loss - fit(n)) ** 2))
    for da, dalpha, dc in ((1.01, 0, 0), (1, 0.005, 0), (1, 0, 0.005), (0.99, -0.005, -0.005)):
        nudged = fit.a * da * n ** -(fit.alpha + dalpha) + fit.c + dc
        assert sse <= float(np.sum((loss - nudged) ** 2)) + 1e-12


def test_the_prediction_states_the_spread_of_leave_one_out_refits():
    rng = np.random.default_rng(1)
    n = np.geomspace(1e4, 1e6, 5)
    loss = 8.0 * n**-0.2 + 1.0 + rng.normal(0, 0.02, n.size)
    p = predict(n, loss, 3e6)
    assert p.refits == 5 and p.low <= p.loss <= p.high and p.high > p.low
    exact = predict(n, 8.0 * n**-0.2 + 1.0, 3e6)
    assert exact.loss == pytest.approx(8.0 * 3e6**-0.2 + 1.0, rel=1e-4)
    assert exact.high - exact.low < 1e-3
    assert predict(n[:3], loss[:3], 3e6).refits == 0


@pytest.mark.parametrize("n, loss", [([1, 2], [3, 2]), ([1, 1, 1], [3, 2, 1]), ([1, 2, -3], [1, 1, 1]),
                                     ([1, 2, 3], [1, math.nan, 1]), ([1, 2, 3], [1, 2])])
def test_a_ladder_that_cannot_be_fitted_says_what_to_add(n, loss):
    with pytest.raises(ValueError):
        fit_power_law(n, loss)


# -- run history -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """runs/a and runs/b: the tiny preset for 4 steps, b with a higher learning rate and one more layer."""
    from gptlab.cli import main
    from tests.conftest import TINY_TEXT

    root = tmp_path_factory.mktemp("history")
    (root / "text.txt").write_text(TINY_TEXT, encoding="utf-8")
    common = ["train", "--data", str(root / "text.txt"), "--preset", "tiny", "--max-steps", "4", "--eval-interval",
              "2", "--sample-interval", "0", "--device", "cpu"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(common + ["--out", str(root / "runs" / "a")]) == 0
        assert main(common + ["--out", str(root / "runs" / "b"), "--learning-rate", "0.01", "--n-layer", "3"]) == 0
    return root / "runs"


def test_the_history_reads_each_run_as_it_was_started(two_runs):
    from gptlab.experiments.history import read_runs, with_changes

    a, b = read_runs(two_runs)
    assert (a.name, b.name) == ("a", "b") and a.status == b.status == "finished"
    assert a.step == 4 and a.tokens > 0 and a.elapsed > 0 and a.tokens_per_sec > 0
    assert a.best_val_loss is not None and a.val_loss is not None and a.preset == "~tiny"
    assert a.bits_per_char == pytest.approx(a.best_val_loss / math.log(2))  # char: a token per character
    assert a.data == "text.txt"  # the file's name, not where it lives
    rows = with_changes([a, b])
    assert rows[0][1] == [] and [str(c) for c in rows[1][1]] == ["n_layer 2 → 3", "learning_rate 0.003 → 0.01"]
    assert [str(c) for c in with_changes([a, b], against=b)[0][1]] == ["n_layer 3 → 2", "learning_rate 0.01 → 0.003"]


def test_a_resumed_run_keeps_the_settings_it_started_with(two_runs, tmp_path):
    import shutil

    from gptlab.cli import main
    from gptlab.experiments.history import read_run

    run = tmp_path / "a"
    shutil.copytree(two_runs / "a", run)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--resume", str(run), "--max-steps", "6"]) == 0
    record = read_run(run)
    assert record.train["max_steps"] == 4 and record.step == 6


def test_a_folder_that_is_not_a_run_is_left_out(two_runs, tmp_path):
    import shutil

    from gptlab.experiments.history import read_runs

    shutil.copytree(two_runs, tmp_path / "runs")
    (tmp_path / "runs" / "notes").mkdir()
    (tmp_path / "runs" / "broken" / "init").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "init" / "config.json").write_text("{not json")
    assert [r.name for r in read_runs(tmp_path / "runs")] == ["a", "b"]
    assert read_runs(tmp_path / "nowhere") == []


def test_the_runs_command_prints_the_table_with_changes(two_runs, capsys):
    from gptlab.cli import main

    assert main(["runs", "--dir", str(two_runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "started"] and len(lines) == 3
    assert lines[1].startswith("a ") and lines[1].rstrip().endswith("–")
    assert lines[2].startswith("b ") and lines[2].endswith("n_layer 2 → 3, learning_rate 0.003 → 0.01")
    assert main(["runs", "--dir", str(two_runs), "--against", "b"]) == 0
    assert capsys.readouterr().out.splitlines()[2].endswith("same settings")


def test_the_runs_command_explains_an_empty_folder_or_unknown_run(two_runs, tmp_path, capsys):
    from gptlab.cli import main

    assert main(["runs", "--dir", str(tmp_path)]) == 2
    assert "There are no runs in" in capsys.readouterr().err
    assert main(["runs", "--dir", str(two_runs), "--against", "zzz"]) == 2
    assert "choose one of: a, b" in capsys.readouterr().err


# -- sweeps ------------------------------------------------------------------------------------------------------

def test_a_sweep_is_the_grid_of_its_axes_first_axis_slowest():
    from gptlab.experiments.sweep import grid, parse_axis

    base = Settings.of("tiny")
    points = grid(base, [parse_axis("learning_rate=1e-3,3e-3"), parse_axis("model_size=2x32,3x48")])
    assert [p.label for p in points] == ["learning_rate=0.001, model_size=2x32", "learning_rate=0.001, model_size=3x48",
                                         "learning_rate=0.003, model_size=2x32", "learning_rate=0.003, model_size=3x48"]
    last = points[-1].settings
    assert (last.train.learning_rate, last.model.n_layer, last.model.n_embd) == (0.003, 3, 48)
    assert last.model.n_embd % last.model.n_head == 0
    assert points[0].folder_name == "learning_rate=0.001_model_size=2x32"
    ratio = base.train.min_lr / base.train.learning_rate
    assert [p.settings.train.min_lr for p in points] == pytest.approx([1e-3 * ratio] * 2 + [3e-3 * ratio] * 2)


@pytest.mark.parametrize("sets, says", [
    (["learning_rate=1e-3"], "between 2 and 6 values"),
    (["learning_rate=1,2,3,4,5,6,7"], "between 2 and 6 values"),
    (["colour=1,2"], "'colour' cannot be swept"),
    (["learning_rate"], "--set needs a setting and its values"),
    (["n_layer=2,2.5"], "n_layer in the sweep must be a whole number, got '2.5'. Fix the sweep"),
    (["model_size=2x32,big"], "layers x width"),
    (["dropout=0.1,0.1"], "repeat"),
    (["learning_rate=1e-3,2e-3,3e-3,4e-3", "n_layer=1,2,3,4"], "4 x 4 = 16 runs; this server runs at most 12"),
    (["learning_rate=1e-3,2e-3", "learning_rate=3e-3,4e-3"], "Both axes sweep learning_rate"),
    (["dropout=0.1,1.5"], "The run dropout=1.5 would not be valid: dropout must be in [0, 1)"),
])
def test_a_bad_sweep_names_the_setting_and_starts_nothing(sets, says):
    from gptlab.experiments.sweep import grid, parse_axis

    with pytest.raises(ConfigError) as caught:
        grid(Settings.of("tiny"), [parse_axis(s) for s in sets])
    assert says in str(caught.value)


def test_the_sweep_command_trains_each_point_and_marks_the_best(tmp_path, tiny_text, capsys):
    from gptlab.cli import main
    from gptlab.experiments.history import read_runs

    data = tmp_path / "text.txt"
    data.write_text(tiny_text, encoding="utf-8")
    argv = ["sweep", "--set", "learning_rate=1e-4,1e-2", "--preset", "tiny", "--max-steps", "6", "--eval-interval",
            "3", "--sample-interval", "0", "--device", "cpu", "--data", str(data), "--out", str(tmp_path / "sweep")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["run", "status"] and len(lines) == 3
    records = read_runs(tmp_path / "sweep")
    assert sorted(r.train["learning_rate"] for r in records) == [1e-4, 1e-2]
    best = min(records, key=lambda r: r.val_loss)
    assert [line.startswith(best.name) for line in lines[1:]].count(True) == 1
    assert next(line for line in lines[1:] if line.startswith(best.name)).endswith("★")
    assert main(argv) == 2  # the same folders again: refused, nothing overwritten
    assert "already holds runs" in capsys.readouterr().err


def test_a_failed_run_shows_its_reason_and_is_never_the_best():
    from gptlab.experiments.history import RunRecord
    from gptlab.experiments.sweep import ended_badly, results_table

    def record(name, status, val, reason=""):
        return RunRecord(folder=None, name=name, status=status, reason=reason, started=0, model={}, train={},
                         preset="tiny", data="x", step=5, tokens=100, elapsed=2.0, best_val_loss=val,
                         train_loss=val, val_loss=val, stats={"tokens": 100, "characters": 100})
    rows = results_table([record("a", "finished", 2.0), record("b", "failed", math.nan, "the loss became nan"),
                          record("c", "finished", 1.5)])
    assert [r[-1] for r in rows] == ["", "", "★"]
    assert rows[1][1] == "failed" and rows[1][3] == "–"
    assert ended_badly([record("b", "failed", math.nan, "the loss became nan")]) == [("b", "failed", "the loss became nan")]
    assert rows[2][4] == f"{1.5 / math.log(2):.3f}" and rows[2][5] == f"{math.exp(1.5):.2f}"


def test_an_exploding_learning_rate_ends_as_diverged_and_the_sweep_goes_on(tmp_path, tiny_text, capsys):
    from gptlab.cli import main
    from gptlab.experiments.history import read_runs

    data = tmp_path / "text.txt"
    data.write_text(tiny_text, encoding="utf-8")
    assert main(["sweep", "--set", "learning_rate=10,3e-3", "--preset", "tiny", "--max-steps", "6", "--grad-clip",
                 "0", "--warmup-steps", "0", "--eval-interval", "3", "--sample-interval", "0", "--device", "cpu",
                 "--data", str(data), "--out", str(tmp_path / "sweep")]) == 0
    records = {r.train["learning_rate"]: r for r in read_runs(tmp_path / "sweep")}
    assert records[10.0].status == "diverged" and "Lower the learning rate" in records[10.0].reason
    assert records[3e-3].status == "finished" and records[3e-3].step == 6
    out = capsys.readouterr().out
    assert "diverged: the loss" in out and out.count("★") == 1


def test_a_ladder_whose_loss_rises_with_size_fits_no_law_and_says_why():
    n = np.array([1e4, 1e5, 1e6, 1e7])
    with pytest.raises(ValueError, match="does not fall as the model grows"):
        fit_power_law(n, [2.0, 2.1, 2.3, 2.4])
    assert fit_power_law(n, 5 * n**-0.2 + 1).a > 0
