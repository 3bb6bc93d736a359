"""The app's service, without gradio: previews (and every way the data can be wrong: the message is
returned next to the input, never raised), the shift table, the size summary, owner tokens, the limits
a request is checked against, training, resuming, downloads, sampling and uploaded checkpoints
(hostile zips included)."""

import csv
import io
import json
import re
import shutil
import sys
import zipfile

import pytest

from gptlab.checkpoint import load_checkpoint
from tests.forms import PASTE, SCRATCH, SHAKESPEARE, UPLOAD, decoding, hyper
from gptlab.config import MODEL_FORM, SAMPLE_FORM, TRAIN_FORM, ModelConfig
from gptlab.service import OWNER_PATTERN, Lab, Limits
from gptlab.views import LiveView, Preview

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20  # ~3k chars
LONG = 100_000
STEP = re.compile(r"step (\d+)")


def start(lab, owner="", text=TEXT, **overrides) -> list[LiveView]:
    """Train through the service to the end of the live view."""
    return list(lab.start(owner=owner, source=PASTE, files=None, pasted=text, tokenizer="char", start_from=SCRATCH,
                          settings=hyper(**overrides)))


def step_of(status: str) -> int:
    return int(STEP.search(status).group(1))


@pytest.fixture
def lab(tmp_path):
    return Lab(tmp_path / "runs", limits=Limits(max_upload_mb=0.01, max_params=100_000, max_new_tokens=50,
                                                poll_seconds=0.05))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(lab, owner, run_id, views) of a finished tiny run."""
    lab = Lab(tmp_path_factory.mktemp("service") / "runs", limits=Limits(poll_seconds=0.05))
    views = start(lab, max_steps=20, eval_interval=10, sample_interval=10)
    return lab, views[-1].owner, views[-1].run_id, views


def test_the_form_lists_match_the_config_fields():
    assert len(set(MODEL_FORM + TRAIN_FORM)) == len(MODEL_FORM + TRAIN_FORM) == len(hyper())
    assert set(SAMPLE_FORM) == set(decoding())


# ------------------------------------------------------------------------------------------------
# Data


def test_preview_of_pasted_text_reports_stats_first_lines_and_vocabulary(lab):
    view = lab.preview(source=PASTE, files=None, pasted=TEXT, tokenizer="char", block_size=32)
    assert view.message.startswith("**Ready**")
    assert f"| characters | {len(TEXT):,} |" in view.stats and "char tokenizer" in view.stats
    assert view.head == "\n".join(TEXT.split("\n")[:20])
    assert view.vocab_size == len(set(TEXT)) and len(view.shift) == 12


def test_preview_of_bundled_shakespeare_and_of_uploaded_files(lab, tmp_path):
    view = lab.preview(source=SHAKESPEARE, files=None, pasted="", tokenizer="char", block_size=32)
    assert view.message.startswith("**Ready**") and "characters" in view.stats and view.head.strip()
    assert view.vocab_size > 26

    a, b = tmp_path / "a.txt", tmp_path / "b.md"
    a.write_text(TEXT[:1000], encoding="utf-8")
    b.write_text("# notes\n" + TEXT[:1000], encoding="utf-8")
    view = lab.preview(source=UPLOAD, files=[str(a), str(b)], pasted="", tokenizer="char", block_size=16)
    assert view.message == "**Ready**: 2 document(s)."
    assert view.head == "\n".join(TEXT[:1000].split("\n")[:20])  # the first document's first lines


@pytest.mark.parametrize("source, content, expected", [
    (PASTE, None, "Paste some text into the box first"),
    (PASTE, "   \n\t ", "Paste some text into the box first"),
    (UPLOAD, None, "Choose one or more .txt or .md files"),
    (UPLOAD, b"plain text\x00\x01\x02 with NUL bytes" * 10, "looks like a binary file"),
    (UPLOAD, "café au lait, ".encode("latin-1") * 20, "is not valid UTF-8 text (byte 0xe9"),
    (UPLOAD, b"x" * 20_000, "this server takes at most 0.01 MB"),
])
def test_preview_reports_bad_data_next_to_the_input(lab, tmp_path, source, content, expected):
    files, pasted = None, content
    if source == UPLOAD:
        pasted = ""
        if content is not None:
            path = tmp_path / "data.txt"
            path.write_bytes(content)
            files = [str(path)]
    view = lab.preview(source=source, files=files, pasted=pasted, tokenizer="char", block_size=8)
    assert view.message.startswith("**Problem**") and expected in view.message
    assert view == Preview(view.message)  # nothing else is shown
    assert str(tmp_path) not in view.message  # a file's name, never its server path


def test_preview_of_text_too_short_for_the_context_names_the_largest_context(lab):
    # 100 characters: validation holds 10 tokens, so the longest usable context is 10 - 1 = 9.
    view = lab.preview(source=PASTE, files=None, pasted="abcdefghij" * 10, tokenizer="char", block_size=32)
    assert view.message.startswith("**Problem**: The text is too short for a context length of 32")
    assert "at most 9" in view.message and view == Preview(view.message)


@pytest.mark.parametrize("block_size", [1.5, None, float("nan")])
def test_preview_names_a_context_length_that_is_not_a_whole_number(lab, block_size):
    view = lab.preview(source=PASTE, files=None, pasted=TEXT, tokenizer="char", block_size=block_size)
    assert view.message.startswith("**Problem**: block_size must be a whole number")


def test_shift_table_pairs_each_input_token_with_the_next_one(lab):
    table = lab.preview(source=PASTE, files=None, pasted="hello world\n" * 10, tokenizer="char", block_size=4).shift
    assert table[:7] == [["0", "h", "e"], ["1", "e", "l"], ["2", "l", "l"], ["3", "l", "o"], ["4", "o", "␣"],
                         ["5", "␣", "w"], ["6", "w", "o"]]
    assert table[10] == ["10", "d", "⏎"]  # white space is made visible
    assert all(row[2] == below[1] for row, below in zip(table, table[1:]))  # targets = inputs shifted by one
    assert [row[0] for row in table] == [str(i) for i in range(12)]


# ------------------------------------------------------------------------------------------------
# Settings


def test_size_summary_shows_parameters_memory_and_the_limit(lab):
    summary = lab.size_summary(tokenizer="char", vocab_size=40, settings=hyper(n_layer=2, n_embd=32))
    params = ModelConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=32).num_params()
    assert f"**{params / 1e6:.2f}M parameters**" in summary
    assert re.search(r"about \*\*\d[\d,]* MiB\*\* to train at batch 8", summary)
    assert "256 tokens per step" in summary and "Over this server's limit" not in summary

    big = lab.size_summary(tokenizer="char", vocab_size=40, settings=hyper(n_layer=4, n_embd=128, n_head=4))
    assert "**Over this server's limit** of" in big  # Limits(max_params=100_000) in the fixture
    assert lab.size_summary(tokenizer="char", vocab_size=40, settings=hyper(n_embd=30, n_head=4)).startswith(
        "**Problem**: n_embd (30) must be divisible")


def test_size_summary_and_the_start_check_assume_the_same_vocabulary_before_the_text_is_read(lab):
    # Before a preview has read the text, both assume a byte's worth of characters.
    settings = hyper(n_layer=1, n_embd=64, n_head=2, block_size=32)
    params = ModelConfig(vocab_size=256, block_size=32, n_layer=1, n_head=2, n_embd=64).num_params()
    assert f"**{params / 1e6:.2f}M parameters**" in lab.size_summary(tokenizer="char", vocab_size=None,
                                                                     settings=settings)
    gpt2 = lab.size_summary(tokenizer="gpt2", vocab_size=40, settings=settings)
    assert "**Over this server's limit**" in gpt2  # 50,257 tokens of 64 channels: over 100k parameters


def test_preset_settings_hold_every_form_field():
    values = Lab.preset_settings("tiny")
    assert set(MODEL_FORM + TRAIN_FORM + ("tokenizer",)) <= set(values)
    assert values["n_layer"] == 2 and values["tokenizer"] == "char"


def test_start_refuses_a_model_over_the_parameter_limit(lab):
    with pytest.raises(ValueError, match=r"That model has about 0\.8M parameters; this server allows"):
        start(lab, n_layer=4, n_embd=128, n_head=4)
    assert not any(p.is_dir() for p in lab.registry.root.iterdir())  # nothing was started


def test_start_turns_bad_settings_into_a_message(lab):
    with pytest.raises(ValueError, match=r"n_layer must be a whole number, got 1\.5"):
        start(lab, n_layer=1.5)
    with pytest.raises(ValueError, match="Paste some text"):
        start(lab, text="")


def test_owner_tokens_are_kept_when_valid_and_replaced_when_malformed():
    token = Lab.owner_or_new("")
    assert OWNER_PATTERN.match(token) and Lab.owner_or_new(token) == token
    assert Lab.owner_or_new("") != token  # a fresh secret each time
    for bad in (None, "", "short", "x" * 65, "has spaces in it here", "../../etc/passwd-xxxxxxx", 12345, ["a"] * 20):
        new = Lab.owner_or_new(bad)
        assert new != bad and OWNER_PATTERN.match(new)


# ------------------------------------------------------------------------------------------------
# Training


def test_training_streams_live_views_until_finished(trained):
    lab, owner, run_id, views = trained
    assert OWNER_PATTERN.match(owner) and all(v.owner == owner and v.run_id == run_id for v in views)
    assert len(views) >= 2
    progress = [v.progress for v in views]
    assert progress == sorted(progress) and progress[-1] == 100.0
    final = views[-1]
    assert "· finished: reached max_steps (20)" in final.status and "validation loss" in final.status
    assert final.loss is not None and final.dynamics is not None  # the last view draws everything
    assert final.sample.startswith("(step 20)\n")
    assert [value for _, value in final.runs] == [run_id]
    assert all(v.runs is None for v in views[1:-1])  # the run list is sent only when it can change


def test_resume_with_max_time_off_drops_the_old_time_budget(lab):
    status = start(lab, max_steps=LONG, max_time=0.5, eval_interval=1000)[-1]
    assert "reached the time budget of 0.5 s" in status.status
    target = step_of(status.status) + 5
    views = list(lab.resume(owner=status.owner, run_id=status.run_id, max_steps=target, max_time=0))
    assert f"· finished: reached max_steps ({target})" in views[-1].status


def test_attach_without_runs_gives_a_fresh_owner_and_an_empty_view(lab):
    (view,) = list(lab.attach(owner=""))
    assert OWNER_PATTERN.match(view.owner) and view.run_id is None and view.runs == []
    assert "No run yet" in view.status


def test_stop_and_resume_need_a_run(lab):
    assert lab.stop(owner="", run_id=None) == "No run to stop."
    with pytest.raises(ValueError, match="There is no run to resume yet"):
        next(lab.resume(owner="", run_id=None, max_steps=10, max_time=0))


def test_downloads_give_a_loadable_checkpoint_zip_and_the_metrics(trained, tmp_path):
    lab, owner, run_id, _ = trained
    archive, metrics_csv, metrics_jsonl, report, plot = lab.downloads(owner=owner, run_id=run_id)
    assert archive.name == f"gptlab-{run_id}-best.zip" and metrics_csv.name == "metrics.csv"
    assert report.name == "report.md" and "## Results" in report.read_text(encoding="utf-8") and plot.name == "loss.png"

    shutil.unpack_archive(archive, tmp_path / "ckpt")
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    assert checkpoint.step in (10, 20) and checkpoint.model_config.n_embd == 32

    events = [json.loads(line) for line in metrics_jsonl.read_text(encoding="utf-8").splitlines()]
    assert events == [e.as_dict() for e in lab.registry.events(owner, run_id)] and events[-1]["event"] == "done"
    rows = list(csv.DictReader(io.StringIO(metrics_csv.read_text(encoding="utf-8"))))
    assert [r["event"] for r in rows].count("step") == 20 and [r["event"] for r in rows].count("eval") == 3
    assert [int(r["step"]) for r in rows if r["event"] == "step"] == list(range(1, 21))

    with pytest.raises(ValueError, match="There is no run"):
        lab.downloads(owner=Lab.owner_or_new(""), run_id=run_id)


def test_the_gguf_download_is_the_best_checkpoint_for_llama_cpp_with_its_modelfile(trained, monkeypatch):
    gguf = pytest.importorskip("gguf")
    lab, owner, run_id, _ = trained
    path, modelfile = lab.gguf_download(owner=owner, run_id=run_id)
    assert path.name == f"gptlab-{run_id}-best.gguf" and modelfile.name == f"gptlab-{run_id}-best.Modelfile"
    reader = gguf.GGUFReader(path)
    assert reader.fields["tokenizer.ggml.model"].contents() == "rwkv"  # the run trained a char model
    assert f"FROM ./{path.name}" in modelfile.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="There is no run"):
        lab.gguf_download(owner=owner, run_id=None)
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ValueError, match=r"^GGUF export needs the gguf package: pip install gguf==0\.19\.0$"):
        lab.gguf_download(owner=owner, run_id=run_id)


def test_loss_view_keeps_the_owners_choice_for_later_redraws(trained):
    lab, owner, run_id, _ = trained
    figure = lab.loss_view(owner=owner, run_id=run_id, log_scale=True, x_axis="tokens seen")
    axes = figure.axes[0]
    assert axes.get_yscale() == "log" and axes.get_xlabel() == "tokens seen"
    redraw = next(lab.watch(owner, run_id)).loss.axes[0]
    assert redraw.get_yscale() == "log" and redraw.get_xlabel() == "tokens seen"
    lab.loss_view(owner=owner, run_id=run_id, log_scale=False, x_axis="step")
    assert lab.loss_view(owner=owner, run_id="nonexistent", log_scale=False, x_axis="step").axes[0].has_data() is False


# ------------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("changes, expected", [
    (dict(max_new_tokens=1001), "max new tokens must be between 1 and 1000."),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive whole number, got 0."),
    (dict(max_new_tokens="many"), "max_new_tokens must be a whole number, got 'many'."),
    (dict(strategy="sample", temperature=0.0), "temperature must be above 0 for sampling"),
    (dict(strategy="sample", top_k=-3), "top_k must be a positive whole number or None (off), got -3."),
    (dict(strategy="sample", top_k=2.5), "top_k must be a whole number, got 2.5."),
    (dict(repetition_penalty=0.0), "repetition_penalty must be above 0"),
    (dict(strategy="beam", num_beams=1), "beam search needs num_beams of 2 or more."),
])
def test_invalid_decoding_settings_become_messages(trained, changes, expected):
    lab, owner, run_id, _ = trained
    with pytest.raises(ValueError, match=re.escape(expected)):
        next(lab.sample(owner=owner, run_id=run_id, which="best", upload=None, prompt="the",
                        decoding=decoding(**changes)))
    with pytest.raises(ValueError, match=re.escape(expected)):
        lab.next_tokens(owner=owner, run_id=run_id, which="best", upload=None, prompt="the",
                        decoding=decoding(**changes))


def test_sampling_streams_the_text_and_ignores_controls_the_strategy_does_not_use(trained):
    lab, owner, run_id, _ = trained
    texts = [s.text for s in lab.sample(owner=owner, run_id=run_id, which="best", upload=None, prompt="the ",
                                        decoding=decoding(max_new_tokens=12, top_k=-3, num_beams=1))]  # greedy: both unused
    assert texts[0] == "the " and len(texts[-1]) == len("the ") + 12
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    top = lab.next_tokens(owner=owner, run_id=run_id, which="best", upload=None, prompt="the ", decoding=decoding())
    assert len(top) == 15 and top[0].token == texts[-1][4].replace(" ", "␣")
    assert [t.probability for t in top] == sorted((t.probability for t in top), reverse=True)


def test_sampling_needs_a_checkpoint_to_sample_from(lab, tmp_path):
    with pytest.raises(ValueError, match="Choose a run first"):
        next(lab.sample(owner="", run_id=None, which="best", upload=None, prompt="the", decoding=decoding()))
    with pytest.raises(ValueError, match=r"Upload a checkpoint \.zip"):
        next(lab.sample(owner="", run_id=None, which="uploaded .zip", upload=None, prompt="the",
                        decoding=decoding()))
    not_zip = tmp_path / "ckpt.zip"
    not_zip.write_text("not a zip", encoding="utf-8")
    with pytest.raises(ValueError, match=r"ckpt\.zip is not a \.zip file"):
        lab.next_tokens(owner="", run_id=None, which="uploaded .zip", upload=str(not_zip), prompt="the",
                        decoding=decoding())


def upload_sample(lab, archive, max_new_tokens=4) -> str:
    return list(lab.sample(owner="", run_id=None, which="uploaded .zip", upload=str(archive), prompt="the ",
                           decoding=decoding(max_new_tokens=max_new_tokens)))[-1].text


def test_sampling_from_an_uploaded_checkpoint_zip(trained, tmp_path):
    lab, owner, run_id, _ = trained
    archive = shutil.make_archive(str(tmp_path / "mine"), "zip", root_dir=lab.registry.folder(owner, run_id) / "best")
    from_run = list(lab.sample(owner=owner, run_id=run_id, which="best", upload=None, prompt="the ",
                               decoding=decoding(max_new_tokens=12)))[-1].text
    assert upload_sample(lab, archive, 12) == from_run and len(from_run) == len("the ") + 12


def test_hostile_or_foreign_zips_are_refused_clearly(lab, tmp_path):
    traversal = tmp_path / "evil.zip"
    with zipfile.ZipFile(traversal, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("../evil.txt", "gotcha")
    with pytest.raises(ValueError, match=r"evil\.zip contains an unsafe path \(\.\./evil\.txt\); it was not unpacked"):
        upload_sample(lab, traversal)
    assert not (lab.registry.root / "evil.txt").exists() and not list(lab.registry.root.rglob("evil.txt"))

    no_config = tmp_path / "photos.zip"
    with zipfile.ZipFile(no_config, "w") as z:
        z.writestr("holiday/readme.txt", "not a model")
    with pytest.raises(ValueError, match=r"photos\.zip holds no config\.json: it is not a gptlab checkpoint"):
        upload_sample(lab, no_config)


def test_a_broken_uploaded_checkpoint_lists_its_problems_without_a_server_path(lab, tmp_path):
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("ckpt/config.json", "{not json")
    with pytest.raises(ValueError) as info:
        upload_sample(lab, broken)
    message = str(info.value)
    assert message.startswith("This checkpoint is not a usable gptlab checkpoint")
    assert "model.safetensors is missing" in message and "config.json is not valid JSON" in message
    assert str(lab.registry.root) not in message and "_uploads" not in message


def test_sampling_twice_from_the_same_upload_unpacks_it_once(trained, tmp_path):
    lab, owner, run_id, _ = trained
    archive = shutil.make_archive(str(tmp_path / "again"), "zip", root_dir=lab.registry.folder(owner, run_id) / "best")
    uploads = lab.registry.root / "_uploads"
    before = len(list(uploads.iterdir())) if uploads.is_dir() else 0
    for _ in range(3):
        upload_sample(lab, archive, 2)
    assert len(list(uploads.iterdir())) - before <= 1


def test_compare_sweep_and_run_against_run(trained):
    lab, owner, run_id, _ = trained
    result = lab.compare(owner=owner, run_id=run_id, prompt="the ", seed=1, temperature=0.8, max_new_tokens=10)
    assert result.untrained.startswith("the ") and result.trained.startswith("the ")
    assert result.untrained != result.trained
    rows = lab.sweep(owner=owner, run_id=run_id, prompt="the ", seed=1, max_new_tokens=10)
    assert [row.temperature for row in rows] == [0.2, 0.5, 0.8, 1.0, 1.4]
    both = lab.compare_runs(owner=owner, run_a=run_id, run_b=run_id, prompt="the ", seed=1, max_new_tokens=10)
    assert both.text_a == both.text_b and both.text_a.startswith("the ") and both.figure.axes[0].has_data()
    with pytest.raises(ValueError, match="Choose two runs"):
        lab.compare_runs(owner=owner, run_a=run_id, run_b=None, prompt="", seed=1, max_new_tokens=10)


def test_the_service_does_not_load_gradio():
    assert "gradio" not in sys.modules or "gptlab.ui" in sys.modules  # this file never imports the UI


def test_prompts_empty_too_long_or_outside_the_vocabulary(trained):
    lab, owner, run_id, _ = trained

    def run(prompt):
        return list(lab.sample(owner=owner, run_id=run_id, which="best", upload=None, prompt=prompt,
                               decoding=decoding(max_new_tokens=6)))

    empty = run("")  # a char model starts from a newline
    assert empty[0].text == "" and len(empty[-1].text) == 6 and not empty[-1].note
    long = run("the quick brown fox " * 3)  # 60 characters; the model's context is 32
    assert long[-1].note == ("The prompt is 60 tokens long; the model reads only the last 32 of them "
                             "(its context length).")
    assert long[-1].text.startswith("the quick brown fox " * 3) and len(long[-1].text) == 66
    with pytest.raises(ValueError, match="never saw in training: '😀'. Remove or replace them") as info:
        run("the 😀 emoji")
    assert "😀" in str(info.value)


def test_the_size_line_says_what_start_would_refuse(lab):
    summary = lab.size_summary(tokenizer="char", vocab_size=40, settings=hyper(batch_size=60_000))
    assert "**Over this server's limits**: Each step reads 1,920,000 tokens" in summary
    assert "Lower batch_size" in summary
    assert "Over this server's limits" not in lab.size_summary(tokenizer="char", vocab_size=40, settings=hyper())


def test_a_nanochat_run_trains_from_the_form_and_its_gguf_download_is_refused(lab):
    summary = lab.size_summary(tokenizer="char", vocab_size=40, settings=hyper(architecture="nanochat"))
    params = ModelConfig(vocab_size=40, block_size=32, n_layer=1, n_head=2, n_embd=32,
                         architecture="nanochat").num_params()
    assert f"**{params / 1e6:.2f}M parameters**" in summary
    final = start(lab, architecture="nanochat", max_steps=6, eval_interval=3)[-1]
    assert "finished: reached max_steps (6)" in final.status
    with pytest.raises(ValueError, match="architecture is 'nanochat'.*Hugging Face format"):
        lab.gguf_download(owner=final.owner, run_id=final.run_id)
