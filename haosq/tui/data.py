"""Where the terminal UI gets its data and sends its actions: one object, passed to the app.

Every method blocks (the app calls them from thread workers, never from the event loop).
In read-only mode the pool's sessions are read-only (`default_transaction_read_only`) and
no migration runs, so a role with only SELECT on the schema is enough; the app hides every
action, and the database refuses one anyway.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from haosq.clock import Clock, SystemClock
from haosq.config import Settings
from haosq.db.connection import Database, connect, resolve_url
from haosq.db.lenient import install_lenient_loaders
from haosq.db.queries import dashboard as dashboard_sql
from haosq.db.queries import jobs as job_sql
from haosq.db.queries import stats as stats_sql
from haosq.db.queries import workers as worker_sql
from haosq.models import Job, JobLog, Worker
from haosq.queue import JobQueue
from haosq.secrets import remember_conninfo

CHANNELS = ("haosq_jobs", "haosq_events")
STATUSES = ("pending", "scheduled", "processing", "completed", "failed", "cancelled")
THROUGHPUT_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class TypeRow:
    type: str
    counts: dict[str, int]
    completed_recent: int = 0
    failed_recent: int = 0
    mean_seconds: float | None = None
    p95_seconds: float | None = None

    @property
    def success_rate(self) -> float | None:
        done = self.completed_recent + self.failed_recent
        if done:
            return self.completed_recent / done
        total = self.counts.get("completed", 0) + self.counts.get("failed", 0)
        return self.counts.get("completed", 0) / total if total else None


@dataclass(frozen=True)
class Dashboard:
    """The dashboard's cheap part, read at one moment: counts, pending age, workers."""

    now: datetime
    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    workers_alive: int
    workers_dead: int
    busy: int
    slots: int
    oldest_pending_seconds: float | None


@dataclass(frozen=True)
class Activity:
    """The dashboard's costlier part: the last hour through the completed_at index."""

    completed_per_minute: list[int]
    failed_per_minute: list[int]
    recent: dict[str, dict[str, Any]]

    @property
    def completed_last_hour(self) -> int:
        return sum(self.completed_per_minute)

    @property
    def failed_last_hour(self) -> int:
        return sum(self.failed_per_minute)


def type_rows(dashboard: Dashboard | None, activity: Activity | None) -> list[TypeRow]:
    """The per-type table: counts from the counters, durations from the last hour."""
    counts = dashboard.by_type if dashboard else {}
    recent = activity.recent if activity else {}
    rows = []
    for name in sorted(set(counts) | set(recent)):
        row = recent.get(name)
        rows.append(TypeRow(
            type=name,
            counts=counts.get(name, {}),
            completed_recent=int(row["completed"]) if row else 0,
            failed_recent=int(row["failed"]) if row else 0,
            mean_seconds=_float(row["mean_seconds"]) if row else None,
            p95_seconds=_float(row["p95_seconds"]) if row else None,
        ))
    return rows


@dataclass(frozen=True)
class WorkersView:
    now: datetime
    workers: list[Worker]
    current_jobs: dict[str, list[int]]
    stale_after: timedelta

    def is_stale(self, worker: Worker) -> bool:
        return (worker.status in ("active", "stopping")
                and self.now - worker.last_heartbeat > self.stale_after)


