"""haosq: a background job queue on PostgreSQL.

    import haosq

    @haosq.handler("my:process-data")
    def process(payload: dict, ctx: haosq.JobContext) -> dict: ...

    queue = haosq.JobQueue()

`JobQueue`, `JobSpec`, `job_queue`, `handler` and `JobContext` are loaded on first use
(module `__getattr__`), so that `import haosq` and the `haosq` command start without loading
the database driver or the handler registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from haosq.errors import (
    ConfigError,
    DatabaseUnavailable,
    HaosqError,
    InvalidJob,
    InvalidTransition,
    JobNotFound,
    PermanentError,
    Retry,
    UnknownJobType,
)
from haosq.models import Job, JobLog, JobStatus, QueueStats, Worker

if TYPE_CHECKING:
    from haosq.handlers.registry import JobContext, handler
    from haosq.queue import JobQueue, JobSpec, job_queue

# Loaded on first use, for start-up time only (they bring in psycopg and the registry).
_LAZY = {
    "JobContext": "haosq.handlers.registry",
    "handler": "haosq.handlers.registry",
    "JobQueue": "haosq.queue",
    "JobSpec": "haosq.queue",
    "job_queue": "haosq.queue",
}

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "HaosqError",
    "InvalidJob",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobLog",
    "JobNotFound",
    "JobQueue",
    "JobSpec",
    "JobStatus",
    "PermanentError",
    "QueueStats",
    "Retry",
    "UnknownJobType",
    "Worker",
    "handler",
    "job_queue",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'haosq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
