"""The decoding panels through the service (no gradio): the next-token chart, the beams, and the
memorisation meter on a run trained on pasted text, with every way a request can be wrong."""

import shutil

import pytest
from matplotlib.figure import Figure

import gptlab.service.decoding as service_decoding
from gptlab.data import DataError
from gptlab.insight.memorise import load_index
from gptlab.runs import RunError
from gptlab.service import Lab, Limits
from tests.forms import PASTE, SCRATCH, decoding, hyper, tiny

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20


def train(lab, tokenizer="char", **overrides):
    views = list(lab.start(owner="", source=PASTE, files=None, pasted=TEXT, tokenizer=tokenizer, start_from=SCRATCH,
                           settings=hyper(**overrides)))
    return views[-1].owner, views[-1].run_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("decoding") / "runs", limits=Limits(poll_seconds=0.05))
    owner, run_id = train(lab, **tiny())
    return lab, owner, run_id


def ask(lab, owner, run_id, method, **kw):
    return getattr(lab, method)(owner=owner, run_id=run_id, which="best", upload=None, **kw)


def test_the_next_token_chart_has_a_panel_per_stage_that_is_on(trained):
    lab, owner, run_id = trained
    chart = ask(lab, owner, run_id, "next_token_stages", prompt="the ",
                decoding=decoding(strategy="sample", temperature=0.7, top_k=5, repetition_penalty=1.3))
    assert isinstance(chart.figure, Figure)
    titles = [ax.get_title().split("\n")[0] for ax in chart.figure.axes]
    assert titles == ["model", "repetition penalty 1.3", "temperature 0.7", "top-k 5"]
    assert "Sampling draws from the last panel" in chart.note

    greedy = ask(lab, owner, run_id, "next_token_stages", prompt="the ", decoding=decoding(temperature=0.5, top_k=5))
    assert [ax.get_title().split("\n")[0] for ax in greedy.figure.axes] == ["model"]
    assert "do not warp" in greedy.note


def test_the_next_tokens_endpoint_still_answers(trained):
    lab, owner, run_id = trained
    assert len(ask(lab, owner, run_id, "next_tokens", prompt="the ", decoding=decoding())) > 0


def test_the_beams_are_ranked_by_their_scores_and_the_best_is_what_sample_gives(trained):
    lab, owner, run_id = trained
    settings = decoding(strategy="beam", num_beams=3, max_new_tokens=10)
    rows = ask(lab, owner, run_id, "beams", prompt="the ", decoding=settings)
    assert [r.rank for r in rows] == [1, 2, 3]
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    assert all(r.text.startswith("the ") and r.length == 10 and not r.ended for r in rows)  # char runs have no eot
    assert all(r.score == pytest.approx(r.sum_logprobs / r.length, abs=1e-3) for r in rows)
    sampled = list(ask(lab, owner, run_id, "sample", prompt="the ", decoding=settings))[-1].text
    assert rows[0].text == sampled

    with pytest.raises(DataError, match="Choose decoding 'beam'"):
        ask(lab, owner, run_id, "beams", prompt="the ", decoding=decoding())


def test_the_meter_marks_a_copied_span_and_escapes_the_text(trained):
    lab, owner, run_id = trained
    span = TEXT[80:110]  # 30 characters of the training text
    output = "<b>" + span + "&"  # < > & do not occur in the training text
    view = ask(lab, owner, run_id, "memorisation", prompt="", output=output)
    assert view.longest == span and view.longest_tokens == 30
    assert view.novel_share == pytest.approx(1 - 23 / (len(output) - 7))
    assert "&lt;b&gt;" in view.html and "<b>" not in view.html and "&amp;</pre>" in view.html
    assert '<mark class="copied" style="background:#ffd54f">' in view.html
    assert "30 characters long" in view.html


