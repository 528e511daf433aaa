"""A simple pacing rate limiter for batch handlers (messages per second and/or per minute).

Pacing (one send every 1/rate seconds) rather than bursts: mail servers and push services
throttle bursts, and pacing keeps a batch's first minute as polite as its last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from haosq.errors import Retry


class RateLimiter:
    def __init__(
        self,
        per_second: float | None = None,
        per_minute: float | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        intervals = [1.0 / per_second if per_second else 0.0, 60.0 / per_minute if per_minute else 0.0]
        self.interval = max(intervals)
        self._monotonic = monotonic
        self._next: float | None = None

    def wait(self, cancelled: threading.Event) -> float:
        """Block until the next send is allowed; returns the time waited.

        Raises Retry when the job is cancelled or the worker stops while waiting: the
        batch's checkpoints keep the progress made so far."""
        now = self._monotonic()
        target = now if self._next is None else max(now, self._next)
        delay = target - now
        if delay > 0 and cancelled.wait(delay):
            raise Retry("stopped while pacing the batch (cancelled or shutting down)", after=0)
        if cancelled.is_set():
            raise Retry("stopped during the batch (cancelled or shutting down)", after=0)
        self._next = target + self.interval
        return delay
