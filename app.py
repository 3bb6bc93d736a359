"""GPT Lab: train a small GPT on your own text in the browser, and watch it learn (gptlab.ui)."""

import ctypes
import os
import sys

# Before gradio is imported: no telemetry or version checks (they would try to reach the internet).
for key, value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "MPLBACKEND": "Agg"}.items():
    os.environ.setdefault(key, value)

# Training runs in a background thread, and glibc gives each thread a malloc arena of its own. In
# such an arena, freeing a step's multi-MB activations hands their pages back to the OS and the next
# step faults them in again: training in a thread ran ~12% slower until every thread shared the main
# arena. This must happen before another thread allocates.
if sys.platform.startswith("linux"):
    try:
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX (glibc's malloc.h)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to share

from gptlab.ui import main  # noqa: E402  (after the settings above)

if __name__ == "__main__":
    main()
