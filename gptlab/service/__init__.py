"""What the app does, without gradio: previews, runs, downloads, sampling and comparisons.

`Lab` checks every request against the server's `Limits`, calls the library, and answers with
dataclasses. Its errors are the library's ValueError subclasses, whose messages are sentences for
the user and never name a server path. Training runs in background threads owned by a RunRegistry;
the live views only observe, so a refresh or a closed tab never stops a run.
"""

from gptlab.service.agent import Agent
from gptlab.service.base import (CHECKPOINTS, NO_RUN_YET, OWNER_PATTERN, SOURCES, START_FROM, SWEEP_TEMPERATURES,
                                UPLOADED, X_AXES, Limits)
from gptlab.service.decoding import Decoding
from gptlab.service.dynamics import Dynamics
from gptlab.service.experiments import Experiments
from gptlab.service.inside import Inside
from gptlab.service.report import Report
from gptlab.service.sampling import Sampling
from gptlab.service.sharing import Sharing
from gptlab.service.tokens import Tokens
from gptlab.service.timeline import Timeline
from gptlab.service.training import Training

__all__ = ["CHECKPOINTS", "NO_RUN_YET", "OWNER_PATTERN", "SOURCES", "START_FROM", "SWEEP_TEMPERATURES", "UPLOADED",
           "X_AXES", "Lab", "Limits"]


class Lab(Agent, Training, Sampling, Decoding, Dynamics, Inside, Tokens, Timeline, Experiments, Sharing, Report):
    """The whole service: each base class is one area of it (gptlab/service/*.py)."""
