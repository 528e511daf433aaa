"""haosq: a background job queue on PostgreSQL."""

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
from haosq.handlers.registry import JobContext, handler
from haosq.models import Job, JobLog, JobStatus, QueueStats, Worker
from haosq.queue import JobQueue, JobSpec, job_queue

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
