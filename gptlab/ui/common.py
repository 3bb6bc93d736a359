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
    return Session(owner=gr.BrowserState("", storage_key="gptlab-owner", secret=secret_file.read_text().strip()),
                   run_id=gr.Textbox(visible=False, elem_id="run-id"))


def to_user_error(e: Exception) -> gr.Error:
    if isinstance(e, ValueError):  # the library's sentences; a path in one is cut to the file's name
        log.info("refused: %s", " ".join(str(e).split()))
        return gr.Error(without_paths(str(e).strip()) or type(e).__name__)
    log.error("request failed", exc_info=e)
    return gr.Error(SERVER_FAULT)


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
