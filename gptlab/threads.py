"""Keep one thread's torch work on one CPU thread, without touching the rest of the process.

A server runs its handlers in worker threads while training runs in another. Two things go wrong
with the obvious tools:

- A handler thread that runs torch ops on all cores gets an OpenMP pool of its own. Once the pools
  outnumber the cores, OpenMP stops spinning between parallel loops, and training in the other
  thread ran ~25% slower.
- torch.set_num_threads is process-wide, and on builds with MKL it also switches MKL's dynamic mode
  off for good (every thread that starts torch work afterwards repeats the switch). MKL then starts
  an OpenMP team for each gemm even inside another parallel loop, which CPU flash attention's gemms
  are: a char-cpu training step ran ~15% slower in any process that had called it.

OpenMP's team size is a per-thread setting, though, so this module sets it in the calling thread
alone, through the OpenMP runtime torch loaded. Where that runtime cannot be found, it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import torch


def _openmp_runtime() -> ctypes.CDLL | None:
    if not torch.backends.openmp.is_available():
        return None
    bundled = Path(torch.__file__).parent / "lib"
    names = [bundled / "libgomp.so.1", bundled / "libomp.dylib", "libgomp.so.1"] if sys.platform != "win32" else []
    for name in names:
        try:
            lib = ctypes.CDLL(str(name))
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            return lib
        except (OSError, AttributeError):
            continue
    return None


_openmp = _openmp_runtime()


FULL = torch.get_num_threads()  # the team size torch gives a thread that sets none


def use_threads(count: int) -> None:
    """From now on, torch's CPU ops called from this thread run on `count` threads (at least one, at
    most FULL); other threads keep their own count."""
    global _openmp
    if _openmp is None:
        return
    count = max(1, min(FULL, int(count)))
    torch.get_num_threads()  # torch sets each thread's team size on its first use: let it happen now, not after us
    _openmp.omp_set_num_threads(count)
    if torch.get_num_threads() != count:  # a runtime other than torch's was found: stop trying
        _openmp = None


def use_one_thread() -> None:
    """For a server's handler threads, which never train: their torch work runs on one thread."""
    use_threads(1)
