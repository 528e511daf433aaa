"""JobQueue: the producer and operator API.

    from haosq import JobQueue
    queue = JobQueue()                         # settings from the environment / config file
    job = queue.add("email:send", {"to": "user@example.com", "subject": "Welcome!"})

Inside your own transaction (nothing is enqueued if it rolls back):

    with psycopg.connect(url) as conn:
        queue.add("email:send", {...}, conn=conn)

Naive `scheduled_at` datetimes are taken as UTC.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from haosq.clock import Clock, SystemClock
from haosq.config import Settings, load_settings
from haosq.db.connection import Database
from haosq.db.queries import jobs as job_sql
from haosq.db.queries import stats as stats_sql
from haosq.db.queries import workers as worker_sql
from haosq.errors import InvalidJob, InvalidTransition, JobNotFound
from haosq.models import Job, JobLog, JobStatus, QueueStats, Worker

TYPE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]*:[a-z0-9][a-z0-9_.-]*")
PRIORITY_RANGE = (-1000, 1000)
MAX_TAG_LENGTH = 100
MAX_TAGS = 50
MAX_LIST_LIMIT = 100_000
# A NUL character (\u0000 not preceded by an escaping backslash): PostgreSQL's jsonb refuses it.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@functools.lru_cache(maxsize=1024)
def _is_valid_type(job_type: str) -> bool:
    return TYPE_PATTERN.fullmatch(job_type) is not None


def validate_type(job_type: object) -> str:
    if not isinstance(job_type, str) or not _is_valid_type(job_type):
        raise InvalidJob(
            f"invalid job type {job_type!r}: expected family:action in lowercase letters, "
            "digits, '-', '_' or '.' (e.g. email:send)"
        )
    return job_type


_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def serialise_payload(payload: object, max_bytes: int) -> str:
    if type(payload) is not dict and not isinstance(payload, Mapping):
        raise InvalidJob(f"invalid payload: expected a JSON object, got {type(payload).__name__}")
    try:
        text = _ENCODER.encode(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"invalid payload: not JSON-serialisable ({exc})") from None
    except RecursionError:
        raise InvalidJob("invalid payload: nested too deeply to serialise") from None
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise InvalidJob("invalid payload: strings must not contain NUL (\\u0000) characters")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise InvalidJob("invalid payload: strings must be valid Unicode (no lone surrogates)") from None
    if size > max_bytes:
        raise InvalidJob(
            f"invalid payload: {size} bytes is over the limit of {max_bytes} bytes "
            "(store large data elsewhere and pass a reference, or raise HAOSQ_MAX_PAYLOAD_BYTES)"
        )
    return text


def validate_priority(priority: object) -> int:
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidJob(f"invalid priority {priority!r}: expected an integer from {low} to {high}")
    return priority


def validate_max_attempts(max_attempts: object) -> int | None:
    if max_attempts is None:
        return None
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidJob(f"invalid max_attempts {max_attempts!r}: expected an integer >= 1")
    return max_attempts


def validate_scheduled_at(scheduled_at: object) -> datetime | None:
    if scheduled_at is None:
        return None
    if not isinstance(scheduled_at, datetime):
        raise InvalidJob(f"invalid scheduled_at {scheduled_at!r}: expected a datetime")
    if scheduled_at.tzinfo is None:
        return scheduled_at.replace(tzinfo=UTC)
    return scheduled_at


def validate_tags(tags: object) -> tuple[str, ...]:
    if tags == ():
        return ()
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise InvalidJob(f"invalid tags {tags!r}: expected a list of strings")
    cleaned = tuple(tags)
    if len(cleaned) > MAX_TAGS:
        raise InvalidJob(f"invalid tags: {len(cleaned)} tags, at most {MAX_TAGS} allowed")
    for tag in cleaned:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG_LENGTH or "\x00" in tag:
            raise InvalidJob(
                f"invalid tag {tag!r}: expected a non-empty string of at most "
                f"{MAX_TAG_LENGTH} characters without NUL"
            )
    return cleaned


def validate_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
            or not math.isfinite(timeout)):
        raise InvalidJob(f"invalid timeout {timeout!r}: expected a positive number of seconds")
    return float(timeout)


def validate_created_by(created_by: object) -> str | None:
    if created_by is None:
        return None
    if not isinstance(created_by, str) or "\x00" in created_by or len(created_by) > 200:
        raise InvalidJob(f"invalid created_by {created_by!r}: expected a short string")
    return created_by


@dataclass(frozen=True)
class JobSpec:
    """One job for `add_many`."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int | None = None
    scheduled_at: datetime | None = None
    tags: Sequence[str] = ()
    created_by: str | None = None
    timeout: float | timedelta | None = None


