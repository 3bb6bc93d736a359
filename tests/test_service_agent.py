"""What an agent gets from the service (gptlab.service.agent): a training started without waiting
for it, its status and the runs as JSON-able data, and owner tokens that keep agents apart."""

from __future__ import annotations

import json

import pytest

from gptlab.config import ConfigError
from gptlab.runs import RunError
from gptlab.service import Lab, Limits
from gptlab.service.agent import OWNER_HELP

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20  # ~3k chars
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(tmp_path_factory.mktemp("agent") / "runs", limits=Limits(poll_seconds=0.05))


@pytest.fixture(scope="module")
def started(lab):
    """(what start_training answered, the status once the run ended) for a 20-step tiny run."""
    first = lab.start_training(owner="", text=TEXT, preset="tiny", max_steps=20)
    lab.registry.wait(first["run_id"], TIMEOUT)
    return first, lab.run_status(owner=first["owner"], run_id=first["run_id"])


def test_start_training_returns_at_once_with_a_new_owner_and_the_running_run(lab, started):
    first, _ = started
    assert Lab.owner_or_new(first["owner"]) == first["owner"]  # a well-formed token, made for this agent
    assert first["status"] in ("running", "finished") and first["max_steps"] == 20  # not waited for
    assert lab.registry.get(first["owner"], first["run_id"]).train["max_steps"] == 20
    assert json.loads(json.dumps(first)) == first  # plain JSON


def test_run_status_of_a_finished_run_has_its_losses_sample_and_what_to_call_next(started):
    first, done = started
    assert done["status"] == "finished" and done["step"] == 20 and done["progress_percent"] == 100.0
    assert done["loss"] > 0 and done["val_loss"] == done["best_val_loss"] > 0
    assert done["owner"] == first["owner"] and done["run_id"] == first["run_id"]
    assert "finished" in done["summary"] and "sample" in done["hint"] and done["seconds_left"] is None


def test_list_runs_shows_the_owners_runs_and_tells_an_owner_less_caller_how_to_get_a_token(lab, started):
    first, _ = started
    mine = lab.list_runs(owner=first["owner"])
    assert mine["owner"] == first["owner"] and [r["run_id"] for r in mine["runs"]] == [first["run_id"]]
    assert mine["runs"][0]["status"] == "finished" and mine["runs"][0]["step"] == 20
    assert lab.list_runs(owner="") == {"owner": None, "runs": [], "hint": OWNER_HELP}


def test_another_owner_sees_nothing_and_a_malformed_token_is_refused_not_replaced(lab, started):
    first, _ = started
    other = Lab.owner_or_new("")
    assert lab.list_runs(owner=other)["runs"] == []
    with pytest.raises(RunError, match="There is no run"):
        lab.run_status(owner=other, run_id=first["run_id"])
    for call in (lambda: lab.list_runs(owner="me"), lambda: lab.run_status(owner="me", run_id=first["run_id"]),
                 lambda: lab.start_training(owner="x" * 8, text=TEXT, preset="tiny", max_steps=2)):
        with pytest.raises(RunError, match="not an owner token this server made"):
            call()
    with pytest.raises(RunError, match="No run chosen: pass a run_id"):
        lab.run_status(owner=first["owner"], run_id="")


def test_bad_requests_to_start_training_are_sentences_and_start_nothing(lab, started):
    first, _ = started
    owner = first["owner"]
    with pytest.raises(ConfigError, match="Unknown preset 'huge'. Choose one of: tiny"):
        lab.start_training(owner=owner, text=TEXT, preset="huge", max_steps=0)
    with pytest.raises(ConfigError, match="max_steps"):
        lab.start_training(owner=owner, text=TEXT, preset="tiny", max_steps=-3)
    assert len(lab.list_runs(owner=owner)["runs"]) == 1


def test_without_text_start_training_trains_on_the_bundled_shakespeare(lab):
    run = lab.start_training(owner="", text="  ", preset=None, max_steps=1)
    lab.registry.wait(run["run_id"], TIMEOUT)
    info = lab.registry.get(run["owner"], run["run_id"])
    assert info.data["sources"] == ["shakespeare.txt"] and info.model["n_layer"] == 2  # the tiny preset
    assert lab.run_status(owner=run["owner"], run_id=run["run_id"])["status"] == "finished"
