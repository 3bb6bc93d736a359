"""use_one_thread limits the calling thread alone, and never through torch.set_num_threads (which is
process-wide and switches MKL's dynamic mode off for good)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from gptlab import threads

pytestmark = pytest.mark.skipif(threads._openmp is None, reason="torch's OpenMP runtime was not found")


def run_in_thread(fn):
    with ThreadPoolExecutor(1) as pool:  # a fresh thread each call
        return pool.submit(fn).result()


def test_limits_the_calling_thread_only(monkeypatch):
    def process_wide(n):
        raise AssertionError("torch.set_num_threads changes every thread, and MKL's dynamic mode")

    monkeypatch.setattr(torch, "set_num_threads", process_wide)
    full = torch.get_num_threads()

    def handler():
        threads.use_one_thread()
        x = torch.randn(256, 256)
        return torch.get_num_threads(), (x @ x).shape

    assert run_in_thread(handler) == (1, (256, 256))
    assert run_in_thread(torch.get_num_threads) == full  # a thread started later, as training's is
    assert torch.get_num_threads() == full