def test_the_meter_checks_only_the_continuation_and_keeps_its_index_in_the_run(trained, monkeypatch):
    lab, owner, run_id = trained
    output = "the quick brown fox" + "0123456789"
    view = ask(lab, owner, run_id, "memorisation", prompt="the quick brown fox", output=output)
    assert view.novel_share == 1.0 and view.longest_tokens == 0 and "Nothing of the continuation" in view.html
    index_file = lab.registry.folder(owner, run_id) / service_decoding.INDEX_FILE
    index = load_index(index_file)  # plain arrays: np.load without pickle
    assert index.tokens.size == len(TEXT) and sorted(index.suffixes.tolist()) == list(range(len(TEXT)))

    built = []
    monkeypatch.setattr(service_decoding, "build_index", lambda *a, **k: built.append(1))
    ask(lab, owner, run_id, "memorisation", prompt="", output=TEXT[:50])  # from memory
    lab._indexes.clear()
    again = ask(lab, owner, run_id, "memorisation", prompt="", output=TEXT[:50])  # from the file
    assert built == [] and again.longest == TEXT[:50]


def test_the_meter_explains_what_it_cannot_check(trained, tmp_path):
    lab, owner, run_id = trained
    with pytest.raises(DataError, match="uploaded checkpoint carries no training text"):
        lab.memorisation(owner=owner, run_id=None, which="uploaded .zip", upload="x.zip", prompt="", output="abc")
    with pytest.raises(DataError, match="Generate a sample first"):
        ask(lab, owner, run_id, "memorisation", prompt="the", output="  ")
    with pytest.raises(RunError, match="Choose a run first"):
        lab.memorisation(owner=owner, run_id=None, which="best", upload=None, prompt="", output="abc")
    with pytest.raises(DataError, match="checks at most 2,000"):
        ask(lab, owner, run_id, "memorisation", prompt="", output="a" * 3000)
    with pytest.raises(DataError, match="at most 2,000 tokens"):
        ask(lab, owner, run_id, "memorisation", prompt="", output="a" * 100_000)
    with pytest.raises(DataError, match="only the prompt"):
        ask(lab, owner, run_id, "memorisation", prompt="the quick", output="the quick")


def test_the_meter_says_when_the_training_text_is_gone(tmp_path):
    lab = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    owner, run_id = train(lab, **tiny())
    shutil.rmtree(lab.registry.folder(owner, run_id) / "data")  # the kept copy of the pasted text
    with pytest.raises(RunError, match="no longer on the server"):
        ask(lab, owner, run_id, "memorisation", prompt="", output="the quick brown fox")


def test_the_meter_counts_tokens_for_a_bpe_run(tmp_path):
    lab = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    owner, run_id = train(lab, tokenizer="gpt2", **tiny())
    span = " quick brown fox jumps over the lazy dog."  # whole BPE tokens, as the training text has them
    output = "Zebras é" + span + " Zebras"
    view = ask(lab, owner, run_id, "memorisation", prompt="", output=output)
    assert view.longest == span and view.longest_tokens == len(lab._loaded(
        lab.registry.folder(owner, run_id) / "best")[1].encode(span)) and "tokens long" in view.html
    assert 0 < view.novel_share < 1


def test_an_empty_prompt_starts_where_sampling_starts(trained):
    lab, owner, run_id = trained
    chart = ask(lab, owner, run_id, "next_token_stages", prompt="", decoding=decoding())
    assert len(chart.figure.axes) == 1
    settings = decoding(strategy="beam", num_beams=2, max_new_tokens=5)
    rows = ask(lab, owner, run_id, "beams", prompt="", decoding=settings)
    assert len(rows) == 2 and all(len(r.text) == 5 for r in rows)


def test_an_index_saved_for_other_text_is_rebuilt(trained, monkeypatch):
    lab, owner, run_id = trained
    ask(lab, owner, run_id, "memorisation", prompt="", output=TEXT[:40])
    index_file = lab.registry.folder(owner, run_id) / service_decoding.INDEX_FILE
    stale = load_index(index_file)
    service_decoding.save_index(service_decoding.build_index([1, 2, 3], key="other text"), index_file)
    lab._indexes.clear()
    view = ask(lab, owner, run_id, "memorisation", prompt="", output=TEXT[:40])
    assert view.longest == TEXT[:40] and load_index(index_file).key == stale.key
