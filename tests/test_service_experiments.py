"""The service's experiments, without gradio: the run history with its changes, rename and delete,
the overlay, sweeps (the exercises, seeds and the scaling lab among them) and every limit they obey,
and the settings as a command, a file and a link."""

import json
import shlex

import pytest

from gptlab.config import ConfigError, ModelConfig, TrainConfig
from gptlab.runs import RunError
from gptlab.service import Lab, Limits
from gptlab.service import experiments as experiments_module
from gptlab.service.experiments import BUDGETS
from tests.forms import PASTE, SCRATCH, SHAKESPEARE, UPLOAD, hyper, tiny
from tests.test_service import TEXT, start


def sweep(lab, owner, axis_a, values_a, **kw) -> list:
    return list(lab.start_sweep(owner=owner, source=PASTE, files=None, pasted=TEXT, tokenizer="char", preset="tiny",
                                settings=tiny(**kw.pop("settings", {})), axis_a=axis_a, values_a=values_a,
                                budget_kind=BUDGETS[1], budget=4, **kw))


@pytest.fixture
def lab(tmp_path):
    return Lab(tmp_path / "runs", limits=Limits(max_params=200_000, poll_seconds=0.05))


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A lab with two finished runs of one owner: the second with a higher learning rate."""
    lab = Lab(tmp_path_factory.mktemp("experiments") / "runs", limits=Limits(poll_seconds=0.05))
    owner = start(lab, **tiny())[-1].owner
    start(lab, owner=owner, **tiny(learning_rate=0.01, sample_interval=2))
    return lab, owner


# -- history ------------------------------------------------------------------------------------------

def test_the_runs_table_lists_every_run_newest_first_with_its_changes(two):
    lab, owner = two
    table = lab.runs_table(owner=owner)
    assert table.headers[:2] == ["run", "status"] and table.headers[-1] == "changes"
    assert len(table.rows) == 2 and [r[1] for r in table.rows] == ["finished", "finished"]
    assert table.rows[0][-1] == "learning_rate 0.003 → 0.01, sample_interval 0 → 2" and table.rows[1][-1] == "–"
    against = lab.runs_table(owner=owner, against=table.ids[0])
    assert against.rows[1][-1] == "learning_rate 0.01 → 0.003, sample_interval 2 → 0" and against.rows[0][-1] == "same settings"
    assert lab.runs_table(owner="someone-else-entirely-0000").rows == []
    assert all("/" not in row[3] for row in table.rows)  # the data by file name, never a server path
    with pytest.raises(RunError, match="not in this browser's history"):
        lab.runs_table(owner=owner, against="0123456789abcdef")


def test_the_table_shows_the_settings_a_run_started_with_not_a_resume(two, tmp_path):
    lab, owner = two
    run_id = lab.runs_table(owner=owner).ids[1]
    list(lab.resume(owner=owner, run_id=run_id, max_steps=6, max_time=0))
    row = lab.runs_table(owner=owner).rows[1]
    assert row[-1] == "–" and lab.registry.get(owner, run_id).train["max_steps"] == 6


def test_rename_and_delete_a_run(lab):
    owner = start(lab, **tiny())[-1].owner
    run_id = lab.runs_table(owner=owner).ids[0]
    assert lab.rename_run(owner=owner, run_id=run_id, name="first try") == "Renamed to **first try**."
    assert lab.runs_table(owner=owner).rows[0][0] == "first try"
    with pytest.raises(RunError, match="1 to 80"):
        lab.rename_run(owner=owner, run_id=run_id, name=" ")
    with pytest.raises(RunError, match="Choose a run"):
        lab.delete_run(owner=owner, run_id="")
    assert "Deleted **first try**" in lab.delete_run(owner=owner, run_id=run_id)
    assert lab.runs_table(owner=owner).rows == []


# -- overlay ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x_axis", ["step", "tokens seen", "wall time (s)", "epoch"])
def test_the_overlay_draws_every_chosen_run_on_the_chosen_axis(two, x_axis):
    lab, owner = two
    ids = lab.runs_table(owner=owner).ids
    result = lab.overlay(owner=owner, run_ids=ids, x_axis=x_axis, smoothing=0.5)
    ax = result.figure.axes[0]
    assert ax.get_xlabel() == x_axis and len(ax.get_legend().get_texts()) == 2
    assert [name for name, _ in result.samples] == [lab.registry.get(owner, i).name for i in ids]
    assert result.samples[0][1] != "(no sample yet)" and result.samples[1][1] == "(no sample yet)"


@pytest.mark.parametrize("kw, says", [
    (dict(run_ids=[]), "Choose one or more runs"),
    (dict(run_ids=["a"] * 1 + [f"{i:016x}" for i in range(8)]), "at most 8 runs"),
    (dict(x_axis="colour"), "The x axis is one of"),
    (dict(smoothing="lots"), "Smoothing is a number"),
    (dict(smoothing=1.5), "below 1"),
])
def test_the_overlay_explains_a_bad_request(two, kw, says):
    lab, owner = two
    args = {**dict(owner=owner, run_ids=lab.runs_table(owner=owner).ids, x_axis="step", smoothing=0.0), **kw}
    with pytest.raises(ValueError, match=says):
        lab.overlay(**args)


# -- sweeps -------------------------------------------------------------------------------------------------

def test_a_two_value_sweep_trains_both_and_marks_the_best(lab):
    views = sweep(lab, "alice-owner-token-0001", "learning_rate", "1e-3, 1e-2")
    last = views[-1]
    assert last.progress == 100 and "finished" in last.status and "2 of 2 runs ended" in last.status
    assert [row[0] for row in last.table] == ["learning_rate=0.001", "learning_rate=0.01"]
    assert [row[-1] for row in last.table].count("★") == 1
    assert len(last.figure.axes[0].get_legend().get_texts()) == 2
    runs = lab.registry.list("alice-owner-token-0001")
    assert len(runs) == 2 and all(r.train["max_steps"] == 4 for r in runs)  # the same step budget for each
    again = list(lab.watch_sweep(owner="alice-owner-token-0001"))  # a refresh re-attaches to it
    assert again[-1].sweep_id == last.sweep_id and again[-1].table == last.table


def test_the_learning_rate_exercise_shows_the_explosion_safely(lab, monkeypatch):
    name = "learning rate: too low / just right / too high"
    setting, values, _ = experiments_module.EXERCISES[name]
    monkeypatch.setitem(experiments_module.EXERCISES, name, (setting, values, (BUDGETS[1], 8)))
    views = list(lab.exercise(owner="bob-owner-token-000001", source=PASTE, files=None, pasted=TEXT,
                              tokenizer="char", preset="tiny", settings=tiny(grad_clip=0.0), exercise=name))
    rows = {row[0]: row for row in views[-1].table}
    assert len(rows) == 3
    too_high = rows["learning_rate=1"]
    assert too_high[1] == "diverged" and too_high[-1] != "★"
    assert "**learning_rate=1** diverged: the loss" in views[-1].status
    assert rows["learning_rate=0.003"][1] == "finished" and rows["learning_rate=3e-05"][1] == "finished"
    assert float(rows["learning_rate=0.003"][3]) < float(rows["learning_rate=3e-05"][3])


def test_a_sweep_over_the_server_limits_is_refused_and_starts_nothing(tmp_path):
    lab = Lab(tmp_path / "runs", limits=Limits(max_sweep_runs=2, max_params=50_000, poll_seconds=0.05))
    with pytest.raises(ConfigError, match="3 runs; this server runs at most 2"):
        sweep(lab, "carol-owner-token-0001", "learning_rate", "1e-3,2e-3,3e-3")
    with pytest.raises(ConfigError, match=r"The run model_size=4x256: That model has about .*M parameters"):
        sweep(lab, "carol-owner-token-0001", "model_size", "1x16,4x256")
    with pytest.raises(ConfigError, match="'colour' cannot be swept"):
        sweep(lab, "carol-owner-token-0001", "colour", "1,2")
    with pytest.raises(ConfigError, match="Choose a setting to sweep"):
        sweep(lab, "carol-owner-token-0001", None, None)
    with pytest.raises(ValueError, match="Paste some text"):
        list(lab.start_sweep(owner="carol-owner-token-0001", source=PASTE, files=None, pasted="", tokenizer="char",
                             preset="tiny", settings=tiny(), axis_a="learning_rate", values_a="1e-3,2e-3"))
    assert lab.registry.list("carol-owner-token-0001") == [] and lab.sweeps.list("carol-owner-token-0001") == []


def test_seeds_show_their_spread_and_the_verdict_says_whether_b_beats_a(lab):
    owner = "dave-owner-token-00001"
    a = list(lab.repeat_seeds(owner=owner, source=PASTE, files=None, pasted=TEXT, tokenizer="char", preset="tiny",
                              settings=tiny(learning_rate=1e-4, min_lr=1e-5), seeds=2, budget_kind=BUDGETS[1],
                              budget=6))[-1]
    b = list(lab.repeat_seeds(owner=owner, source=PASTE, files=None, pasted=TEXT, tokenizer="char", preset="tiny",
                              settings=tiny(learning_rate=1e-2), seeds=2, budget_kind=BUDGETS[1], budget=6))[-1]
    assert "spread over seeds" in a.status and "mean of 2 seeds" in a.figure.axes[0].get_legend().get_texts()[0].get_text()
    verdict = lab.seed_verdict(owner=owner, sweep_a=a.sweep_id, sweep_b=b.sweep_id)
    assert "beats" in verdict and "the difference is real" in verdict
    with pytest.raises(RunError, match="two different seed sweeps"):
        lab.seed_verdict(owner=owner, sweep_a=a.sweep_id, sweep_b=a.sweep_id)
    with pytest.raises(ConfigError, match="2 to 5 seeds"):
        list(lab.repeat_seeds(owner=owner, source=PASTE, files=None, pasted=TEXT, tokenizer="char", preset="tiny",
                              settings=tiny(), seeds=9))


def test_the_scaling_lab_fits_a_power_law_to_a_ladder_of_sizes(lab):
    views = sweep(lab, "erin-owner-token-00001", "model_size", "1x8, 1x16, 2x32", settings=dict(n_head=2))
    last = views[-1]
    assert "L(N) =" in last.scaling and "The next size up" in last.scaling and "treat it as a guess" in last.scaling
    ax = last.figure.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_cancel_and_resume_a_sweep_through_the_service(lab):
    owner = "fred-owner-token-00001"
    views = lab.start_sweep(owner=owner, source=PASTE, files=None, pasted=TEXT, tokenizer="char", preset="tiny",
                            settings=tiny(), axis_a="learning_rate", values_a="1e-3,2e-3", budget_kind=BUDGETS[1],
                            budget=100_000)
    first = next(views)
    assert lab.cancel_sweep(owner=owner, sweep_id=first.sweep_id).startswith("Cancelling")
    assert "cancelled" in list(views)[-1].status
    assert lab.cancel_sweep(owner=owner, sweep_id=first.sweep_id) == "That sweep is not in the queue."
    assert lab.sweep_choices(owner)[0][1] == first.sweep_id
    with pytest.raises(RunError, match="no sweep"):
        list(lab.resume_sweep(owner="someone-else-entirely-0000", sweep_id=first.sweep_id))


# -- reproduce and share -----------------------------------------------------------------------------------

def test_the_command_trains_what_start_would(lab):
    from gptlab.cli import _overrides, build_parser

    settings = tiny(learning_rate=0.004, dropout=0.1)
    command = lab.command(preset="tiny", tokenizer="char", settings=settings, source=UPLOAD, files=["/tmp/x/my notes.txt"])
    assert "--data 'my notes.txt'" in command and "/tmp/x" not in command
    args = build_parser().parse_args(shlex.split(command)[3:])
    model, train = lab._configs("char", settings)
    assert ModelConfig.preset("tiny", **_overrides(args, ModelConfig)) == model
    assert TrainConfig.preset("tiny", **_overrides(args, TrainConfig)) == train
    assert "--data" not in lab.command(preset="tiny", tokenizer="char", settings=settings, source=SHAKESPEARE)
    assert "--data pasted-text.txt" in lab.command(preset="tiny", tokenizer="char", settings=settings, source=PASTE)


def test_settings_round_trip_through_a_file_and_a_link(lab):
    settings = tiny(learning_rate=0.004, bias=False, patience=3)
    path = lab.save_settings(owner="gina-owner-token-00001", preset="tiny", tokenizer="char", settings=settings)
    assert json.loads(path.read_text())["preset"] == "tiny"
    loaded = lab.load_settings(upload=str(path))
    model, train = lab._configs("char", settings)
    assert loaded["preset"] == "tiny" and loaded["learning_rate"] == 0.004 and loaded["bias"] is False
    assert loaded["patience"] == 3 and loaded["tokenizer"] == "char"
    assert lab._configs("char", loaded) == (model, train)
    query = lab.settings_link(preset="tiny", tokenizer="char", settings=settings)
    assert lab.settings_from_link(query=query) == loaded
    assert lab.settings_from_link(query={}) is None


def test_a_bad_settings_file_or_link_names_the_problem(lab, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "gptlab-settings", "version": 1, "settings": {"n_layr": 3}}))
    with pytest.raises(ConfigError, match="Unknown setting"):
        lab.load_settings(upload=str(bad))
    with pytest.raises(ValueError, match="Choose a settings"):
        lab.load_settings(upload=None)
    with pytest.raises(ConfigError, match="n_layer in the link"):
        lab.settings_from_link(query={"n_layer": "lots"})


def test_the_history_names_an_uploaded_file_without_its_server_folder(lab, tmp_path):
    notes = tmp_path / "deep" / "folder" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text(TEXT, encoding="utf-8")
    owner = list(lab.start(owner="", source=UPLOAD, files=[str(notes)], pasted="", tokenizer="char",
                           start_from=SCRATCH, settings=tiny()))[-1].owner
    row = lab.runs_table(owner=owner).rows[0]
    assert row[3] == "01-notes.txt" and str(tmp_path) not in " ".join(row)
