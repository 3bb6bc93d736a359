"""The launched server as a stranger meets it: downloads wherever the runs live, a login that cannot
be brute-forced quickly or read from `ps`, warnings before exposing the app, and Stop that no full
queue can block."""

import os

os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
                  NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")

import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402
from gradio_client import Client  # noqa: E402

from gptlab.service import Lab, Limits  # noqa: E402
from gptlab.views import Sample  # noqa: E402
from gptlab.ui import build_demo, launch, server  # noqa: E402

TEXT = "to be or not to be, that is the question. " * 60
TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_steps=4, eval_interval=2,
            eval_batches=1, sample_interval=0, max_time=0, patience=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def started(lab, **kwargs):
    demo = build_demo(lab)
    _, url, _ = launch(demo, lab, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                       quiet=True, **kwargs)
    return demo, url


@pytest.fixture
def outside_runs_dir():
    """A runs directory outside both the working directory and the system's temp folder, as
    --runs-dir /data/runs on a Space is."""
    base = Path.home() / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="gptlab-runs-", dir=base))
    assert not folder.is_relative_to(Path.cwd()) and not folder.is_relative_to(tempfile.gettempdir())
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_downloads_work_when_the_runs_directory_is_outside_cwd_and_tmp(outside_runs_dir):
    lab = Lab(outside_runs_dir / "runs", limits=Limits(poll_seconds=0.1))
    demo, url = started(lab)
    try:
        client = Client(url, verbose=False)
        owner, run_id = client.predict(owner="", source="Paste text", files=None, pasted=TEXT, tokenizer="char",
                                       start_from="Scratch (random weights)", **TINY, api_name="/train")[:2]
        files = client.predict(owner=owner, run_id=run_id, api_name="/downloads")
        assert [Path(f).name for f in files] == [f"gptlab-{run_id}-best.zip", "metrics.csv", "metrics.jsonl",
                                                 "report.md", "loss.png"]
        assert "config.json" in zipfile.ZipFile(files[0]).namelist()
        # Only the downloads folder is served: the runs themselves (and the browser secret) are not.
        secret = outside_runs_dir / "runs" / ".browser-secret"
        assert secret.is_file()
        assert httpx.get(f"{url}gradio_api/file={secret}").status_code in (403, 404)
    finally:
        lab.registry.wait(run_id, 30)
        demo.close()


def test_a_flood_of_generation_requests_does_not_fill_the_queue_and_stop_always_answers(tmp_path, monkeypatch):
    """70 queued /sample calls once filled the queue (max_size 64): everyone, Stop included, got
    "Queue is full". Generation now skips Gradio's queue (admission decides at once), and Stop's
    route is not queued at all."""
    monkeypatch.setattr(server, "QUEUE_SIZE", 8)
    lab = Lab(tmp_path / "runs")

    def slow_sample(**_):
        time.sleep(2)
        yield Sample("done")

    monkeypatch.setattr(lab, "sample", slow_sample)
    demo, url = started(lab)
    try:
        client = Client(url, verbose=False)
        jobs = []
        for _ in range(30):  # almost four times the queue, all still running together
            jobs.append(client.submit(owner="", run_id="x", which="best", upload=None, prompt="a",
                                      api_name="/sample"))
            time.sleep(0.01)
        time.sleep(0.3)
        begun = time.monotonic()
        response = httpx.post(f"{url}gradio_api/run/stop", json={"data": ["", None]}, timeout=10)
        assert response.status_code == 200 and response.json()["data"] == ["No run to stop."]
        assert time.monotonic() - begun < 1.5  # it did not wait behind the samples
        assert [job.result(timeout=60) for job in jobs] == ["done"] * 30  # none was turned away
    finally:
        demo.close()


def test_with_a_login_every_route_refuses_strangers_and_wrong_guesses_are_slow(tmp_path):
    lab = Lab(tmp_path / "runs")
    demo, url = started(lab, auth=server.throttled_login("teacher", "s3cret"))
    try:
        routes = [("GET", "gradio_api/info"), ("GET", "config"), ("POST", "gradio_api/queue/join"),
                  ("POST", "gradio_api/upload"), ("POST", "gradio_api/run/stop"), ("POST", "gradio_api/call/stop"),
                  ("POST", "gradio_api/call/train"), ("GET", f"gradio_api/file={tmp_path}"),
                  ("GET", "gradio_api/queue/data?session_hash=x")]
        for method, route in routes:
            response = httpx.request(method, f"{url}{route}", json={} if method == "POST" else None)
            assert response.status_code in (401, 403), (route, response.status_code)
        with pytest.raises(Exception):
            Client(url, verbose=False)
        assert Client(url, auth=("teacher", "s3cret"), verbose=False).predict(
            owner="", run_id="", api_name="/stop") == "No run to stop."

        def guess(i):
            return httpx.post(f"{url}login", data={"username": "teacher", "password": f"guess{i}"}).status_code

        begun = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(guess, range(4)))
        assert all(code in (400, 401) for code in codes)
        assert time.monotonic() - begun >= 4 * server.FAILED_LOGIN_DELAY_S * 0.9  # one at a time, a second each
    finally:
        demo.close()


def test_credentials_come_from_the_flag_a_file_or_the_environment(tmp_path):
    secret = tmp_path / "auth.txt"
    secret.write_text("teacher:from-file\n", encoding="utf-8")
    assert server.credentials("a:b", str(secret), "c:d") == ("a", "b")
    assert server.credentials(None, str(secret), "c:d") == ("teacher", "from-file")
    assert server.credentials(None, None, "c:d:e") == ("c", "d:e")
    assert server.credentials(None, None, None) is None
    for bad in ("nocolon", ":nouser", "nopass:"):
        with pytest.raises(ValueError, match="takes USER:PASS"):
            server.credentials(bad, None, None)
    with pytest.raises(ValueError, match="cannot be read"):
        server.credentials(None, str(tmp_path / "missing.txt"), None)
    args = server.parse_args(["--auth-file", str(secret)])
    assert args.credentials == ("teacher", "from-file")


def test_exposing_the_app_without_a_login_warns():
    assert server.exposure_warnings("127.0.0.1", False, False) == []
    shared = server.exposure_warnings("127.0.0.1", True, False)
    assert "public link" in shared[0] and "GPTLAB_AUTH" in shared[-1]
    network = server.exposure_warnings("0.0.0.0", False, False)
    assert "0.0.0.0" in network[0] and "password" in network[-1]
    assert all("password" not in w for w in server.exposure_warnings("0.0.0.0", False, True))
