"""Events: each kind survives a trip through its dict and JSON as its own class; a dict that is not
an event (unknown kind, missing or mistyped field) is an EventError naming the problem; keys
from a newer version are ignored."""

import json

import pytest

from gptlab.events import (CheckpointEvent, DoneEvent, EvalEvent, Event, EventError, SampleEvent, SnapshotEvent,
                           StepEvent)

EVENTS = [
    StepEvent(3, loss=2.5, lr=1e-3, grad_norm=0.75, tokens_seen=384, tokens_per_sec=1234.5, elapsed=1.5, eta=None),
    StepEvent(4, loss=2.25, lr=1e-3, grad_norm=0.5, tokens_seen=512, tokens_per_sec=1300.0, elapsed=2.0, eta=9.5),
    EvalEvent(4, train_loss=2.0, val_loss=2.125, train_ppl=7.39, val_ppl=8.37, best_val_loss=2.125, is_best=True,
              tokens_seen=512, elapsed=2.5),
    SampleEvent(4, text="To be, or not — ⏎ ünïcode"),
    CheckpointEvent(4, label="best", path="runs/x/best"),
    DoneEvent(4, status="finished", reason="reached max_steps (4)", tokens_seen=512, elapsed=3.0, best_val_loss=2.125),
    DoneEvent(0, status="stopped", reason="stopped by request at step 0", tokens_seen=0, elapsed=0.1,
              best_val_loss=None),
    SnapshotEvent(0, val_loss=4.17, prompt="\n", greedy="eeeeeeee", sampled="x;Qk <b>&amp; ünï"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_every_kind_round_trips_through_its_dict_and_json(event):
    assert Event.from_dict(event.as_dict()) == event
    back = Event.from_dict(json.loads(json.dumps(event.as_dict())))
    assert back == event and type(back) is type(event)
    assert type(event).from_dict(event.as_dict()) == event  # the subclass reads its own kind too


def test_the_kinds_are_the_class_names():
    assert [e.kind for e in EVENTS] == ["step", "step", "eval", "sample", "checkpoint", "done", "done", "snapshot"]
    assert EVENTS[0].as_dict()["event"] == "step"


def test_a_float_written_as_a_whole_number_reads_back_as_a_float():
    d = {**EVENTS[0].as_dict(), "loss": 2, "elapsed": 0}
    event = Event.from_dict(d)
    assert event.loss == 2.0 and isinstance(event.loss, float) and isinstance(event.elapsed, float)
    assert isinstance(event.tokens_seen, int)


def test_keys_from_a_newer_version_are_ignored():
    event = EVENTS[2]
    assert Event.from_dict({**event.as_dict(), "grad_scale": 1.0, "notes": "new"}) == event


@pytest.mark.parametrize("kind", [None, "stepp", 3, ["step"]])
def test_an_unknown_kind_names_the_known_ones(kind):
    d = {**EVENTS[0].as_dict(), "event": kind}
    if kind is None:
        del d["event"]
    with pytest.raises(EventError, match=r"Unknown event kind .*must be one of 'step', 'eval', 'sample', "
                                         r"'checkpoint', 'done', 'snapshot'"):
        Event.from_dict(d)


def test_missing_fields_are_named():
    d = EVENTS[5].as_dict()
    del d["reason"], d["elapsed"]
    with pytest.raises(EventError, match=r"This 'done' event cannot be read: it lacks 'reason', 'elapsed'\."):
        Event.from_dict(d)


@pytest.mark.parametrize("field, value, expected", [
    ("step", "4", "'step' should be int but is '4'"),
    ("step", 4.0, "'step' should be int but is 4.0"),
    ("step", True, "'step' should be int but is True"),
    ("is_best", 1, "'is_best' should be bool but is 1"),
    ("val_loss", None, "'val_loss' should be float but is None"),
    ("val_loss", "2.1", "'val_loss' should be float but is '2.1'"),
    ("train_loss", False, "'train_loss' should be float but is False"),
])
def test_mistyped_fields_are_named(field, value, expected):
    with pytest.raises(EventError) as e:
        Event.from_dict({**EVENTS[2].as_dict(), field: value})
    assert expected in str(e.value) and str(e.value).startswith("This 'eval' event cannot be read")


def test_an_optional_field_takes_none_and_a_required_one_does_not():
    assert Event.from_dict({**EVENTS[1].as_dict(), "eta": None}).eta is None
    with pytest.raises(EventError, match="'text' should be str but is None"):
        Event.from_dict({**EVENTS[3].as_dict(), "text": None})


def test_not_a_dict_or_the_wrong_subclass_is_an_error_that_is_a_value_error():
    with pytest.raises(EventError, match=r"must be a JSON object"):
        Event.from_dict([1, 2])
    with pytest.raises(ValueError, match=r"StepEvent\.from_dict was given a 'done' event; read it with Event"):
        StepEvent.from_dict(EVENTS[5].as_dict())
