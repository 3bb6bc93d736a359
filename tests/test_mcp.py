"""The app as an MCP server (`python app.py --mcp`), driven with the `mcp` client over streamable HTTP
against the app launched on 127.0.0.1 inside the test: the tools an agent lists, a tiny training
started, watched and sampled through them, and one agent's runs out of another's reach.

Without the `mcp` package the test skips on a laptop, and fails in CI (CI=true), where
requirements-dev.txt installs it.
"""

from __future__ import annotations

import os

for key, value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                   "MPLBACKEND": "Agg", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}.items():
    os.environ[key] = value

import asyncio
import json
import socket
import time

import pytest

from gptlab.service import Lab, Limits

TOOLS = {"list_runs", "start_training", "run_status", "stop", "sample"}
TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n"
        "all that glitters is not gold; to be or not to be, that is the question.\n") * 20  # ~3k chars
TIMEOUT = 60.0  # seconds; only reached when something is broken


def _mcp_or_reason() -> str | None:
    try:
        import mcp.client.streamable_http  # noqa: F401
    except ImportError:
        return "the mcp package is not installed (pip install -r requirements-dev.txt)"
    return None


@pytest.fixture(scope="module")
def mcp_url(tmp_path_factory):
    """The MCP endpoint of the app, launched with its MCP server on a free loopback port."""
    reason = _mcp_or_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"The MCP test must run in CI, but {reason}.")
        pytest.skip(reason)
    import torch

    from gptlab.ui import build_demo, launch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: the server and the training thread must not fight for both
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lab = Lab(tmp_path_factory.mktemp("mcp") / "runs", limits=Limits(poll_seconds=0.25))
    demo = build_demo(lab)
    _, url, _ = launch(demo, lab, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       mcp_server=True)
    try:
        yield url + "gradio_api/mcp/"
    finally:
        for info in lab.registry._all():
            lab.registry.stop(info.owner, info.id)
            lab.registry.wait(info.id, TIMEOUT)
        demo.close()
        torch.set_num_threads(threads)


def calls(url: str, *steps):
    """Runs `steps` (async functions of a ClientSession) in one MCP session; their results."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def run():
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return [await step(session) for step in steps]
    return asyncio.run(asyncio.wait_for(run(), TIMEOUT))


def call(url: str, tool: str, **arguments):
    """(is_error, text) of one tool call."""
    async def step(session):
        return await session.call_tool(tool, arguments)
    result, = calls(url, step)
    return result.isError, "".join(c.text for c in result.content if c.type == "text")


def ok(url: str, tool: str, **arguments) -> str:
    failed, text = call(url, tool, **arguments)
    assert not failed, text
    return text


@pytest.fixture(scope="module")
def agent_run(mcp_url):
    """(owner, run_id) of a tiny run an agent started through start_training and watched to its end."""
    started = json.loads(ok(mcp_url, "start_training", owner="", text=TEXT, preset="tiny", max_steps=20))
    owner, run_id = started["owner"], started["run_id"]
    deadline = time.monotonic() + TIMEOUT
    while (status := json.loads(ok(mcp_url, "run_status", owner=owner, run_id=run_id)))["status"] == "running":
        assert time.monotonic() < deadline, f"the run did not finish: {status}"
        time.sleep(0.2)
    assert status["status"] == "finished" and status["step"] == 20 and status["progress_percent"] == 100.0, status
    return owner, run_id


def test_an_agent_lists_only_the_agent_tools_each_described_with_its_parameters(mcp_url):
    async def step(session):
        return (await session.list_tools()).tools
    tools, = calls(mcp_url, step)
    assert {t.name for t in tools} == TOOLS
    for tool in tools:
        assert len(tool.description) > 60, tool.name
        properties = tool.inputSchema["properties"]
        assert "owner" in properties and "start_training" in properties["owner"]["description"], tool.name
        undescribed = [name for name in tool.inputSchema.get("required", []) if not properties[name].get("description")]
        assert undescribed == [], tool.name
    sample = next(t for t in tools if t.name == "sample")
    assert sample.inputSchema["properties"]["run_id"] == {"type": "string", "description": sample.inputSchema[
        "properties"]["run_id"]["description"]}  # any run id, not the empty choices the page starts with
    assert "temperature" in sample.description and set(sample.inputSchema.get("required", [])) == {"owner", "run_id"}


def test_an_agent_starts_watches_lists_and_samples_a_tiny_run(mcp_url, agent_run):
    owner, run_id = agent_run
    runs = json.loads(ok(mcp_url, "list_runs", owner=owner))
    assert runs["owner"] == owner and [r["run_id"] for r in runs["runs"]] == [run_id]
    text = ok(mcp_url, "sample", owner=owner, run_id=run_id, which="last", prompt="the ", strategy="greedy",
              max_new_tokens=12)
    assert text.startswith("the ") and len(text) > len("the ")
    assert ok(mcp_url, "stop", owner=owner, run_id=run_id) == "That run is not training."


def test_one_agent_cannot_list_watch_stop_or_sample_another_agents_run(mcp_url, agent_run):
    owner_a, run_a = agent_run
    owner_b = Lab.owner_or_new("")
    nothing = f"There is no run '{run_a}'"
    assert json.loads(ok(mcp_url, "list_runs", owner=owner_b))["runs"] == []
    for tool, extra in (("run_status", {}), ("stop", {}), ("sample", {"which": "last", "prompt": "the "})):
        failed, text = call(mcp_url, tool, owner=owner_b, run_id=run_a, **extra)
        assert failed and nothing in text, (tool, text)
    failed, text = call(mcp_url, "run_status", owner="not-a-token", run_id=run_a)
    assert failed and "owner token" in text and nothing not in text
    assert [r["run_id"] for r in json.loads(ok(mcp_url, "list_runs", owner=owner_a))["runs"]] == [run_a]


def test_without_the_mcp_package_the_app_still_launches_and_mcp_says_what_to_install(monkeypatch, capsys, tmp_path):
    import sys

    from gptlab.ui import build_demo, launch, main
    from gptlab.ui.server import MCP_PIN

    monkeypatch.setitem(sys.modules, "mcp", None)  # `import mcp` now fails as if it were not installed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lab = Lab(tmp_path / "runs")
    demo = build_demo(lab)
    _, url, _ = launch(demo, lab, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    demo.close()
    assert url.startswith("http://127.0.0.1:")

    with pytest.raises(SystemExit) as exit_info:
        main(["--mcp", "--runs-dir", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pip install {MCP_PIN}" in err and "Traceback" not in err
    assert not (tmp_path / "never").exists()  # refused before anything was set up


def test_mcp_with_a_login_is_refused_since_the_mcp_endpoint_would_not_ask_for_the_password(capsys, tmp_path):
    from gptlab.ui import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--mcp", "--auth", "teacher:s3cret", "--runs-dir", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mcp cannot be combined with a login" in err and "s3cret" not in err
    assert not (tmp_path / "never").exists()
