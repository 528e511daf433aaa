"""Plain data records for the rows haosq stores."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Self


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class _Row:
    """Build a record from a database row (a dict), ignoring columns the record does not name."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        # The claim loop builds one record per claimed job: look the field names up once.
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})


_FIELD_NAMES: dict[type, frozenset[str]] = {}


@dataclass(frozen=True, slots=True)
class Job(_Row):
    id: int
    type: str
    status: JobStatus
    priority: int
    payload: dict[str, Any]
    scheduled_at: datetime
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    max_attempts: int | None = None
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    retry_at: datetime | None = None
    due_at: datetime | None = None
    worker_id: str | None = None
    worker_pid: int | None = None
    created_by: str | None = None
    tags: list[str] = field(default_factory=list)
    timeout_seconds: float | None = None
    cancel_requested_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", JobStatus(self.status))

    @property
    def family(self) -> str:
        return self.type.split(":", 1)[0]

    def is_scheduled(self, now: datetime) -> bool:
        """Pending, but not due yet: shown as "scheduled"."""
        due = self.due_at or self.scheduled_at
        return self.status is JobStatus.PENDING and due > now


@dataclass(frozen=True, slots=True)
class JobLog(_Row):
    id: int
    job_id: int
    level: str
    message: str
    created_at: datetime
    attempt: int | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Worker(_Row):
    worker_id: str
    token: str
    pid: int
    hostname: str
    status: str
    concurrency: int
    job_types: list[str]
    jobs_processed: int
    jobs_succeeded: int
    jobs_failed: int
    started_at: datetime
    last_heartbeat: datetime
    stopped_at: datetime | None = None
    busy: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts by status, by type, and success / failure rates."""

    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    scheduled: int
    oldest_pending_age_seconds: float | None

    @property
    def success_rate(self) -> float | None:
        done = self.by_status.get("completed", 0)
        failed = self.by_status.get("failed", 0)
        return done / (done + failed) if done + failed else None

    @property
    def failure_rate(self) -> float | None:
        rate = self.success_rate
        return None if rate is None else 1.0 - rate
