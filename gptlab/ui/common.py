"""What every tab shares: the browser's session, and library errors turned into messages.

A handler's error reaches the browser as one sentence. A ValueError from the library is written for
the user already; anything else (a file the server could not read, a bug) is shown as a plain
apology while its full detail, paths and stack trace included, goes to the server log only.
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from gptlab.config import PRESETS, SAMPLE_FORM, SampleConfig, field_info
from gptlab.threads import use_one_thread
from gptlab.views import without_paths

log = logging.getLogger("gptlab.ui")

SERVER_FAULT = ("The server could not finish that request (its log has the details). Try again; if it keeps "
                "happening, tell whoever runs this app.")


@dataclass(frozen=True)
class Session:
    """The components that say whose request it is and which run it is about."""
    owner: gr.BrowserState  # a secret token kept in the browser: the key to its runs
    run_id: gr.Textbox  # hidden; a component, so API users can pass it


def session(runs_root: Path) -> Session:
    # A fixed secret keeps the owner token readable across server restarts (gradio's is per process).
    secret_file = runs_root / ".browser-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_hex(16))
    owner = gr.BrowserState("", storage_key="gptlab-owner", secret=secret_file.read_text().strip())
    # The token is a string. BrowserState calls its type {} ("any JSON"), which is not valid JSON
    # Schema: an MCP server that checks a tool's arguments against it refuses every call.
    owner.api_info = lambda: {"type": "string"}
    return Session(owner=owner, run_id=gr.Textbox(visible=False, elem_id="run-id"))


def to_user_error(e: Exception) -> gr.Error:
    if isinstance(e, ValueError):  # the library's sentences; a path in one is cut to the file's name
        log.info("refused: %s", " ".join(str(e).split()))
        # The log line above is the whole record: Gradio's queue would also print a traceback.
        return gr.Error(without_paths(str(e).strip()) or type(e).__name__, print_exception=False)
    log.error("request failed", exc_info=e)
    return gr.Error(SERVER_FAULT, print_exception=False)  # the traceback is in the log once, above


def user_errors(fn):
    """A handler whose errors reach the browser as sentences (see the module's docstring).

    Handlers also keep their torch work on one CPU thread, leaving the cores to training
    (gptlab.threads says why). Gradio may resume a generator on any of its worker threads, so a
    generator's thread is set at every step."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            steps = fn(*args, **kwargs)
            try:
                while True:
                    use_one_thread()
                    try:
                        update = next(steps)
                    except StopIteration:
                        return
                    yield update
            except gr.Error:
                raise
            except Exception as e:
                raise to_user_error(e) from None
            finally:
                steps.close()
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            use_one_thread()
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:
                raise to_user_error(e) from None
    return wrapper


# -- MCP: which endpoints are an agent's tools, and what their descriptions say ------------------

OWNER_ARG = ('owner: your secret owner token. Pass "" to your first start_training, which returns a new one '
             '(its "owner"), and pass that token to every later call: it is the only key to your runs.')


def _decoding_help() -> str:
    parts = [f"{name} ({field_info(SampleConfig, name).metadata['help']})" for name in SAMPLE_FORM]
    return "Optional decoding settings: " + "; ".join(parts) + '. Several stop texts are separated by "|".'


def agent_tool(fn):
    """Marks a handler as one of the MCP tools (gradio's MCP server lists the others too; see
    agent_tools_only) and fills its docstring's {owner}, {decoding} and {presets}: gradio makes the tool's
    description from the docstring, and each "Args:" line (one line each) describes a parameter."""
    fn.__doc__ = fn.__doc__.format(owner=OWNER_ARG, decoding=_decoding_help(), presets=", ".join(PRESETS))
    fn.agent_tool = True
    return fn


def agent_tools_only(demo: gr.Blocks) -> None:
    """Leave every public endpoint in the API, but list only the agent tools over MCP: gradio 6.31's
    MCP server lists a function as a tool unless its `_mcp_type` says it is something else (a
    resource or a prompt; any other value is listed as neither)."""
    for block_fn in demo.fns.values():
        if block_fn.fn is not None and block_fn.api_visibility == "public" and \
                not getattr(block_fn.fn, "agent_tool", False):
            block_fn.fn._mcp_type = "api-only"