_SPEC_FIELDS = frozenset(JobSpec.__dataclass_fields__)


class JobQueue:
    """Enqueue jobs and operate on them. Thread-safe; share one per process."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        database: Database | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        if database_url:
            self.settings = self.settings.with_overrides(database_url=database_url)
        self.clock = clock or SystemClock()
        self.db = database or Database(self.settings)

    # -- producing ---------------------------------------------------------------------

    def _validated(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None,
        priority: int,
        max_attempts: int | None,
        scheduled_at: datetime | None,
        tags: Iterable[str],
        created_by: str | None,
        timeout: float | timedelta | None,
    ) -> job_sql.NewJob:
        return job_sql.NewJob(
            type=validate_type(job_type),
            payload_json=serialise_payload(
                {} if payload is None else payload, self.settings["max_payload_bytes"]
            ),
            priority=validate_priority(priority),
            max_attempts=validate_max_attempts(max_attempts),
            scheduled_at=validate_scheduled_at(scheduled_at),
            tags=validate_tags(tags),
            created_by=validate_created_by(created_by),
            timeout_seconds=validate_timeout(timeout),
        )

    def add(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        max_attempts: int | None = None,
        scheduled_at: datetime | None = None,
        tags: Iterable[str] = (),
        created_by: str | None = None,
        timeout: float | timedelta | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> Job:
        """Enqueue one job. With `conn`, it joins that connection's transaction."""
        new_job = self._validated(
            type, payload, priority, max_attempts, scheduled_at, tags, created_by, timeout
        )
        if conn is not None:
            return Job.from_row(job_sql.insert_job(conn, new_job))
        with self.db.connection() as own:
            return Job.from_row(job_sql.insert_job(own, new_job))

    def add_many(
        self,
        jobs: Iterable[JobSpec | Mapping[str, Any]],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> int:
        """Enqueue many jobs in one COPY (all or nothing); returns how many.

        Accepts `JobSpec`s or dicts with the same keys (`type`, `payload`, `priority`, ...).
        Jobs are validated as they stream to the server, so that checking one overlaps with
        the server storing the previous ones; the first invalid job aborts the COPY and
        nothing is added (with `conn`, the caller's transaction stays usable: the COPY runs
        in a savepoint).
        """
        if isinstance(jobs, str | bytes | Mapping | JobSpec):
            raise InvalidJob("add_many takes a list of jobs; use add() for a single job")
        if conn is not None:
            # Reading the clock first opens the caller's transaction (when it is not in
            # autocommit), so that the COPY's own block is a savepoint inside it.
            now = job_sql.database_now(conn)
            with conn.transaction():
                return job_sql.copy_jobs(conn, self._validated_each(jobs), now)
        with self.db.connection() as own, own.transaction():
            return job_sql.copy_jobs(own, self._validated_each(jobs), job_sql.database_now(own))

    def _validated_each(self, jobs: Iterable[JobSpec | Mapping[str, Any]]) -> Iterator[job_sql.NewJob]:
        for index, spec in enumerate(jobs):
            try:
                yield self._validated(*self._spec_fields(spec))
            except InvalidJob as exc:
                raise InvalidJob(f"job {index} of the batch: {exc} (nothing was added)") from None

    @staticmethod
    def _spec_fields(spec: JobSpec | Mapping[str, Any]) -> tuple[Any, ...]:
        if type(spec) is dict:
            # The common case, kept to a few dictionary lookups.
            if not spec.keys() <= _SPEC_FIELDS:
                unknown = set(spec) - _SPEC_FIELDS
                raise InvalidJob(f"unknown job option(s): {', '.join(sorted(map(str, unknown)))}")
            if "type" not in spec:
                raise InvalidJob("a job needs a 'type'")
            get = spec.get
            return (spec["type"], get("payload"), get("priority", 0), get("max_attempts"),
                    get("scheduled_at"), get("tags", ()), get("created_by"), get("timeout"))
        if not isinstance(spec, JobSpec | Mapping):
            raise InvalidJob(f"invalid job {spec!r}: expected a JobSpec or a dict with a 'type'")
        if isinstance(spec, Mapping):
            return JobQueue._spec_fields(dict(spec))
        return (spec.type, spec.payload, spec.priority, spec.max_attempts, spec.scheduled_at,
                spec.tags, spec.created_by, spec.timeout)

    # -- reading -----------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        with self.db.connection() as conn:
            row = job_sql.get_job(conn, job_id)
        if row is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return Job.from_row(row)

    def list(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        tag: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Job]:
        """Jobs newest first. `type` takes a type or a family; `status` also takes "scheduled".
        Page with `before_id` = the last id of the previous page."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIST_LIMIT:
            raise InvalidJob(f"invalid limit {limit!r}: expected an integer from 0 to {MAX_LIST_LIMIT}")
        job_filter = self.filter(status=status, type=type, tag=tag, created_after=created_after,
                                 created_before=created_before, search=search)
        with self.db.connection() as conn:
            rows = job_sql.list_jobs(conn, job_filter, limit=limit, before_id=before_id)
        return [Job.from_row(r) for r in rows]

    @staticmethod
    def filter(
        *,
        status: str | None = None,
        type: str | None = None,
        tag: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
    ) -> job_sql.JobFilter:
        known = {s.value for s in JobStatus} | {"scheduled"}
        if status is not None and status not in known:
            raise InvalidJob(f"unknown status {status!r}: expected one of {', '.join(sorted(known))}")
        if type is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*(:[a-z0-9][a-z0-9_.-]*)?",
                                                 type):
            raise InvalidJob(f"invalid type filter {type!r}: expected a family or family:action")
        if tag is not None:
            validate_tags([tag])
        if search is not None and "\x00" in search:
            raise InvalidJob("invalid search text: NUL characters are not allowed")
        return job_sql.JobFilter(
            status=status, type=type, tag=tag,
            created_after=validate_scheduled_at(created_after),
            created_before=validate_scheduled_at(created_before), search=search or None,
        )

    def logs(self, job_id: int, *, after_id: int | None = None, limit: int = 1000) -> list[JobLog]:
        with self.db.connection() as conn:
            if job_sql.get_job(conn, job_id) is None:
                raise JobNotFound(f"job {job_id} does not exist")
            rows = job_sql.job_logs(conn, job_id, after_id=after_id, limit=limit)
        return [JobLog.from_row(r) for r in rows]

    def stats(self) -> QueueStats:
        with self.db.connection() as conn:
            rows = stats_sql.counts_by_type(conn)
            pending = stats_sql.pending_times(conn)
        by_type: dict[str, dict[str, int]] = {}
        by_status = {s.value: 0 for s in JobStatus}
        for row in rows:
            by_type.setdefault(row["type"], {})[row["status"]] = int(row["n"])
            by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["n"])
        scheduled = int(pending["scheduled"] or 0)
        by_status["pending"] = max(by_status["pending"] - scheduled, 0)
        oldest = pending["oldest_age"]
        return QueueStats(
            by_status=by_status,
            by_type=by_type,
            scheduled=scheduled,
            oldest_pending_age_seconds=float(oldest) if oldest is not None else None,
        )

    # -- operating ---------------------------------------------------------------------

    def retry(self, job_id: int) -> Job:
        """Send a failed job back to the queue with a fresh set of attempts."""
        return self.retry_all([job_id])[0]

    def retry_all(self, job_ids: Iterable[int]) -> list[Job]:
        """Send failed jobs back to the queue, all or none: when one of them does not exist
        or is not failed, the error names it and no job is retried."""
        ids = _job_ids(job_ids)
        with self.db.connection() as conn, conn.transaction():
            retried = set(job_sql.retry_by_ids(conn, ids))
            _refuse_unchanged(conn, ids, retried, "only failed jobs can be retried", "retried")
        return [self.get(job_id) for job_id in ids]

    def cancel(self, job_id: int) -> Job:
        """Cancel a pending job now, or ask the worker running it to stop.

        A running job ends `cancelled` when its handler returns or at its timeout."""
        return self.cancel_all([job_id])[0]

    def cancel_all(self, job_ids: Iterable[int]) -> list[Job]:
        """Cancel pending jobs and ask the workers of running ones to stop them, all or none:
        when one of them does not exist or has finished, the error names it and nothing
        changes."""
        ids = _job_ids(job_ids)
        with self.db.connection() as conn, conn.transaction():
            cancelled, requested = job_sql.cancel_by_ids(conn, ids)
            _refuse_unchanged(conn, ids, {*cancelled, *requested},
                              "only pending or processing jobs can be cancelled", "cancelled")
        return [self.get(job_id) for job_id in ids]

    def retry_matching(self, job_filter: job_sql.JobFilter) -> int:
        """Retry every failed job matching the filter; returns how many."""
        with self.db.connection() as conn, conn.transaction():
            return len(job_sql.retry_matching(conn, job_filter))

    def cancel_matching(self, job_filter: job_sql.JobFilter) -> int:
        """Cancel every pending or processing job matching the filter; returns how many."""
        with self.db.connection() as conn, conn.transaction():
            cancelled, requested = job_sql.cancel_matching(conn, job_filter)
        return len(cancelled) + len(requested)

    def count(self, job_filter: job_sql.JobFilter) -> int:
        with self.db.connection() as conn:
            return job_sql.count_matching(conn, job_filter)

    def workers(self, *, include_gone: bool = False) -> list[Worker]:
        with self.db.connection() as conn:
            return [Worker.from_row(r) for r in worker_sql.list_workers(conn, include_gone=include_gone)]

    def cleanup_dead_workers(self, timeout: timedelta = timedelta(minutes=5)) -> tuple[list[str], int]:
        """Mark workers silent for longer than `timeout` dead and rescue the jobs they held.

        Returns (the worker ids marked dead, the number of jobs rescued)."""
        with self.db.connection() as conn, conn.transaction():
            dead = worker_sql.mark_dead_workers(conn, timeout)
            rescued = worker_sql.rescue_orphaned_jobs(
                conn, timeout, self.settings["worker.max_attempts"]
            )
        return dead, len(rescued)

    # -- recurring schedules (haosq.schedules; SQL in haosq.db.queries.schedules) ----------

    def schedule(self, name: str, type: str, payload: Mapping[str, Any] | None = None, *,
                 cron: str | None = None, interval: str | float | timedelta | None = None,
                 timezone: str = "UTC", replace: bool = False, **options: Any) -> Any:
        """Create a recurring schedule: `cron="0 3 * * *"` (in `timezone`) or
        `interval="15m"`. Options: priority, max_attempts, tags, timeout, catch_up
        ("none" | "latest" | "all"), catch_up_limit, enabled. A taken name raises
        ScheduleExists unless `replace=True`. Returns the stored `haosq.schedules.Schedule`."""
        from haosq import schedules as defs
        from haosq.db.queries import schedules as schedule_sql

        spec = defs.make_spec(name, type, payload, cron=cron, interval=interval, timezone=timezone,
                              max_payload_bytes=self.settings["max_payload_bytes"], **options)
        row = defs.spec_row(spec, source="api", now=self.clock.now())
        with self.db.connection() as conn, conn.transaction():
            if replace:
                schedule_sql.delete_schedule(conn, spec.name)
            try:
                with conn.transaction():
                    schedule_sql.insert_schedule(conn, row)
            except psycopg.errors.UniqueViolation:
                raise defs.ScheduleExists(
                    f"a schedule named {spec.name!r} exists already (remove it first or replace it)"
                ) from None
            return defs.Schedule.from_row(self._schedule_row(conn, spec.name))

    def schedules(self) -> list[Any]:
        """Every schedule by name (`haosq.schedules.Schedule`: name, type, cron or
        interval_seconds, timezone, enabled, next_due_at, last_due_at, last_outcome)."""
        from haosq import schedules as defs
        from haosq.db.queries import schedules as schedule_sql

        with self.db.connection() as conn:
            return [defs.Schedule.from_row(r) for r in schedule_sql.list_schedules(conn)]

    def unschedule(self, name: str) -> None:
        """Remove a schedule (its enqueued jobs stay)."""
        from haosq import schedules as defs
        from haosq.db.queries import schedules as schedule_sql

        with self.db.connection() as conn:
            if not schedule_sql.delete_schedule(conn, name):
                raise defs.ScheduleNotFound(f"no schedule named {name!r}")

    def set_schedule_enabled(self, name: str, enabled: bool) -> Any:
        """Enable (restarting from now: runs due while disabled are not replayed) or disable."""
        from haosq import schedules as defs
        from haosq.db.queries import schedules as schedule_sql

        now = self.clock.now()
        with self.db.connection() as conn, conn.transaction():
            row = schedule_sql.lock_schedule(conn, name)
            if row is None:
                raise defs.ScheduleNotFound(f"no schedule named {name!r}")
            restart = None
            if enabled and not row["enabled"]:
                restart = defs.trigger_of(row).next_after(now)
            schedule_sql.set_enabled(conn, name, enabled, restart, now)
            return defs.Schedule.from_row(self._schedule_row(conn, name))

    def run_schedule_now(self, name: str) -> Job:
        """Enqueue one run of a schedule now, outside its timetable (its next run is unchanged)."""
        from haosq import schedules as defs
        from haosq.db.queries import schedules as schedule_sql

        now = self.clock.now()
        with self.db.connection() as conn, conn.transaction():
            row = schedule_sql.lock_schedule(conn, name)
            if row is None:
                raise defs.ScheduleNotFound(f"no schedule named {name!r}")
            job_id = schedule_sql.enqueue_run(conn, row, now, now, enqueued_by="run-now", manual=True)
            if job_id is None:
                raise defs.InvalidSchedule(f"schedule {name!r} already has a run at {now.isoformat()}")
            found = job_sql.get_job(conn, job_id)
        assert found is not None
        return Job.from_row(found)

    @staticmethod
    def _schedule_row(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
        from haosq.db.queries import schedules as schedule_sql

        found = schedule_sql.get_schedule(conn, name)
        assert found is not None
        return found

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- digests -------------------------------------------------------------------------

    def add_digest_item(
        self,
        recipient: str,
        channel: str,
        item: Mapping[str, Any],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> int:
        """Collect `item` (a JSON object) for the next `email:digest` / `notification:digest`
        of `recipient` on `channel`; returns its id. With `conn`, it joins that transaction."""
        from haosq.db.queries import digests as digest_sql

        for name, value in (("recipient", recipient), ("channel", channel)):
            if not isinstance(value, str) or not value.strip():
                raise InvalidJob(f"invalid digest item: {name} must be a non-empty string")
        serialise_payload(item, self.settings["max_payload_bytes"])  # same limits as a payload
        if conn is not None:
            return digest_sql.add_item(conn, recipient, channel, dict(item))
        with self.db.connection() as own:
            return digest_sql.add_item(own, recipient, channel, dict(item))


MAX_JOB_ID = 2**63 - 1


def _job_ids(job_ids: Iterable[int]) -> list[int]:
    """Job ids in the order given, once each; an id no job can have does not exist."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        raise InvalidJob("no job ids given")
    for job_id in ids:
        if isinstance(job_id, bool) or not isinstance(job_id, int) or not 1 <= job_id <= MAX_JOB_ID:
            raise JobNotFound(f"job {job_id!r} does not exist")
    return ids


def _refuse_unchanged(conn: psycopg.Connection[Any], ids: list[int], changed: set[int], rule: str,
                      verb: str) -> None:
    """Raise for the first job the action left alone, so that its transaction rolls back."""
    for job_id in ids:
        if job_id in changed:
            continue
        current = job_sql.get_job(conn, job_id)
        nothing = "" if len(ids) == 1 else f" (no job was {verb})"
        if current is None:
            raise JobNotFound(f"job {job_id} does not exist{nothing}")
        raise InvalidTransition(f"job {job_id} is {current['status']}: {rule}{nothing}")


class _LazyJobQueue:
    """`haosq.job_queue`: a JobQueue built from the environment on first use."""

    _queue: JobQueue | None = None

    def __getattr__(self, name: str) -> Any:
        if self._queue is None:
            type(self)._queue = JobQueue()
        return getattr(self._queue, name)


job_queue: Any = _LazyJobQueue()
