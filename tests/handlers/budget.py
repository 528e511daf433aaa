"""Running a built-in file handler in a fresh process, to measure what a job took: wall time and
peak memory (the test process's own high-water mark says nothing about one call)."""

from __future__ import annotations

import multiprocessing
import resource
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from haosq.config import Settings
from haosq.models import Job


@dataclass(frozen=True)
class Measured:
    error: str | None       # "TypeName: message" when the handler raised
    result: Any
    seconds: float          # the handler call alone
    peak_mb: float          # the process's peak RSS during the call, above what it held before
    logs: list[tuple[str, str]]


class _ListSink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, job_id: int, attempt: int, level: str, message: str,
              metadata: dict[str, Any] | None) -> None:
        self.lines.append((level, message))


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(job: Job, settings: Settings, pipe: Connection) -> None:
    import haosq.handlers.files  # noqa: F401  (registers file:*)
    from haosq.handlers.registry import REGISTRY, CancelEvent, JobContext, JobLogger

    sink = _ListSink()
    context = JobContext(job=job, log=JobLogger(sink, job.id, 1), attempt=1, cancelled=CancelEvent(),
                         settings=settings)
    spec = REGISTRY.get(job.type)
    before = _peak_kb()
    started = time.monotonic()
    error, result = None, None
    try:
        result = spec.call(job.payload, context)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    pipe.send(Measured(error, result, time.monotonic() - started, (_peak_kb() - before) / 1024, sink.lines))
    pipe.close()


def run_measured(job: Job, settings: Settings, timeout: float = 120) -> Measured:
    """Run `job` (a row from JobQueue.add) with `settings` in a new interpreter."""
    spawn = multiprocessing.get_context("spawn")
    receive, send = spawn.Pipe(duplex=False)
    child = spawn.Process(target=_child, args=(job, settings, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise AssertionError(f"{job.type} still running after {timeout} s")
        measured: Measured = receive.recv()
    finally:
        receive.close()
        child.kill()
        child.join()
    return measured
