"""Expected user errors cost the server log one line each; unexpected ones keep their traceback there
and show the browser a sentence."""

import logging
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import pytest

from gptlab.ui.common import SERVER_FAULT, user_errors


def in_a_handler_thread(fn):
    """Call `fn` as Gradio would, in a worker thread (a handler sets its own thread's torch team)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def test_a_user_error_logs_one_line_without_a_traceback(caplog):
    caplog.set_level(logging.INFO, logger="gptlab.ui")

    @user_errors
    def handler():
        raise ValueError("n_layer must be a whole number, got 1.5.\nTry 2.")

    for _ in range(3):
        with pytest.raises(gr.Error, match="n_layer must be a whole number") as info:
            in_a_handler_thread(handler)
        assert info.value.print_exception is False  # else Gradio's queue prints a traceback for it too
    records = [r for r in caplog.records if r.name == "gptlab.ui"]
    assert len(records) == 3 and all(r.exc_info is None and "\n" not in r.getMessage() for r in records)


def test_an_unexpected_error_keeps_its_detail_in_the_log_only(caplog):
    caplog.set_level(logging.INFO, logger="gptlab.ui")

    @user_errors
    def handler():
        raise KeyError("/srv/secret/path")

    with pytest.raises(gr.Error) as info:
        in_a_handler_thread(handler)
    assert info.value.message == SERVER_FAULT and "/srv" not in str(info.value)
    (record,) = [r for r in caplog.records if r.name == "gptlab.ui"]
    assert record.exc_info is not None and "/srv/secret/path" in caplog.text
