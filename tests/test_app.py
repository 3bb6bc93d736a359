"""The Gradio app's API, driven with gradio_client against the app launched on 127.0.0.1 inside the
test (the service behind it is tested without gradio in test_service.py).

Every endpoint keeps its name and its parameters' names. a training streams its progress; stop ends it with a last checkpoint; resume
continues the same run; a dropped connection (a refresh) leaves the run training, and /watch
re-attaches to it; a second training beyond the server's limit is refused with a "try again";
decoding settings behave; and one browser's runs are invisible to another.

One app (max_concurrent=1) is launched for the module and its runs are trained one at a time; a
run that a test leaves training is stopped after it. Every wait has a deadline, so a broken app
fails a test instead of hanging the suite.
"""

import os

# Before gradio is imported: no telemetry, version checks or proxies (nothing may leave the machine).
os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                  MPLBACKEND="Agg", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from gptlab.checkpoint import load_checkpoint
from tests.forms import PASTE, SCRATCH, decoding, hyper
from gptlab.config import MODEL_FORM, SAMPLE_FORM, TRAIN_FORM
from gptlab.service import OWNER_PATTERN, Lab, Limits
from gptlab.ui import build_demo, launch
from gptlab.ui.common import SERVER_FAULT, user_errors
from gptlab.runs import STATUS_FILE

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20  # ~3k chars
TIMEOUT = 60.0  # seconds; only reached when something is broken
PACE = 0.03  # seconds per optimiser step, at least (see the app fixture)
LONG = 100_000  # max_steps of a run that only ends by being stopped
STEP = re.compile(r"step (\d+)")


