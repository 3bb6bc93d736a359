"""The service behind the attention, logit lens and surprise panels, without gradio: a trained run's
untrained and trained sides, an uploaded checkpoint's trained side alone, the validation passage, and
a sentence for every input that cannot be shown."""

import math
import shutil

import pytest

from gptlab.checkpoint import INIT, best_or_last, load_checkpoint
from gptlab.data import encode_documents, split_sizes
from gptlab.insight.surprise import surprise
from gptlab.service import Lab, Limits
from gptlab.service.inside import NO_INIT_RUN, NO_INIT_UPLOAD
from tests.forms import PASTE, SCRATCH, hyper

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(lab, owner, run_id, run folder) of a finished 2-layer, 2-head char run."""
    lab = Lab(tmp_path_factory.mktemp("inside") / "runs", limits=Limits(poll_seconds=0.05, max_prompt_chars=500))
    views = list(lab.start(owner="", source=PASTE, files=None, pasted=TEXT, tokenizer="char", start_from=SCRATCH,
                           settings=hyper(n_layer=2, max_steps=20, eval_interval=10)))
    owner, run_id = views[-1].owner, views[-1].run_id
    return lab, owner, run_id, lab.registry.folder(owner, run_id)


@pytest.fixture(scope="module")
def upload(trained, tmp_path_factory):
    lab, owner, run_id, _ = trained
    archive, *_ = lab.downloads(owner=owner, run_id=run_id)
    return str(archive)


def test_attention_shows_untrained_beside_trained_with_rows_that_sum_to_one(trained):
    lab, owner, run_id, _ = trained
    view = lab.attention(owner=owner, run_id=run_id, which="best", upload=None, prompt="to be or not", layer=2, head=1)
    assert view.untrained is not None and view.note == ""
    for side in (view.trained, view.untrained):
        assert side.labels[2] == "␣" and (side.layer, side.head, side.n_layer, side.n_head) == (2, 1, 2, 2)
        assert all(sum(row) == pytest.approx(1.0, abs=1e-5) for row in side.weights)
    assert view.trained.weights != view.untrained.weights
    assert len([ax for ax in view.figure.axes if ax.images and ax.get_xlabel()]) == 2


def test_a_long_prompt_is_cropped_to_the_context_and_drawn_for_its_last_tokens(trained):
    lab, owner, run_id, _ = trained
    view = lab.attention(owner=owner, run_id=run_id, which="last", upload=None, prompt=TEXT[:100], layer=1, head=2)
    assert "last 32 (its context length)" in view.note and len(view.trained.labels) == 32
    lens = lab.logit_lens(owner=owner, run_id=run_id, which="best", upload=None, prompt=TEXT[:100])
    assert "last 12 of the 32 positions" in lens.note and len(lens.trained.ids) == 12
    with pytest.raises(ValueError, match="limit is 500"):
        lab.logit_lens(owner=owner, run_id=run_id, which="best", upload=None, prompt="x" * 501)


@pytest.mark.parametrize("layer, head, message", [(3, 1, "layer from 1 to 2"), (1, 3, "head from 1 to 2"),
                                                  (None, 1, "Choose a layer"), (1.5, 1, "whole number")])
def test_bad_layers_and_heads_are_sentences(trained, layer, head, message):
    lab, owner, run_id, _ = trained
    with pytest.raises(ValueError, match=message):
        lab.attention(owner=owner, run_id=run_id, which="best", upload=None, prompt="the", layer=layer, head=head)


@pytest.mark.parametrize("prompt", ["", None])
def test_an_empty_prompt_is_a_sentence(trained, prompt):
    lab, owner, run_id, _ = trained
    with pytest.raises(ValueError, match="Type a prompt first"):
        lab.logit_lens(owner=owner, run_id=run_id, which="best", upload=None, prompt=prompt)


def test_no_run_yet_is_a_sentence(trained):
    lab = trained[0]
    with pytest.raises(ValueError, match="Choose a run first"):
        lab.attention(owner="", run_id=None, which="best", upload=None, prompt="the", layer=1, head=1)
    with pytest.raises(ValueError, match="Choose a run first"):
        lab.surprise(owner="", run_id=None, passage="")
    with pytest.raises(ValueError, match="Upload a checkpoint"):
        lab.logit_lens(owner="", run_id=None, which="uploaded .zip", upload=None, prompt="the")


def test_an_uploaded_checkpoint_shows_the_trained_side_only_and_says_so(trained, upload):
    lab = trained[0]
    view = lab.attention(owner="", run_id=None, which="uploaded .zip", upload=upload, prompt="the", layer=1, head=1)
    assert view.untrained is None and NO_INIT_UPLOAD in view.note
    lens = lab.logit_lens(owner="", run_id=None, which="uploaded .zip", upload=upload, prompt="the")
    assert lens.untrained is None and lens.untrained_html == "" and NO_INIT_UPLOAD in lens.note
    with pytest.raises(ValueError, match="paste a passage"):
        lab.surprise(owner="", run_id=None, passage="", which="uploaded .zip", upload=upload)
    pasted = lab.surprise(owner="", run_id=None, passage="to be or not", which="uploaded .zip", upload=upload)
    assert pasted.untrained is None and len(pasted.trained.ids) == len("to be or not")


def test_the_lens_of_the_last_layer_is_what_the_model_predicts_next(trained):
    lab, owner, run_id, folder = trained
    lens = lab.logit_lens(owner=owner, run_id=run_id, which="best", upload=None, prompt="to be or")
    top = lab.next_tokens(owner=owner, run_id=run_id, which="best", upload=None, prompt="to be or",
                          decoding=dict(strategy="greedy", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                                        repetition_penalty=1.0, no_repeat_ngram_size=0, num_beams=4,
                                        length_penalty=1.0, max_new_tokens=1, seed=1, stop=""), top_n=1)
    assert lens.trained.top[-1][-1][0][0] == top[0].id
    assert lens.trained.n_layers == 3 and "after block 2" in lens.trained_html and "embeddings" in lens.untrained_html


def test_the_default_passage_is_the_start_of_the_runs_validation_split(trained):
    lab, owner, run_id, folder = trained
    view = lab.surprise(owner=owner, run_id=run_id, passage="")
    checkpoint = load_checkpoint(best_or_last(folder))
    ids = encode_documents([TEXT], checkpoint.tokenizer)
    n_train, _ = split_sizes(len(ids), checkpoint.train_config.val_fraction)
    assert list(view.trained.ids) == ids[n_train: n_train + 33] == list(view.untrained.ids)
    assert "the first 33 tokens of the run's validation text" in view.note
    # The service's numbers are the library's on the same weights.
    model = lab._loaded(folder / INIT)[0]
    expected = surprise(model, checkpoint.tokenizer, ids[n_train: n_train + 33])
    assert view.untrained.total_nats == pytest.approx(expected.total_nats)
    # Training lowers the surprise: below random guessing untrained, well below it trained.
    assert view.trained.bits_per_character < view.untrained.bits_per_character
    assert view.untrained.mean_nats == pytest.approx(math.log(checkpoint.model_config.vocab_size), rel=0.2)
    assert "bits per character" in view.trained_html and "untrained" in view.untrained_html


def test_a_pasted_passage_is_scored_and_checked(trained):
    lab, owner, run_id, _ = trained
    view = lab.surprise(owner=owner, run_id=run_id, passage="to be or not to be")
    assert len(view.trained.ids) == 18 and "Scored: your passage, 18 tokens" in view.note
    with pytest.raises(ValueError, match="never saw"):
        lab.surprise(owner=owner, run_id=run_id, passage="Zebra!")
    with pytest.raises(ValueError, match="single token"):
        lab.surprise(owner=owner, run_id=run_id, passage="t")
    with pytest.raises(ValueError, match="limit is 500"):
        lab.surprise(owner=owner, run_id=run_id, passage="t" * 501)


def test_a_run_without_init_or_its_text_says_what_it_shows(trained, tmp_path):
    lab, owner, run_id, folder = trained
    shutil.move(folder / INIT, tmp_path / INIT)
    data = folder / "data"
    shutil.move(data, tmp_path / "data")
    try:
        view = lab.attention(owner=owner, run_id=run_id, which="best", upload=None, prompt="the", layer=1, head=1)
        assert view.untrained is None and NO_INIT_RUN in view.note
        with pytest.raises(ValueError, match="no longer on the server"):
            lab.surprise(owner=owner, run_id=run_id, passage="", which="last")
    finally:
        shutil.move(tmp_path / INIT, folder / INIT)
        shutil.move(tmp_path / "data", data)


def test_the_model_shape_is_read_from_the_checkpoint_for_the_sliders(trained, upload):
    lab, owner, run_id, _ = trained
    shape = lab.model_shape(owner=owner, run_id=run_id, which="best", upload=None)
    assert (shape.n_layer, shape.n_head, shape.block_size) == (2, 2, 32)
    assert lab.model_shape(owner="", run_id=None, which="uploaded .zip", upload=upload) == shape
    with pytest.raises(ValueError, match="Choose a run first"):
        lab.model_shape(owner="", run_id=None, which="best", upload=None)


def test_a_run_without_a_best_checkpoint_yet_takes_its_shape_from_init(trained, tmp_path):
    lab, owner, run_id, folder = trained
    shutil.move(folder / "last", tmp_path / "last")
    try:
        assert lab.model_shape(owner=owner, run_id=run_id, which="last", upload=None).n_head == 2
    finally:
        shutil.move(tmp_path / "last", folder / "last")
