"""A sample request's work is capped, and one owner cannot take every generation or live-view slot."""

import pytest

from tests.forms import decoding, tiny
from gptlab.admission import BusyError
from gptlab.service import Lab, Limits

TEXT = "to be or not to be, that is the question. " * 60
SETTINGS = tiny()
GREEDY = decoding(max_new_tokens=20)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("fair") / "runs", limits=Limits(poll_seconds=0.05, max_watchers_per_run=2))
    views = list(lab.start(owner="", source="Paste text", files=None, pasted=TEXT, tokenizer="char",
                           start_from="Scratch (random weights)", settings=SETTINGS))
    return lab, views[-1].owner, views[-1].run_id


def stream(lab, owner, run_id, **decoding):
    return lab.sample(owner=owner, run_id=run_id, which="best", upload=None, prompt="to",
                      decoding={**GREEDY, **decoding})


def test_one_owner_has_at_most_two_generations_running(run):
    lab, owner, run_id = run
    first, second = stream(lab, owner, run_id), stream(lab, owner, run_id)
    next(first), next(second)  # both streaming
    with pytest.raises(BusyError, match="You already have 2 generations running"):
        next(stream(lab, owner, run_id))
    first.close()  # a closed tab gives its slot back
    assert next(stream(lab, owner, run_id)).text.startswith("to")
    second.close()


def test_a_request_over_the_work_caps_is_refused_before_it_runs(run):
    lab, owner, run_id = run
    with pytest.raises(ValueError, match="max new tokens must be between 1 and 1000"):
        next(stream(lab, owner, run_id, max_new_tokens=5000))
    with pytest.raises(ValueError, match="at most 8 beams; got 64"):
        next(stream(lab, owner, run_id, strategy="beam", num_beams=64))
    with pytest.raises(ValueError, match="The prompt has 5,000 characters; the limit is 4,000"):
        list(lab.sample(owner=owner, run_id=run_id, which="best", upload=None, prompt="x" * 5000, decoding=GREEDY))


def test_while_a_run_trains_generations_take_turns(run, monkeypatch):
    lab, owner, run_id = run
    monkeypatch.setattr(lab.registry, "active_count", lambda: 1)
    monkeypatch.setattr(lab.generations, "wait_s", 0.0)
    first = stream(lab, owner, run_id)
    next(first)
    with pytest.raises(BusyError, match="busy with other generations"):
        next(stream(lab, owner, run_id))
    first.close()


def test_live_views_of_one_run_are_capped(run, monkeypatch):
    lab, owner, run_id = run
    views = [lab.watch(owner, run_id) for _ in range(2)]
    assert all(next(v).run_id == run_id for v in views)  # each holds its slot until it is closed
    with pytest.raises(BusyError, match="live views of this run running"):
        next(lab.watch(owner, run_id))
    for v in views:
        v.close()
    assert next(lab.watch(owner, run_id)).run_id == run_id


def test_watchers_of_a_training_run_share_one_feed_and_it_goes_when_the_run_ends(tmp_path):
    import time

    lab = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    lab.registry.step_hook = lambda step: time.sleep(0.02)
    view = next(lab.start(owner="", source="Paste text", files=None, pasted=TEXT, tokenizer="char",
                          start_from="Scratch (random weights)", settings=tiny(max_steps=100_000, eval_interval=1000)))
    owner, run_id = view.owner, view.run_id
    feed = lab.registry.feed(owner, run_id)
    assert lab.registry.feed(owner, run_id) is feed  # every watcher of the training run gets the same feed
    seen = feed.since(0)
    assert feed.since(len(seen)) == feed.since(0)[len(seen):]  # each watcher takes what is past its own count
    with pytest.raises(ValueError, match="There is no run"):
        lab.registry.feed(Lab.owner_or_new(""), run_id)
    lab.registry.stop(owner, run_id)
    lab.registry.wait(run_id, 30)
    after = lab.registry.feed(owner, run_id)
    assert after is not feed and after.since(0) == lab.registry.events(owner, run_id)  # nothing kept for it


def test_fresh_owner_tokens_do_not_get_around_the_servers_run_cap(tmp_path):
    lab = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    lab.registry.max_runs = 2
    ids = []
    for _ in range(4):  # four browsers, one run each
        ids.append(list(lab.start(owner=Lab.owner_or_new(""), source="Paste text", files=None, pasted=TEXT,
                                  tokenizer="char", start_from="Scratch (random weights)",
                                  settings=tiny(max_steps=1, eval_interval=1)))[-1].run_id)
    kept = sorted(p.name for p in lab.registry.root.iterdir() if (p / "status.json").exists())
    assert len(kept) == 3 and ids[-1] in kept and ids[0] not in kept  # 2 finished kept, plus the newest


def test_pasted_text_over_the_cap_is_refused_before_it_is_read(tmp_path):
    lab = Lab(tmp_path / "runs", limits=Limits(max_paste_chars=1000))
    view = lab.preview(source="Paste text", files=None, pasted="x" * 1001, tokenizer="char", block_size=8)
    assert view.message == ("**Problem**: The pasted text has 1,001 characters; the limit is 1,000. Upload it as a "
                            "file or shorten it.")


def test_previews_run_four_at_a_time_so_a_light_one_need_not_wait_behind_heavy_ones(tmp_path):
    from gptlab.ui import build_demo

    demo = build_demo(Lab(tmp_path / "runs"))
    (preview,) = [fn for fn in demo.fns.values() if fn.api_name == "preview"]
    assert preview.concurrency_limit == 4
    generation = [fn for fn in demo.fns.values() if fn.api_name in ("sample", "next_tokens", "compare", "sweep")]
    assert len(generation) == 4 and all(fn.concurrency_limit is None for fn in generation)