def step_of(status: str) -> int:
    return int(STEP.search(status).group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# Waiting on streamed jobs, always with a deadline


def wait_for(predicate, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def outputs_when(job, predicate, what: str) -> list:
    """The job's outputs once the latest satisfies `predicate` (it must, before the job ends)."""
    def ready():
        outs = job.outputs()
        if outs and predicate(outs[-1]):
            return outs
        assert not job.done(), f"the stream ended before {what}; last output: {outs[-1][2] if outs else None!r}"
        return None
    return wait_for(ready, what)


def finish(job) -> list:
    job.result(timeout=TIMEOUT)  # raises the app's error, if any
    return job.outputs()


def train(client, owner="", text=TEXT, **overrides):
    return client.submit(owner=owner, source=PASTE, files=None, pasted=text, tokenizer="char", start_from=SCRATCH,
                         **hyper(**overrides), api_name="/train")


# ------------------------------------------------------------------------------------------------
# Fixtures: one launched app for the module; small Labs (no server) for the handler tests


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(lab, url): the app on a free loopback port, training one model at a time.

    Every optimiser step is paced to take at least PACE seconds: a tiny model can otherwise finish
    between two redraws of the live view, and a run that waits to be stopped would spin both cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: the server and the training thread must not fight for both
    try:
        lab = Lab(tmp_path_factory.mktemp("app") / "runs", max_concurrent=1, limits=Limits(poll_seconds=0.25))
        lab.registry.step_hook = lambda step: time.sleep(PACE)
        demo = build_demo(lab)
        _, url, _ = launch(demo, lab, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
        try:
            yield lab, url
        finally:
            stop_all(lab)
            demo.close()
    finally:
        torch.set_num_threads(threads)


def stop_all(lab: Lab) -> None:
    """Stop every run still training, so the next test finds the server free."""
    for status in lab.registry.root.glob(f"*/{STATUS_FILE}"):
        info = json.loads(status.read_text(encoding="utf-8"))
        if info["status"] == "running":
            lab.registry.stop(info["owner"], info["id"])
            lab.registry.wait(info["id"], TIMEOUT)


@pytest.fixture
def server(app):
    """The module's app for one test; whatever the test leaves training is stopped afterwards."""
    lab, url = app
    yield lab, Client(url, verbose=False)
    stop_all(lab)


@pytest.fixture(scope="module")
def trained(app):
    """(owner, run_id, streamed outputs) of a finished tiny run, trained through /train."""
    lab, url = app
    job = train(Client(url, verbose=False), max_steps=20, eval_interval=10, sample_interval=10)
    outs = finish(job)
    return outs[-1][0], outs[-1][1], outs


# ------------------------------------------------------------------------------------------------
# Through the API, against the launched app


# Each endpoint's parameters, in order: scripts call them by these names (and older ones by position).
SWEEP_FORM = ["owner", "source", "files", "pasted", "tokenizer", "preset", *MODEL_FORM, *TRAIN_FORM]
API = {
    "/preview": ["source", "files", "pasted", "tokenizer", "block_size"],
    "/train": ["owner", "source", "files", "pasted", "tokenizer", "start_from", *MODEL_FORM, *TRAIN_FORM, "processes"],
    "/stop": ["owner", "run_id"],
    "/resume": ["owner", "run_id", "max_steps", "max_time"],
    "/watch": ["owner", "run_id"],
    "/downloads": ["owner", "run_id"],
    "/gguf_download": ["owner", "run_id"],
    "/compare": ["owner", "run_id", "prompt", "seed", "temperature", "max_new_tokens"],
    "/sweep": ["owner", "run_id", "prompt", "seed", "max_new_tokens"],
    "/compare_runs": ["owner", "run_a", "run_b", "prompt", "seed", "max_new_tokens"],
    "/sample": ["owner", "run_id", "which", "upload", "prompt", *SAMPLE_FORM],
    "/next_tokens": ["owner", "run_id", "which", "upload", "prompt", *SAMPLE_FORM],
    "/next_token_stages": ["owner", "run_id", "which", "upload", "prompt", *SAMPLE_FORM],
    "/beams": ["owner", "run_id", "which", "upload", "prompt", *SAMPLE_FORM],
    "/memorisation": ["owner", "run_id", "which", "upload", "prompt", "output"],
    "/lr_schedule": ["learning_rate", "min_lr", "lr_schedule", "warmup_steps", "max_steps", "max_time"],
    "/loss_doctor": ["owner", "run_id"],
    "/attention": ["owner", "run_id", "which", "upload", "prompt", "layer", "head"],
    "/logit_lens": ["owner", "run_id", "which", "upload", "prompt"],
    "/surprise": ["owner", "run_id", "passage"],
    "/tokens": ["owner", "run_id", "which", "upload", "prompt", "output"],
    "/command": ["preset", "tokenizer", *MODEL_FORM, *TRAIN_FORM, "source", "files"],
    "/settings_link": ["preset", "tokenizer", *MODEL_FORM, *TRAIN_FORM],
    "/save_settings": ["owner", "preset", "tokenizer", *MODEL_FORM, *TRAIN_FORM],
    "/load_settings": ["upload"],
    "/runs_history": ["owner", "against"],
    "/rename_run": ["owner", "run_id", "name"],
    "/delete_run": ["owner", "run_id"],
    "/overlay": ["owner", "run_ids", "x_axis", "smoothing"],
    "/seed_verdict": ["owner", "sweep_a", "sweep_b"],
    "/sweep_start": [*SWEEP_FORM, "axis_a", "values_a", "axis_b", "values_b", "budget_kind", "budget"],
    "/scaling_ladder": [*SWEEP_FORM, "sizes", "budget_kind", "budget"],
    "/exercise": [*SWEEP_FORM, "exercise"],
    "/repeat_seeds": [*SWEEP_FORM, "seeds", "budget_kind", "budget"],
    "/sweep_watch": ["owner", "sweep_id"],
    "/sweep_resume": ["owner", "sweep_id"],
    "/sweep_cancel": ["owner", "sweep_id"],
    "/time_machine": ["owner", "run_id", "step"],
    "/timeline": ["owner", "run_id"],
    "/compare_steps": ["owner", "run_id", "step_a", "step_b"],
    "/list_runs": ["owner"],
    "/start_training": ["owner", "text", "preset", "max_steps"],
    "/run_status": ["owner", "run_id"],
}


def test_every_endpoint_keeps_its_name_and_parameter_names(server):
    _, client = server
    api = client.view_api(return_format="dict", print_info=False)
    assert {name: [p["parameter_name"] for p in info["parameters"]]
            for name, info in api["named_endpoints"].items()} == API
    assert API["/train"][6:14] == ["n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "activation",
                                  "architecture"]
    assert API["/sample"][5:8] == ["strategy", "temperature", "top_k"]


def test_the_gpus_box_shows_only_where_a_run_can_use_several(tmp_path):
    for most, shown in ((1, False), (2, True)):
        demo = build_demo(Lab(tmp_path / f"runs-{most}", limits=Limits(max_processes=most)))
        box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "processes")
        assert (box.visible, box.maximum, box.value) == (shown, most, 1)


def test_the_readme_client_example_runs(server):
    """The README's gradio_client example, as written there, against the launched app."""
    _, client = server
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(from gradio_client import Client\n.*?)```", readme, re.S).group(1)
    example = example.replace('Client("http://127.0.0.1:7860/")', "Client(url, verbose=False)")
    example = example.replace("max_steps=500", "max_steps=4, n_layer=1, n_embd=32, n_head=2, block_size=32, "
                                                "batch_size=4, eval_interval=2, eval_batches=1, sample_interval=0")
    example = example.replace("max_new_tokens=200", "max_new_tokens=5")
    printed = []
    exec(compile(example, "README.md", "exec"), {"url": client.src, "print": printed.append})
    assert any("finished: reached max_steps (4)" in str(line) for line in printed)
    assert printed[-1].startswith("ROMEO:") and len(printed[-1]) > len("ROMEO:")


def test_an_unexpected_failure_reaches_the_caller_as_a_sentence_without_paths(server, monkeypatch):
    lab, client = server

    def broken(**_):
        raise OSError(2, "No such file or directory", str(lab.registry.root / "secret" / "file.bin"))

    monkeypatch.setattr(lab, "downloads", broken)
    with pytest.raises(AppError) as info:
        client.predict(owner="", run_id="abc", api_name="/downloads")
    assert SERVER_FAULT in str(info.value) and str(lab.registry.root) not in str(info.value)


def test_training_streams_progress_until_finished(trained):
    owner, run_id, outs = trained
    assert OWNER_PATTERN.match(owner) and all(o[0] == owner and o[1] == run_id for o in outs)
    assert len(outs) >= 3  # step 0, some steps in between, the end
    progress = [o[3] for o in outs]
    assert progress == sorted(progress) and progress[0] < 50 and progress[-1] == 100.0
    steps = [step_of(o[2]) for o in outs]
    assert steps == sorted(steps) and steps[-1] == 20
    final = outs[-1]
    assert "· finished: reached max_steps (20)" in final[2] and "validation loss" in final[2]
    for plot in (final[4], final[5]):
        assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    assert final[6].startswith("(step 20)\n")  # the latest sample
    assert [value for _, value in final[7]["choices"]] == [run_id] and final[7]["value"] == run_id


def test_the_time_machine_follows_the_run_and_scrubs_its_timeline(server, trained):
    owner, run_id, outs = trained
    _, client = server
    assert outs[-1][-1]["maximum"] == 20  # the slider's range (the last live output) reaches the last snapshot
    data, step_a, step_b = client.predict(owner, run_id, api_name="/timeline")
    assert data["steps"] == [0, 10, 20] and data["message"] == "" and len(data["snapshots"]) == 3
    assert "<b>step 10</b>" in client.predict(owner, run_id, 13, api_name="/time_machine")
    left, right = client.predict(owner, run_id, 0, 20, api_name="/compare_steps")
    assert "<b>step 0</b>" in left and "<b>step 20</b>" in right


def test_stop_ends_the_stream_and_keeps_the_last_checkpoint(server):
    lab, client = server
    job = train(client, max_steps=LONG, eval_interval=1000)
    outs = outputs_when(job, lambda o: step_of(o[2]) >= 2, "a few steps")
    owner, run_id = outs[-1][0], outs[-1][1]
    assert "· running" in outs[-1][2]

    assert client.predict(owner, run_id, api_name="/stop") == \
        "Stopping after the current step; the last checkpoint is kept."
    final = finish(job)[-1]
    assert re.search(r"· stopped: stopped by request at step \d+", final[2])
    step = step_of(final[2])
    assert load_checkpoint(lab.registry.folder(owner, run_id) / "last").step == step
    assert lab.registry.get(owner, run_id).status == "stopped"
    assert client.predict(owner, run_id, api_name="/stop") == "That run is not training."


def test_resume_continues_the_same_run_to_the_new_step_count(server):
    lab, client = server
    job = train(client, max_steps=LONG, eval_interval=1000)
    owner, run_id = outputs_when(job, lambda o: step_of(o[2]) >= 2, "a few steps")[-1][:2]
    client.predict(owner, run_id, api_name="/stop")
    stopped_at = step_of(finish(job)[-1][2])

    outs = finish(client.submit(owner, run_id, stopped_at + 6, 0, api_name="/resume"))
    assert all(o[1] == run_id for o in outs)
    assert f"· finished: reached max_steps ({stopped_at + 6})" in outs[-1][2]
    steps = [e.step for e in lab.registry.events(owner, run_id) if e.kind == "step"]
    assert steps == list(range(1, stopped_at + 7))  # one history, continued where it stopped
    assert load_checkpoint(lab.registry.folder(owner, run_id) / "last").step == stopped_at + 6
    assert [value for _, value in outs[-1][7]["choices"]].count(run_id) == 1  # still one run, not a new one


def test_a_dropped_connection_leaves_the_run_training_and_watch_reattaches(server):
    lab, client = server
    job = train(client, max_steps=LONG, eval_interval=1000)
    owner, run_id = outputs_when(job, lambda o: step_of(o[2]) >= 1, "the first steps")[-1][:2]
    assert job.cancel()  # what a refresh or a closed tab does to the event
    wait_for(job.done, "the cancelled job to end")

    seen = len(lab.registry.events(owner, run_id))
    wait_for(lambda: len(lab.registry.events(owner, run_id)) > seen + 3, "the run to go on training unwatched")
    assert lab.registry.get(owner, run_id).status == "running"

    watch = client.submit(owner, run_id, api_name="/watch")
    first = outputs_when(watch, lambda o: True, "the re-attached view")[0]
    assert first[:2] == (owner, run_id) and "· running" in first[2]
    assert step_of(first[2]) >= 1 and first[7]["value"] == run_id
    outputs_when(watch, lambda o: step_of(o[2]) > step_of(first[2]), "new steps on the re-attached stream")

    client.predict(owner, run_id, api_name="/stop")
    assert "· stopped: stopped by request" in finish(watch)[-1][2]


def test_a_training_beyond_the_server_limit_is_refused_with_try_again(server):
    lab, client = server
    job = train(client, max_steps=LONG, eval_interval=1000)
    owner, run_id = outputs_when(job, lambda o: "· running" in o[2], "the first run to start")[-1][:2]
    other = Client(client.src, verbose=False)
    with pytest.raises(AppError, match=r"already training 1 model\(s\), its limit\. Try again when a run has "
                                       r"finished, or stop yours"):
        train(other, max_steps=5).result(timeout=TIMEOUT)
    assert lab.registry.get(owner, run_id).status == "running"  # the refusal touched nothing
    assert len(lab.registry.list(owner)) == 1


def test_a_setting_out_of_its_range_is_refused_with_the_fields_name(server):
    lab, client = server
    before = len(lab.registry._all())
    with pytest.raises(AppError, match=r"^Block size must be between 1 and 65,536, not 0\. Change it and try again\.$"):
        train(client, block_size=0).result(timeout=TIMEOUT)
    with pytest.raises(AppError, match=r"^Batch size must be between 1 and 65,536, not 70,000\."):
        train(client, batch_size=70_000).result(timeout=TIMEOUT)
    assert len(lab.registry._all()) == before  # refused before a run was made


def test_preview_and_downloads_through_the_api(server, trained):
    _, client = server
    message, stats, head, table, tokens = client.predict(PASTE, None, "hello world\n" * 10, "char", 4,
                                                         api_name="/preview")
    assert message == "**Ready**: 1 document(s)." and "| characters | 120 |" in stats
    assert "(bigram)" in stats and 'title="id ' in tokens and "GPT-2 BPE" in tokens
    assert head.startswith("hello world\n") and table["data"][0] == ["0", "h", "e"]
    message, *_ = client.predict(PASTE, None, "too short", "char", 32, api_name="/preview")
    assert message.startswith("**Problem**: The text is too short for a context length of 32")

    owner, run_id, _ = trained
    files = client.predict(owner, run_id, api_name="/downloads")
    assert [Path(f).name for f in files] == [f"gptlab-{run_id}-best.zip", "metrics.csv", "metrics.jsonl", "report.md",
                                             "loss.png"]
    assert zipfile.is_zipfile(files[0]) and "config.json" in zipfile.ZipFile(files[0]).namelist()
    if importlib.util.find_spec("gguf"):
        files = client.predict(owner, run_id, api_name="/gguf_download")
        assert [Path(f).name for f in files] == [f"gptlab-{run_id}-best.gguf", f"gptlab-{run_id}-best.Modelfile"]
        assert Path(files[0]).read_bytes()[:4] == b"GGUF"


def test_the_lr_schedule_and_the_loss_doctor_through_the_api(server, trained):
    _, client = server
    _, text, values = client.predict(1e-3, 1e-4, "cosine", 10, 100, 0, api_name="/lr_schedule")
    assert values["steps"][:2] == [1, 2] and values["lr"][9] == pytest.approx(1e-3 * 10 / 11)
    assert "This server stops every run" in text
    _, text, values = client.predict(1e-3, 1e-2, "cosine", 10, 100, 0, api_name="/lr_schedule")
    assert text.startswith("**Problem**: min_lr must be between 0 and learning_rate") and "problem" in values
    owner, run_id, _ = trained
    markdown, data, *_ = client.predict(owner, run_id, api_name="/loss_doctor")
    assert markdown.startswith("**Loss doctor**") and data and {"kind", "fix"} <= set(data[0])
    with pytest.raises(AppError, match="start one on the Train tab"):
        client.predict(owner, "", api_name="/loss_doctor")


def test_decoding_settings_through_the_api(server, trained):
    _, client = server
    owner, run_id, _ = trained
    prompt = "the "

    def sample(**settings):
        return client.predict(owner, run_id, "best", None, prompt, **decoding(**settings), api_name="/sample")

    greedy = sample(strategy="greedy")
    assert greedy.startswith(prompt) and len(greedy) == len(prompt) + 24  # a char model: one character a token
    assert sample(strategy="greedy", seed=99) == greedy  # greedy ignores the seed

    sampled = sample(strategy="sample", temperature=0.9, top_k=10, top_p=0.9, min_p=0.05, seed=7)
    assert sampled.startswith(prompt) and len(sampled) == len(prompt) + 24
    assert sample(strategy="sample", temperature=0.9, top_k=10, top_p=0.9, min_p=0.05, seed=7) == sampled

    beam = sample(strategy="beam", num_beams=3, length_penalty=1.0)
    assert beam.startswith(prompt) and len(beam) == len(prompt) + 24

    no_repeat = sample(strategy="greedy", no_repeat_ngram_size=3, max_new_tokens=40)
    trigrams = [no_repeat[i:i + 3] for i in range(len(no_repeat) - 2)]
    assert no_repeat.startswith(prompt) and len(set(trigrams)) == len(trigrams)

    penalised = sample(strategy="greedy", repetition_penalty=1.5)
    assert penalised.startswith(prompt) and len(penalised) == len(prompt) + 24
    assert sample(strategy="greedy", repetition_penalty=1.5) == penalised

    continuation = greedy[len(prompt):]
    stop = continuation[10:12]
    expected = prompt + continuation[:continuation.find(stop)]
    assert sample(strategy="greedy", stop=f"qqqq|{stop}") == expected  # ends before the first stop string

    table = client.predict(owner, run_id, "best", None, prompt, **decoding(), api_name="/next_tokens")
    probabilities = [row[2] for row in table["data"]]
    assert len(probabilities) == 15 and probabilities == sorted(probabilities, reverse=True)
    assert table["data"][0][0] == continuation[0].replace(" ", "␣")  # greedy takes the most likely token

    chips = client.predict(owner, run_id, "best", None, prompt, "", api_name="/tokens")  # before any output
    assert chips.count('class="token t') == len(prompt) and "4 tokens" in chips


def test_the_decoding_insight_endpoints(server, trained):
    _, client = server
    owner, run_id, _ = trained
    beams = client.predict(owner, run_id, "best", None, "the ", **decoding(strategy="beam", num_beams=3),
                           api_name="/beams")
    assert [row[0] for row in beams["data"]] == [1, 2, 3] and all(row[1].startswith("the ") for row in beams["data"])
    _, note = client.predict(owner, run_id, "best", None, "the ", **decoding(strategy="sample", top_k=5),
                             api_name="/next_token_stages")
    assert "Sampling draws from the last panel" in note
    html = client.predict(owner, run_id, "best", None, "", "<i>" + TEXT[5:40], api_name="/memorisation")
    assert "&lt;i&gt;" in html and "35 characters long" in html
    with pytest.raises(AppError, match="uploaded checkpoint carries no training text"):
        client.predict(owner, run_id, "uploaded .zip", None, "", "abc", api_name="/memorisation")


def test_compare_sweep_and_run_against_run(server, trained):
    _, client = server
    owner, run_id, _ = trained
    untrained, trained_text = client.predict(owner, run_id, "the ", 1, 0.8, 10, api_name="/compare")
    assert untrained.startswith("the ") and trained_text.startswith("the ") and untrained != trained_text
    sweep = client.predict(owner, run_id, "the ", 1, 10, api_name="/sweep")
    assert [row[0] for row in sweep["data"]] == [0.2, 0.5, 0.8, 1.0, 1.4]
    plot, a, b = client.predict(owner, run_id, run_id, "the ", 1, 10, api_name="/compare_runs")
    assert plot["plot"].startswith("data:image/") and a == b and a.startswith("the ")


def test_runs_are_invisible_to_another_browser(server, trained):
    lab, client_a = server
    owner_a, run_a, _ = trained
    client_b = Client(client_a.src, verbose=False)
    owner_b = Lab.owner_or_new("")
    nothing = f"There is no run '{run_a}' in this browser session."

    for call in (lambda: client_b.predict(owner_b, run_a, api_name="/stop"),
                 lambda: client_b.predict(owner_b, run_a, api_name="/downloads"),
                 lambda: client_b.predict(owner_b, run_a, "best", None, "the", **decoding(), api_name="/sample"),
                 lambda: client_b.predict(owner_b, run_a, "the", 1, 0.8, 10, api_name="/compare")):
        with pytest.raises(AppError, match=re.escape(nothing)):
            call()

    assert run_a not in watch_as(client_b, owner_b, run_a)  # B has no run at all yet
    outs = finish(train(client_b, owner_b, max_steps=2, eval_interval=2))
    run_b = outs[-1][1]
    assert outs[-1][0] == owner_b and run_b != run_a
    assert [value for _, value in outs[-1][7]["choices"]] == [run_b]  # B's list holds B's run only
    assert run_a not in watch_as(client_b, owner_b, run_a)  # B with a run of its own
    assert [r.id for r in lab.registry.list(owner_a)] == [run_a]
    assert [r.id for r in lab.registry.list(owner_b)] == [run_b]


def watch_as(client, owner, run_id) -> str:
    """What /watch shows `owner` when asked for `run_id`: the whole view, or the refusal."""
    try:
        return json.dumps(client.predict(owner, run_id, api_name="/watch"))
    except AppError as e:
        assert "There is no run" in str(e)
        return str(e).replace(repr(run_id), "<id>")


def test_watching_someone_elses_run_says_there_is_no_such_run(server, trained):
    _, client = server
    _, run_a, _ = trained
    with pytest.raises(AppError, match=re.escape(f"There is no run '{run_a}' in this browser session.")):
        client.predict(Lab.owner_or_new(""), run_a, api_name="/watch")


def test_handlers_run_torch_on_one_thread_in_whichever_thread_gradio_uses():
    from gptlab import threads

    if threads._openmp is None:
        pytest.skip("torch's OpenMP runtime was not found")
    full = torch.get_num_threads()

    def in_new_thread(fn):
        with ThreadPoolExecutor(1) as pool:  # a fresh thread each call, as each Gradio step may get
            return pool.submit(fn).result()

    assert in_new_thread(user_errors(lambda: torch.get_num_threads())) == 1

    # Gradio may resume a generator on a different worker thread at every step.
    def live_view():
        yield torch.get_num_threads()
        yield torch.get_num_threads()

    steps = user_errors(live_view)()
    assert in_new_thread(lambda: next(steps)) == 1
    assert in_new_thread(lambda: next(steps)) == 1
    assert in_new_thread(lambda: next(steps, "done")) == "done"

    # Training threads, and the rest of the process, keep every core.
    assert in_new_thread(torch.get_num_threads) == full
    assert torch.get_num_threads() == full


def test_generator_handlers_turn_errors_into_messages_and_close_their_inner_generator():

    closed = []

    def failing():
        yield 1
        raise ValueError("Make it smaller.")

    def endless():
        try:
            while True:
                yield 1
        finally:
            closed.append(True)

    def in_worker(fn):  # as Gradio steps a generator: never in the main thread, whose team it would change
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(fn).result()

    steps = user_errors(failing)()
    assert in_worker(lambda: next(steps)) == 1
    with pytest.raises(gr.Error, match="Make it smaller."):
        in_worker(lambda: next(steps))
    steps = user_errors(endless)()
    in_worker(lambda: next(steps))
    steps.close()  # a closed tab or a cancelled event
    assert closed == [True]


@pytest.mark.skipif(not sys.platform.startswith("linux") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
                    reason="malloc arenas are glibc's")
def test_training_threads_allocate_from_the_main_malloc_arena():
    """A thread arena hands freed activations back to the OS and faults them in again each step."""
    code = ("import app, threading, ctypes, torch\n"
            "t = threading.Thread(target=lambda: torch.ones(2**22).sum()); t.start(); t.join()\n"
            "ctypes.CDLL(None).malloc_stats()\n")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("Arena ") == 1, out.stderr


# ------------------------------------------------------------------------------------------------
# Experiments through the API


def test_a_sweep_through_the_api_trains_each_value_and_fills_the_history(server):
    lab, client = server
    owner = "sweeper-owner-token-0001"
    settings = hyper(max_steps=4, eval_interval=2)
    job = client.submit(owner=owner, source=PASTE, files=None, pasted=TEXT, tokenizer="char", preset="tiny", **settings,
                        axis_a="learning_rate", values_a="1e-3, 1e-2", axis_b="", values_b="",
                        budget_kind="steps per run", budget=4, api_name="/sweep_start")
    outs = finish(job)
    sweep_id, status, progress, table = outs[-1][:4]
    assert progress == 100 and "2 of 2 runs ended" in status
    rows = table["data"]
    assert [r[0] for r in rows] == ["learning_rate=0.001", "learning_rate=0.01"] and [r[-1] for r in rows].count("★") == 1
    history, *_ = client.predict(owner=owner, against="", api_name="/runs_history")
    assert len(history["data"]) == 2 and history["data"][0][-1].startswith("learning_rate 0.001 → 0.01")
    run_ids = [i.id for i in lab.registry.list(owner)]
    client.predict(owner=owner, run_ids=run_ids, x_axis="epoch", smoothing=0.3, api_name="/overlay")
    with pytest.raises(Exception, match="between 2 and 6 values"):
        client.predict(owner=owner, source=PASTE, files=None, pasted=TEXT, tokenizer="char", preset="tiny", **settings,
                       axis_a="learning_rate", values_a="1e-3", axis_b="", values_b="", budget_kind="steps per run",
                       budget=4, api_name="/sweep_start")


def test_the_command_endpoint_gives_the_cli_command(server):
    _, client = server
    command = client.predict(preset="tiny", tokenizer="char", **hyper(learning_rate=0.004), source=PASTE, files=None,
                             api_name="/command")
    assert command.startswith("python -m gptlab train --data pasted-text.txt --preset tiny") and "0.004" in command


def test_the_named_bound_check_survives_gradio_rebuilding_a_component():
    import gradio as gr
    from gptlab.config import ModelConfig
    from gptlab.ui.forms import field_component

    box = field_component(ModelConfig, "block_size")
    rebuilt = type(box)(**box.constructor_args)  # what an update from a handler does
    assert rebuilt.get_block_name() == "number"  # drawn by Gradio's own Number
    with pytest.raises(gr.Error, match="Block size must be between 1 and 65,536, not 0"):
        rebuilt.preprocess(0)
    assert rebuilt.preprocess(64) == 64
