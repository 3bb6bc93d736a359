"""Many users: no browser can list, read, download, stop, resume, watch or sample another's run, run ids
that try to leave the runs folder are just unknown runs, and no endpoint reads a server file that a
user did not upload."""

import os

os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
                  NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")

import json  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

from tests.forms import decoding, tiny  # noqa: E402
from gptlab.service import Lab, Limits  # noqa: E402

TEXT = "to be or not to be, that is the question. " * 60
SETTINGS = tiny()
GREEDY = decoding(max_new_tokens=4)
TRAVERSALS = ["..", "../..", "../../etc/passwd", "/etc/passwd", "..\\..\\windows", "%2e%2e%2f", "....//",
              "a/../../b", "./", ".", "", " ", "\x00", "_uploads", "_downloads", "_pretrained", ".browser-secret",
              "runs/../..", "~root", "C:\\Windows"]


@pytest.fixture(scope="module")
def lab_with_run(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("iso") / "runs", limits=Limits(poll_seconds=0.05))
    final = list(lab.start(owner="", source="Paste text", files=None, pasted=TEXT, tokenizer="char",
                           start_from="Scratch (random weights)", settings=SETTINGS))[-1]
    return lab, final.owner, final.run_id


def every_run_action(lab, owner, run_id):
    yield "watch", lambda: next(lab.attach(owner=owner, run_id=run_id))
    yield "run_status", lambda: lab.run_status(owner=owner, run_id=run_id)  # an agent's watch (MCP)
    yield "stop", lambda: lab.stop(owner=owner, run_id=run_id) and lab.registry.get(owner, run_id)
    yield "resume", lambda: next(lab.resume(owner=owner, run_id=run_id, max_steps=10, max_time=0))
    yield "downloads", lambda: lab.downloads(owner=owner, run_id=run_id)
    yield "sample", lambda: next(lab.sample(owner=owner, run_id=run_id, which="best", upload=None, prompt="to",
                                            decoding=GREEDY))
    yield "next_tokens", lambda: lab.next_tokens(owner=owner, run_id=run_id, which="best", upload=None, prompt="to",
                                                 decoding=GREEDY)
    yield "tokens", lambda: lab.tokens(owner=owner, run_id=run_id, which="best", upload=None, prompt="to", output="")
    yield "compare", lambda: lab.compare(owner=owner, run_id=run_id, prompt="to", seed=1, temperature=0.8,
                                         max_new_tokens=4)
    yield "sweep", lambda: lab.sweep(owner=owner, run_id=run_id, prompt="to", seed=1, max_new_tokens=4)
    yield "compare_runs", lambda: lab.compare_runs(owner=owner, run_a=run_id, run_b=run_id, prompt="to", seed=1,
                                                   max_new_tokens=4)


def test_another_browser_gets_no_such_run_from_every_endpoint(lab_with_run):
    lab, owner, run_id = lab_with_run
    stranger = Lab.owner_or_new("")
    for name, action in every_run_action(lab, stranger, run_id):
        with pytest.raises(ValueError, match="There is no run"):
            action()
    assert lab.run_choices(stranger) == [] and [v for _, v in lab.run_choices(owner)] == [run_id]
    assert lab.list_runs(owner=stranger)["runs"] == []
    assert [r["run_id"] for r in lab.list_runs(owner=owner)["runs"]] == [run_id]
    assert lab.registry.get(owner, run_id).status == "finished"  # nothing the stranger did touched it


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_run_ids_that_try_to_leave_the_runs_folder_are_unknown_runs(lab_with_run, bad):
    lab, owner, _ = lab_with_run
    before = sorted(p.name for p in lab.registry.root.iterdir())
    for name, action in every_run_action(lab, owner, bad):
        try:
            action()
        except ValueError as e:
            assert "no run" in str(e).lower() or "choose" in str(e).lower() or "first" in str(e).lower(), (name, e)
        else:
            assert not bad.strip(), (name, "an empty id is 'no run yet', never another folder")
    assert sorted(p.name for p in lab.registry.root.iterdir()) == before


def test_an_owner_token_is_never_taken_from_a_malformed_value(lab_with_run):
    lab, owner, run_id = lab_with_run
    for forged in (owner[:-1], owner + "x", owner.upper() if owner.upper() != owner else owner.lower(), " " + owner):
        with pytest.raises(ValueError, match="There is no run"):
            lab.downloads(owner=forged, run_id=run_id)


@pytest.fixture(scope="module")
def server(lab_with_run):
    from gptlab.ui import build_demo, launch

    lab, owner, run_id = lab_with_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_demo(lab)
    _, url, _ = launch(demo, lab, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield url, owner, run_id
    demo.close()


def call(url, api, data) -> str:
    """An API call with raw JSON, as a script could send it (gradio_client would upload local files)."""
    event = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=30).json()["event_id"]
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{event}", timeout=30) as r:
        return "".join(r.iter_text())


@pytest.mark.parametrize("target", ["/etc/passwd", "{runs}/.browser-secret", "{runs}/{run}/status.json"])
def test_no_endpoint_reads_a_server_path_the_user_did_not_upload(server, target, lab_with_run):
    url, owner, run_id = server
    lab = lab_with_run[0]
    path = target.format(runs=lab.registry.root, run=run_id)
    file = {"path": path, "meta": {"_type": "gradio.FileData"}}
    sample = call(url, "sample", ["", None, "uploaded .zip", file, "to", "greedy", 1.0, 0, 1.0, 0.0, 1.0, 0, 4, 1.0,
                                  4, 1, ""])
    train = call(url, "train", ["", "Upload files", [file], "", "char", "Scratch (random weights)", 1, 2, 16, 16, 0.0,
                                True, "gelu", 4, 1, 3e-3, 3e-4, "cosine", 1, 0.1, 0.9, 0.99, 1.0, 4, 0, 2, 1, 0, 0, 1,
                                "auto"])
    for answer in (sample, train):
        assert "event: error" in answer
        assert "root:" not in answer and "owner" not in answer  # nothing of the file came back
    time.sleep(0.1)
    assert [r.id for r in lab.registry.list(owner)] == [run_id]  # no run was made from a server file
    assert not json.loads((lab.registry.root / run_id / "status.json").read_text())["status"] == "running"
