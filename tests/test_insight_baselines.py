"""The baselines on the loss chart: unigram and bigram cross-entropies (Witten-Bell smoothed) against a
case computed by hand, a slow loop oracle and a cycle with a known answer; bits per character;
perplexity sentences; the loss chart's lines, right-hand axis and caption; and the baselines kept with
a run (old runs without them still draw)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from gptlab.data import prepare_data
from gptlab.events import EvalEvent, StepEvent
from gptlab.insight import baselines as baselines_module
from gptlab.insight.baselines import Baselines, bits_per_character, ngram_entropies
from gptlab.plots import loss_caption, loss_figure
from gptlab.views import perplexity_sentence, run_status_markdown, stats_markdown


def oracle(train, val, V):
    """Witten-Bell by the formulas, with dictionaries and loops: slow and obvious."""
    counts = {w: list(train).count(w) for w in range(V)}
    seen = sum(1 for c in counts.values() if c)
    p1 = {w: (counts[w] + seen / V) / (len(train) + seen) for w in range(V)}
    pairs = list(zip(train[:-1], train[1:]))
    prevs = [train[-1]] + list(val[:-1])
    uni, bi = [], []
    for h, w in zip(prevs, val):
        uni.append(-math.log(p1[w]))
        c_h = sum(1 for a, _ in pairs if a == h)
        t_h = len({b for a, b in pairs if a == h})
        c_hw = sum(1 for p in pairs if p == (h, w))
        bi.append(-math.log((c_hw + t_h * p1[w]) / (c_h + t_h) if c_h else p1[w]))
    return sum(uni) / len(uni), sum(bi) / len(bi)


def test_a_tiny_case_computed_by_hand():
    # train 0 1 0 1 1, V = 3: counts 2, 3, 0 of N = 5 with T = 2 seen, so p1 = 8/21, 11/21, 2/21.
    # After 1 (seen 2 times, followed by 2 kinds): p(0 | 1) = (1 + 2 * 8/21) / (2 + 2) = 37/84;
    # after 0 (2 times, 1 kind): p(1 | 0) = (2 + 1 * 11/21) / (2 + 1) = 53/63.
    unigram, bigram = ngram_entropies([0, 1, 0, 1, 1], [0, 1], 3)
    assert unigram == pytest.approx(-(math.log(8 / 21) + math.log(11 / 21)) / 2, rel=1e-12)
    assert bigram == pytest.approx(-(math.log(37 / 84) + math.log(53 / 63)) / 2, rel=1e-12)


def test_a_deterministic_cycle_is_ln3_for_unigrams_and_nearly_free_for_bigrams():
    ids = np.tile([0, 1, 2], 3000)
    unigram, bigram = ngram_entropies(ids[:8100], ids[8100:], 3)
    assert unigram == pytest.approx(math.log(3), abs=1e-9)
    assert 0 < bigram < 1e-3


@pytest.mark.parametrize("dense", [True, False])
def test_counting_densely_or_sparsely_matches_the_loop_oracle(monkeypatch, dense):
    if not dense:
        monkeypatch.setattr(baselines_module, "_DENSE_KEYS", 0)  # the np.unique path GPT-2's vocabulary takes
    rng = np.random.default_rng(0)
    V = 9
    train = rng.integers(0, V - 2, 300).tolist()  # the last two tokens never appear in training
    val = rng.integers(0, V, 60).tolist()
    assert ngram_entropies(train, val, V) == pytest.approx(oracle(train, val, V), rel=1e-10)


def test_unseen_tokens_stay_finite_and_a_large_vocabulary_takes_the_sparse_path():
    unigram, bigram = ngram_entropies([1, 2, 1, 2], [50_000, 3], 50_257)
    assert math.isfinite(unigram) and math.isfinite(bigram) and bigram > 0
    with pytest.raises(ValueError, match="vocabulary"):
        ngram_entropies([1, 2, 3], [7], 5)


def test_bits_per_character():
    assert bits_per_character(math.log(2), 1.0) == pytest.approx(1.0)  # char: nats / ln 2
    assert bits_per_character(2.0, 0.25) == pytest.approx(0.5 / math.log(2))  # 4 characters per BPE token


def test_a_runs_data_carries_its_baselines(tiny_text):
    char = prepare_data([tiny_text], "char", 32, 0.1)
    assert char.baselines.tokens_per_char == 1.0 and char.baselines.unit == "character"
    assert char.description["baselines"] == char.baselines.as_dict()
    assert char.baselines.bigram < char.baselines.unigram < math.log(char.tokenizer.vocab_size)
    bpe = prepare_data([tiny_text], "gpt2", 32, 0.1)
    val_text = bpe.tokenizer.decode(bpe.dataset.splits["val"].tolist())
    assert bpe.baselines.tokens_per_char == pytest.approx(bpe.stats.val_tokens / len(val_text))
    assert 0.15 < bpe.baselines.tokens_per_char < 0.4 and bpe.baselines.unit == "token"


def test_stored_baselines_read_back_and_anything_else_is_none():
    b = Baselines(unigram=3.0, bigram=2.5, tokens_per_char=1.0, vocab_size=65, unit="character")
    assert Baselines.from_dict(b.as_dict()) == b
    broken = ({**b.as_dict(), "bigram": float("nan")}, {**b.as_dict(), "vocab_size": 0})
    for stored in (None, {}, {"unigram": "x"}, *broken):
        assert Baselines.from_dict(stored) is None


# ------------------------------------------------------------------------------------------------
# Views: sentences, status, the loss chart


B = Baselines(unigram=3.0, bigram=2.5, tokens_per_char=1.0, vocab_size=65, unit="character")


def test_the_caption_says_which_baseline_the_model_beats():
    assert loss_caption(2.4, 65, B) == "Your model now beats a model that knows only the previous character."
    assert loss_caption(2.8, 65, B).startswith("Your model beats character frequencies; next to beat")
    assert loss_caption(3.5, 65, B) == ("Your model beats random guessing. Next to beat: character frequencies "
                                        "alone (unigram).")
    assert loss_caption(4.5, 65, B).startswith("Not yet better than random guessing")
    assert loss_caption(3.5, 65).startswith("Your model beats random guessing.")  # an old run: no baselines
    assert loss_caption(None, 65, B).startswith("No validation loss yet")


def test_perplexity_sentence():
    assert perplexity_sentence(math.log(4)) == "perplexity 4.00: as unsure as choosing among 4.0 tokens"
    assert perplexity_sentence(math.log(1234.4), "character").endswith("among 1,234 characters")
    assert perplexity_sentence(float("nan")) == "perplexity unknown"
    assert "over 10^300" in perplexity_sentence(1000.0)


def info(data):
    return SimpleNamespace(name="run", status="running", reason="", step=10, train={"max_steps": 20}, model={},
                           data=data)


EVENTS = [StepEvent(step=10, tokens_seen=100, elapsed=1.0, loss=2.0, lr=1e-3, grad_norm=1.0, tokens_per_sec=100.0,
                    eta=None),
          EvalEvent(step=10, tokens_seen=100, elapsed=1.0, train_loss=math.log(8), val_loss=math.log(10),
                    train_ppl=8.0, val_ppl=10.0, best_val_loss=math.log(10), is_best=True)]


def test_the_status_gives_perplexity_next_to_both_losses_and_bits_per_character():
    bpe = Baselines(unigram=6.0, bigram=5.0, tokens_per_char=0.25, vocab_size=50257)
    status = run_status_markdown(info({"tokenizer": "gpt2", "baselines": bpe.as_dict()}), EVENTS)
    assert "train loss 2.0794 (perplexity 8.00: as unsure as choosing among 8.0 tokens)" in status
    assert "validation loss 2.3026 (perplexity 10.00: as unsure as choosing among 10 tokens)" in status
    assert f"{math.log(10) * 0.25 / math.log(2):.3f} bits per character" in status
    # a run from before the ratio was kept: a char run still has it (1), a BPE run leaves it out
    assert "3.322 bits per character" in run_status_markdown(info({"tokenizer": "char"}), EVENTS)
    assert "bits per character" not in run_status_markdown(info({"tokenizer": "gpt2"}), EVENTS)


def test_the_status_says_when_the_losses_are_older_than_the_last_step():
    stopped = SimpleNamespace(name="run", status="stopped", reason="stopped by request", step=108,
                              train={"max_steps": 3000}, model={}, data={"tokenizer": "char"})
    at_init = EvalEvent(step=0, tokens_seen=0, elapsed=0.5, train_loss=4.34, val_loss=4.34, train_ppl=76.7,
                        val_ppl=76.7, best_val_loss=4.34, is_best=True)
    step = StepEvent(step=108, tokens_seen=221_184, elapsed=23.0, loss=2.6, lr=6e-3, grad_norm=1.0,
                     tokens_per_sec=9_600.0, eta=None)
    status = run_status_markdown(stopped, [at_init, step])
    assert "at the last evaluation, step 0 (108 steps ago):  \ntrain loss 4.3400" in status
    assert "steps ago" not in run_status_markdown(info({"tokenizer": "char"}), EVENTS)  # evaluated at step 10


def test_the_loss_chart_draws_the_baselines_a_bits_axis_and_the_caption():
    fig = loss_figure(EVENTS, 65, baselines=B)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "character frequencies (unigram) = 3.00" in labels and "previous character (bigram) = 2.50" in labels
    assert any(label.startswith("random guessing (ln 65") for label in labels)
    right = ax.child_axes[0]
    assert right.get_ylabel() == "bits per character"
    assert ax.get_title() == loss_caption(math.log(10), 65, B)
    old = loss_figure(EVENTS, 65)  # a run without baselines: no extra lines, no right axis
    assert not old.axes[0].child_axes and len(old.axes[0].get_legend_handles_labels()[1]) == 4


def test_a_run_stopped_before_its_first_evaluation_is_not_called_worse_than_random():
    untrained = EvalEvent(step=0, tokens_seen=0, elapsed=0.5, train_loss=4.3, val_loss=4.3, train_ppl=73.7,
                          val_ppl=73.7, best_val_loss=4.3, is_best=True)
    steps = [StepEvent(step=n, tokens_seen=10 * n, elapsed=0.5 + n, loss=4.3 - 0.2 * n, lr=1e-3, grad_norm=1.0,
                       tokens_per_sec=100.0, eta=None) for n in range(1, 9)]
    assert loss_figure([untrained, *steps], 65, baselines=B).axes[0].get_title() == (
        "Only the untrained model has been evaluated: the next evaluation places the trained one against the "
        "baselines.")
    # Before the first step, step 0's loss is the model's loss, and the caption says where it stands.
    assert loss_figure([untrained], 65, baselines=B).axes[0].get_title().startswith("Not yet better than random")
    assert loss_figure([untrained, *steps], 65, baselines=B, x="tokens").axes[0].get_title().startswith("Only the")


def test_the_bits_axis_converts_with_the_runs_ratio():
    fig = loss_figure(EVENTS, 50257, baselines=Baselines(6.0, 5.0, 0.25, 50257))
    FigureCanvasAgg(fig).draw()  # the right axis takes its limits from the left one as it is drawn
    ax, right = fig.axes[0], fig.axes[0].child_axes[0]
    low, high = ax.get_ylim()
    assert right.get_ylim() == pytest.approx((low * 0.25 / math.log(2), high * 0.25 / math.log(2)))


def test_the_data_preview_table_lists_the_baselines(tiny_text):
    data = prepare_data([tiny_text], "char", 32, 0.1)
    table = stats_markdown(data.stats, data.tokenizer, 32, data.baselines)
    assert f"| loss of character frequencies alone (unigram) | {data.baselines.unigram:.3f}" in table
    assert "| loss knowing the previous character (bigram) |" in table and "bits per character" in table


# ------------------------------------------------------------------------------------------------
# Kept with the run: a restarted server shows them, an old run draws without them, a resume adds them


def test_a_run_keeps_its_baselines_and_a_run_from_before_them_still_draws(tmp_path):
    import json

    from gptlab.checkpoint import CONFIG_FILE, load_checkpoint
    from gptlab.runs import STATUS_FILE
    from gptlab.service import Lab, Limits
    from tests.forms import PASTE, SCRATCH, tiny

    text = "the quick brown fox jumps over the lazy dog. " * 60
    lab = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    final = list(lab.start(owner="", source=PASTE, files=None, pasted=text, tokenizer="gpt2", start_from=SCRATCH,
                           settings=tiny()))[-1]
    owner, run_id = final.owner, final.run_id
    assert "bits per character" in final.status and "as unsure as choosing among" in final.status
    folder = lab.registry.folder(owner, run_id)
    assert "baselines" in load_checkpoint(folder / "last").extra["data"]

    restarted = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    figure = restarted.loss_view(owner=owner, run_id=run_id, log_scale=False, x_axis="step")
    assert figure.axes[0].child_axes and "previous token" in " ".join(figure.axes[0].get_legend_handles_labels()[1])

    # A run from before baselines were kept: its status file and checkpoints hold none.
    status = json.loads((folder / STATUS_FILE).read_text())
    del status["data"]["baselines"]
    (folder / STATUS_FILE).write_text(json.dumps(status))
    for checkpoint in ("last", "best"):
        meta = json.loads((folder / checkpoint / CONFIG_FILE).read_text())
        del meta["extra"]["data"]["baselines"]
        (folder / checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    old = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    figure = old.loss_view(owner=owner, run_id=run_id, log_scale=False, x_axis="step")
    assert not figure.axes[0].child_axes and "bigram" not in " ".join(figure.axes[0].get_legend_handles_labels()[1])
    (view,) = list(old.attach(owner=owner, run_id=run_id))
    assert "bits per character" not in view.status and "perplexity" in view.status

    resumed = list(old.resume(owner=owner, run_id=run_id, max_steps=6, max_time=0))[-1]
    assert "bits per character" in resumed.status
    assert "baselines" in load_checkpoint(folder / "last").extra["data"]