@dataclass(frozen=True)
class NewJobRequest:
    type: str
    payload: dict[str, Any]
    priority: int = 0
    max_attempts: int | None = None
    tags: tuple[str, ...] = ()
    scheduled_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class PostgresSource:
    """The TUI's data source on a haosq database."""

    def __init__(
        self,
        settings: Settings,
        *,
        read_only: bool = False,
        clock: Clock | None = None,
        stale_after: timedelta | None = None,
        handler_types: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.read_only = read_only
        self.clock = clock or SystemClock()
        heartbeat = settings["worker.heartbeat_interval_ms"] / 1000
        self.stale_after = stale_after or timedelta(
            seconds=heartbeat * settings["worker.stale_after_heartbeats"]
        )
        self._handler_types = handler_types or registered_handler_types
        install_lenient_loaders()  # the TUI shows any row PostgreSQL can store
        remember_conninfo(settings.database_url)  # masked wherever an error quotes it
        self._database: Database | None = None
        self._queue: JobQueue | None = None
        self._lock = threading.Lock()

    # -- connections -------------------------------------------------------------------

    @property
    def database(self) -> Database:
        """The pool, opened on first use (from a worker thread, never the event loop)."""
        with self._lock:
            if self._database is None:
                url = resolve_url(self.settings)
                if self.read_only:
                    url = make_conninfo(url, options="-c default_transaction_read_only=on")
                self._database = Database(
                    self.settings, url=url, min_size=1, max_size=4, migrate=not self.read_only
                )
            return self._database

    @property
    def queue(self) -> JobQueue:
        database = self.database
        with self._lock:
            if self._queue is None:
                self._queue = JobQueue(settings=self.settings, clock=self.clock, database=database)
            return self._queue

    @property
    def url(self) -> str:
        return self.database.url

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        with self.database.connection(timeout=10) as conn:
            yield conn

    def close(self) -> None:
        if self._database is not None:
            self._database.close()

    # -- reads -------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now()

    def dashboard(self) -> Dashboard:
        now = self.clock.now()
        with self._conn() as conn:
            counts = stats_sql.counts_by_type(conn)
            pending = dashboard_sql.pending_times(conn, now)
            workers = dashboard_sql.worker_summary(conn, now, self.stale_after)
        by_status = dict.fromkeys(STATUSES, 0)
        by_type: dict[str, dict[str, int]] = {}
        for row in counts:
            n = int(row["n"])
            by_type.setdefault(row["type"], {})[row["status"]] = n
            by_status[row["status"]] = by_status.get(row["status"], 0) + n
        scheduled = int(pending["scheduled"] or 0)
        by_status["scheduled"] = scheduled
        by_status["pending"] = max(by_status["pending"] - scheduled, 0)
        oldest = pending["oldest_due"]
        return Dashboard(
            now=now,
            by_status=by_status,
            by_type=by_type,
            workers_alive=int(workers["alive"]),
            workers_dead=int(workers["dead"]),
            busy=int(workers["busy"]),
            slots=int(workers["slots"]),
            oldest_pending_seconds=(now - oldest).total_seconds() if oldest else None,
        )

    def activity(self) -> Activity:
        now = self.clock.now()
        with self._conn() as conn:
            minutes = dashboard_sql.throughput(conn, now, THROUGHPUT_WINDOW)
            recent = dashboard_sql.recent_by_type(conn, now, THROUGHPUT_WINDOW)
        completed, failed = _per_minute(minutes, now)
        return Activity(completed, failed, {r["type"]: r for r in recent})

    def jobs(
        self,
        job_filter: job_sql.JobFilter,
        *,
        after_id: int | None = None,
        limit: int = 200,
        oldest_first: bool = False,
    ) -> list[Job]:
        with self._conn() as conn:
            rows = dashboard_sql.jobs_page(
                conn, job_filter, limit=limit, after_id=after_id, oldest_first=oldest_first
            )
        return [Job.from_row(r) for r in rows]

    def estimate(self, job_filter: job_sql.JobFilter) -> int | None:
        """How many jobs match, from the counters (never a count over history); None when the
        filter has parts the counters do not know (tag, text, dates)."""
        if job_filter.tag or job_filter.search or job_filter.created_after or job_filter.created_before:
            return None
        now = self.clock.now()
        with self._conn() as conn:
            counts = stats_sql.counts_by_type(conn)
            scheduled = (int(dashboard_sql.pending_times(conn, now)["scheduled"] or 0)
                         if job_filter.status in ("pending", "scheduled") and not job_filter.type
                         else None)
        wanted = job_filter.type
        total = 0
        for row in counts:
            kind = row["type"]
            if wanted and kind != wanted and not kind.startswith(f"{wanted}:"):
                continue
            status = row["status"]
            if job_filter.status in (None, status) or (
                    job_filter.status == "scheduled" and status == "pending"):
                total += int(row["n"])
        if job_filter.status == "scheduled":
            return scheduled
        if job_filter.status == "pending":
            return None if scheduled is None else max(total - scheduled, 0)
        return total

    def job(self, job_id: int) -> Job:
        return self.queue.get(job_id)

    def logs(self, job_id: int, after_id: int | None = None) -> list[JobLog]:
        return self.queue.logs(job_id, after_id=after_id)

    def workers(self) -> WorkersView:
        with self._conn() as conn:
            rows = worker_sql.list_workers(conn, include_gone=True)
            current = dashboard_sql.current_jobs(conn)
        return WorkersView(self.clock.now(), [Worker.from_row(r) for r in rows], current,
                           self.stale_after)

    def schedules(self) -> list[Any]:
        return self.queue.schedules()

    def job_types(self) -> list[str]:
        """Types for completion: the registered handlers and the types seen in the queue."""
        with self._conn() as conn:
            seen = dashboard_sql.job_types_seen(conn)
        return sorted(set(self._handler_types()) | set(seen))

    def count_actionable(self, job_filter: job_sql.JobFilter, action: str) -> int:
        with self._conn() as conn:
            return dashboard_sql.count_actionable(conn, job_filter, action)

    # -- actions -----------------------------------------------------------------------

    def retry(self, ids: Sequence[int]) -> int:
        with self._conn() as conn, conn.transaction():
            return len(job_sql.retry_by_ids(conn, list(ids)))

    def cancel(self, ids: Sequence[int]) -> int:
        with self._conn() as conn, conn.transaction():
            cancelled, requested = job_sql.cancel_by_ids(conn, list(ids))
        return len(cancelled) + len(requested)

    def retry_matching(self, job_filter: job_sql.JobFilter) -> int:
        return self.queue.retry_matching(job_filter)

    def cancel_matching(self, job_filter: job_sql.JobFilter) -> int:
        return self.queue.cancel_matching(job_filter)

    def add(self, request: NewJobRequest) -> Job:
        return self.queue.add(
            request.type, request.payload, priority=request.priority,
            max_attempts=request.max_attempts, tags=request.tags,
            scheduled_at=request.scheduled_at, created_by="haosq-tui",
        )

    def cleanup_dead_workers(self) -> tuple[list[str], int]:
        return self.queue.cleanup_dead_workers(self.stale_after)

    # -- live events -------------------------------------------------------------------

    def listen(self, on_event: Callable[[str, str], None], stop: threading.Event,
               on_state: Callable[[str | None], None]) -> None:
        """LISTEN on the haosq channels until `stop` is set; reconnects by itself.

        `on_event(channel, payload)` runs on this thread for every notification;
        `on_state(error or None)` reports the connection going down and coming back."""
        delay = 0.5
        while not stop.is_set():
            try:
                with connect(self.url, autocommit=True) as conn:
                    for channel in CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                    on_state(None)
                    delay = 0.5
                    while not stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            on_event(note.channel, note.payload)
            except Exception as exc:  # reported on the banner, then retried
                if stop.is_set():
                    return
                on_state(_describe(exc))
                stop.wait(delay)
                delay = min(delay * 2, 10.0)


def registered_handler_types() -> list[str]:
    """The built-in handlers' types (a broken handler module must not stop the TUI)."""
    from haosq.handlers.registry import REGISTRY, load_builtin_handlers

    with contextlib.suppress(Exception):
        load_builtin_handlers()
    return REGISTRY.types()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _per_minute(rows: Iterable[dict[str, Any]], now: datetime) -> tuple[list[int], list[int]]:
    """Sixty buckets, oldest first, the last one being the current minute."""
    end = now.replace(second=0, microsecond=0)
    completed = [0] * 60
    failed = [0] * 60
    for row in rows:
        index = 59 - int((end - row["minute"]).total_seconds() // 60)
        if 0 <= index < 60:
            completed[index] += int(row["completed"])
            failed[index] += int(row["failed"])
    return completed, failed

