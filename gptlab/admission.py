"""Fair shares of a small server: how many requests of a kind may run at once, per owner and in all.

One owner (or one script) must not be able to take every core or every worker thread. A request
over its owner's share is refused at once with a sentence; one over the server's share waits a
little for a free slot, then is refused. Owner tokens cost nothing to make, so the server-wide
share is what really bounds the load; the per-owner one keeps a single browser from crowding out
the rest.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Callable, Iterator


class BusyError(ValueError):
    """The server or this owner already has as many of these running as it allows."""


class Slots:
    def __init__(self, what: str, *, per_owner: int, total: int | Callable[[], int], wait_s: float = 10.0):
        self.what, self.per_owner, self.wait_s = what, per_owner, wait_s
        self._total = total if callable(total) else (lambda: total)
        self._held: Counter[str] = Counter()
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
            while sum(self._held.values()) >= self._total():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BusyError(f"The server is busy with other {self.what}; try again in a moment.")
                self._cond.wait(left)
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
