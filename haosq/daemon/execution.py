"""Running one attempt of a job and deciding what becomes of it.

Retry backoff (exponential with "equal jitter"): after failed attempt n (1, 2, ...)

    ceiling = min(cap, base * 2 ** (n - 1))
    delay   = ceiling / 2 + uniform(0, ceiling / 2)

so the delay lies between half the ceiling and the ceiling: retries of many jobs that failed
together spread out instead of arriving in a herd, yet never wait less than half the nominal
time. `base` is `worker.backoff_base_seconds` (HAOSQ_BACKOFF_BASE, default 2 s) and `cap`
`worker.backoff_cap_seconds` (HAOSQ_BACKOFF_CAP, default 1 h). `haosq.Retry(after=...)`
overrides the delay (seconds, a timedelta or a datetime).

Timeouts: a job's `timeout_seconds`, else its handler's `timeout`. Over time the worker sets
the job's `cancelled` event, records the attempt as failed (retried while attempts remain)
and discards whatever the handler returns later. A thread cannot be killed: a thread handler
that ignores `ctx.cancelled` keeps running to its natural end, detached from the worker
(which starts a fresh thread in its place so that its concurrency does not shrink), and its
result is thrown away. Handlers with `executor="process"` run in a child process that is
killed at the timeout or on cancel.
"""

from __future__ import annotations

import json
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from haosq.db.queries.claims import Ack
from haosq.errors import PermanentError, Retry, UnknownJobType
from haosq.handlers.registry import HandlerSpec, JobContext
from haosq.models import Job

RESULT_LIMIT_BYTES = 1024 * 1024


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next attempt after failed attempt `attempt` (see module doc)."""
    exponent = min(max(attempt - 1, 0), 62)
    ceiling = min(cap, base * (2 ** exponent))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


# Built once: json.dumps with options other than the defaults builds an encoder per call.
_RESULT_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False)


def encode_result(value: Any) -> str:
    """The handler's return value as JSON text; anything else is the handler's error."""
    if value is None:
        return "null"  # most handlers return nothing: skip building an encoder pass for it
    try:
        text = _RESULT_ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise NotJsonResult(
            f"the handler returned a value that is not JSON ({type(value).__name__}): {exc}"
        ) from None
    if "\\u0000" in text:
        raise NotJsonResult("the handler's result contains a NUL character (\\u0000), "
                            "which PostgreSQL cannot store in jsonb")
    if len(text) > RESULT_LIMIT_BYTES:
        raise NotJsonResult(f"the handler's result is {len(text)} bytes, over {RESULT_LIMIT_BYTES}")
    return text


class NotJsonResult(Exception):
    """A handler returned something that cannot be stored as the job's JSON result."""


class JobTimedOut(Exception):
    """The attempt ran past its time limit."""


class ChildDied(Exception):
    """The child process running a `process` handler died without reporting a result."""


@dataclass
class Running:
    """One attempt in flight: what the claim loop knows about it."""

    job: Job
    spec: HandlerSpec | None
    context: JobContext
    started: float
    deadline: float | None
    cancel_requested: bool = False
    # Set exactly once, by whoever finishes the attempt first (the handler's thread, the
    # timeout, or shutdown); the later party's result is discarded.
    settled: bool = False
    # The worker gave up on the thread running this attempt (timeout) and replaced it.
    abandoned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settle(self, *, abandon: bool = False) -> bool:
        with self.lock:
            if self.settled:
                return False
            self.settled = True
            self.abandoned = abandon
            return True


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, for the batch acknowledgement and the hooks."""

    running: Running
    status: str  # completed, failed, retried, cancelled
    ack: Ack
    result: Any = None
    error: BaseException | None = None
    duration: float = 0.0


def invoke(running: Running) -> Any:
    """Call the handler in this thread; the caller catches what it raises."""
    assert running.spec is not None
    return running.spec.call(running.job.payload, running.context)


def describe_error(error: BaseException) -> str:
    """The error text kept on the job: the message, then the traceback when there is one.
    Stored as it is: what shows or exports it masks secrets on the way out (haosq.secrets)."""
    # PostgreSQL text cannot hold NUL: one in an exception message must not wedge the batch.
    return _describe(error).replace("\x00", "\\x00")


def _describe(error: BaseException) -> str:
    message = f"{type(error).__name__}: {error}"
    remote = getattr(error, "remote_traceback", None)
    if remote:
        return f"{error}\n\n{remote.rstrip()}"
    if error.__traceback__ is None:
        return message
    trace = "".join(traceback.format_exception(error)).rstrip()
    return f"{message}\n\n{trace}"


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    cap_seconds: float
    default_max_attempts: int
    rng: random.Random = field(default_factory=random.Random)

    def max_attempts(self, job: Job, spec: HandlerSpec | None) -> int:
        if job.max_attempts is not None:
            return job.max_attempts
        if spec is not None and spec.max_attempts is not None:
            return spec.max_attempts
        return self.default_max_attempts

    def retry_at(self, now: datetime, attempt: int, after: float | timedelta | datetime | None) -> datetime:
        if isinstance(after, datetime):
            return after
        if isinstance(after, timedelta):
            return now + after
        if after is not None:
            return now + timedelta(seconds=float(after))
        return now + timedelta(seconds=backoff_delay(attempt, self.base_seconds, self.cap_seconds,
                                                     self.rng))


def decide(
    running: Running,
    *,
    result: Any = None,
    error: BaseException | None = None,
    policy: RetryPolicy,
    now: datetime,
) -> Outcome:
    """Turn what the handler did into the job's next state."""
    job = running.job
    duration = time.monotonic() - running.started
    attempt = job.attempts
    if running.cancel_requested:
        text = "cancelled by an operator while running"
        if error is not None and not isinstance(error, JobTimedOut):
            text += f" (the handler then raised {type(error).__name__}: {error})"
        return Outcome(running, "cancelled", Ack(job.id, attempt, "cancelled", error=text),
                       error=error, duration=duration)
    if error is None:
        try:
            encoded = encode_result(result)
        except NotJsonResult as exc:
            # A programming error that retrying cannot fix.
            return Outcome(running, "failed", Ack(job.id, attempt, "failed", error=describe_error(exc)),
                           error=exc, duration=duration)
        return Outcome(running, "completed", Ack(job.id, attempt, "completed", result_json=encoded),
                       result=result, duration=duration)
    text = describe_error(error)
    if isinstance(error, PermanentError | NotJsonResult | UnknownJobType):
        return Outcome(running, "failed", Ack(job.id, attempt, "failed", error=text),
                       error=error, duration=duration)
    if attempt >= policy.max_attempts(job, running.spec):
        return Outcome(running, "failed", Ack(job.id, attempt, "failed", error=text),
                       error=error, duration=duration)
    after = error.after if isinstance(error, Retry) else None
    due = policy.retry_at(now, attempt, after)
    return Outcome(running, "retried", Ack(job.id, attempt, "pending", error=text, due_at=due),
                   error=error, duration=duration)
