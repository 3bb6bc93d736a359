"""Work too large for the server is refused before training starts (each held the only training slot,
or the server's memory, for minutes), and every run stops at the server's time cap."""

import pytest

from tests.forms import tiny
from gptlab.admission import TrainingCaps
from gptlab.service import Lab, Limits

TEXT = "to be or not to be, that is the question. " * 60
SETTINGS = tiny()


@pytest.fixture
def lab(tmp_path):
    return Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05), caps=TrainingCaps(max_seconds=600))


def start(lab, **overrides):
    return list(lab.start(owner="", source="Paste text", files=None, pasted=TEXT, tokenizer="char",
                          start_from="Scratch (random weights)", settings={**SETTINGS, **overrides}))


@pytest.mark.parametrize("overrides, expected", [
    (dict(batch_size=65_536, n_layer=4, n_embd=64), r"needs about [\d,]+ MiB; this server allows 4,096 MiB\. Lower batch"),
    (dict(grad_accum_steps=60_000), r"Each step reads 3,840,000 tokens .*this server allows 65,536\. Lower"),
    (dict(eval_batches=100_000), r"Each evaluation reads 6,400,000 tokens .*Lower eval_batches"),
    (dict(max_steps=10**9), r"max_steps is 1,000,000,000; this server trains at most 100,000 steps a run"),
])
def test_work_over_a_cap_is_refused_before_anything_starts(lab, overrides, expected):
    with pytest.raises(ValueError, match=expected):
        start(lab, **overrides)
    assert lab.registry.list(Lab.owner_or_new("")) == [] and not any(lab.registry.root.glob("*/status.json"))
    assert lab.registry.active_count() == 0  # the training slot stays free


def test_every_run_stops_at_the_servers_time_cap(lab):
    views = start(lab)
    info = lab.registry.get(views[-1].owner, views[-1].run_id)
    assert info.train["max_time"] == 600  # no budget of its own: the server's
    views = start(lab, max_time=5)
    assert lab.registry.get(views[-1].owner, views[-1].run_id).train["max_time"] == 5  # a shorter one is kept


def test_resuming_to_a_step_the_run_has_passed_is_refused_without_touching_it(lab):
    final = start(lab)[-1]
    before = lab.registry.get(final.owner, final.run_id)
    with pytest.raises(ValueError, match="This run is at step 4; set max steps above that"):
        next(lab.resume(owner=final.owner, run_id=final.run_id, max_steps=2, max_time=0))
    assert lab.registry.get(final.owner, final.run_id) == before  # its settings were not rewritten
