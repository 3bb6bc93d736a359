"""Fair shares of a small server: how much work one training run may ask for, and how many requests
of a kind may run at once, per owner and in all.

One owner (or one script) must not be able to take every core or every worker thread. A request
over its owner's share is refused at once with a sentence; one over the server's share waits a
little for a free slot (a few at a time), then is refused. Owner tokens cost nothing to make, so the server-wide
share is what really bounds the load; the per-owner one keeps a single browser from crowding out
the rest.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

from gptlab.config import ConfigError, ModelConfig, TrainConfig


class BusyError(ValueError):
    """The server or this owner already has as many of these running as it allows."""


class Slots:
    def __init__(self, what: str, *, per_owner: int, total: int | Callable[[], int], wait_s: float = 10.0,
                 max_waiting: int = 4):
        self.what, self.per_owner, self.wait_s, self.max_waiting = what, per_owner, wait_s, max_waiting
        self._total = total if callable(total) else (lambda: total)
        self._held: Counter[str] = Counter()
        self._waiting = 0
        self._cond = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._cond:
            return sum(self._held.values())

    @contextlib.contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            if self._held[owner] >= self.per_owner:
                raise BusyError(f"You already have {self._held[owner]} {self.what} running, the most this server "
                                f"allows one browser; wait for them to finish, then try again.")
            # A few may wait their turn; past them a flood is refused at once, so it holds no threads.
            if sum(self._held.values()) >= self._total() and self._waiting >= self.max_waiting:
                raise BusyError(f"The server is busy with other {self.what}; try again in a moment.")
            self._waiting += 1
            try:
                while sum(self._held.values()) >= self._total():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BusyError(f"The server is busy with other {self.what}; try again in a moment.")
                    self._cond.wait(left)
            finally:
                self._waiting -= 1
            self._held[owner] += 1
        try:
            yield
        finally:
            with self._cond:
                self._held[owner] -= 1
                if not self._held[owner]:
                    del self._held[owner]
                self._cond.notify_all()

    def streaming(self, owner: str, stream: Iterator) -> Iterator:
        """`stream`, consumed while holding a slot: the slot is taken before the first item and given
        back when the stream ends or is closed (a closed tab)."""
        with self.hold(owner):
            yield from stream


@dataclass(frozen=True)
class TrainingCaps:
    """What one training run may ask of the server, checked before it starts: a run over a cap
    would hold the only training slot, or the server's memory, for as long as it liked. The
    defaults suit a shared 2-core CPU Space; self-hosters raise them with flags."""
    max_steps: int = 100_000
    max_seconds: float = 3600.0  # every run stops after this long, whatever its own budget
    max_tokens_per_step: int = 65_536  # batch_size x grad_accum_steps x block_size
    max_eval_tokens: int = 1_048_576  # eval_batches x batch_size x block_size, for each split
    max_memory_mb: float = 4096.0  # ModelConfig.training_memory_bytes at the run's batch size

    def admit(self, model: ModelConfig, train: TrainConfig) -> TrainConfig:
        """`train` with the server's time cap applied, or a ConfigError listing every cap it is over."""
        step_tokens = train.batch_size * train.grad_accum_steps * model.block_size
        eval_tokens = train.eval_batches * train.batch_size * model.block_size
        memory_mb = model.training_memory_bytes(train.batch_size) / 2**20
        problems = []
        if train.max_steps > self.max_steps:
            problems.append(f"max_steps is {train.max_steps:,}; this server trains at most {self.max_steps:,} steps a run.")
        if step_tokens > self.max_tokens_per_step:
            problems.append(f"Each step reads {step_tokens:,} tokens (batch_size x grad_accum_steps x block_size); this "
                            f"server allows {self.max_tokens_per_step:,}. Lower batch_size or grad_accum_steps.")
        if eval_tokens > self.max_eval_tokens:
            problems.append(f"Each evaluation reads {eval_tokens:,} tokens (eval_batches x batch_size x block_size); "
                            f"this server allows {self.max_eval_tokens:,}. Lower eval_batches.")
        if memory_mb > self.max_memory_mb:
            problems.append(f"Training this model at batch {train.batch_size} needs about {memory_mb:,.0f} MiB; this "
                            f"server allows {self.max_memory_mb:,.0f} MiB. Lower batch_size or block_size, or make "
                            "the model smaller.")
        if problems:
            raise ConfigError(" ".join(problems))
        return train.replace(max_time=min(train.max_time or math.inf, self.max_seconds))
