"""use_one_thread limits the calling thread alone, and never through torch.set_num_threads (which is
process-wide and switches MKL's dynamic mode off for good)."""

import contextlib
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


def test_a_training_thread_gives_up_a_core_to_each_running_generation(tmp_path):
    from gptlab import threads
    from gptlab.service import Lab

    if threads.FULL < 2:
        pytest.skip("needs two cores")
    lab = Lab(tmp_path / "runs")
    own = torch.get_num_threads()

    def team_during_step(generations: int) -> int:
        def step():
            with contextlib.ExitStack() as held:
                for i in range(generations):
                    held.enter_context(lab.generations.hold(f"owner{i}"))
                lab.registry.step_hook(1)  # what the training thread calls after each step
            return torch.get_num_threads()
        return run_in_thread(step)

    assert team_during_step(0) == threads.FULL
    assert team_during_step(1) == threads.FULL - 1
    assert torch.get_num_threads() == own  # the calling thread's own team is untouched
