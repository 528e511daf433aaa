"""Producer and operator queries on jobs: enqueue, read, list, retry, cancel."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

JOB_COLUMNS = sql.SQL(
    "id, type, status, priority, payload, result, error, scheduled_at, due_at, started_at, "
    "completed_at, attempts, max_attempts, retry_at, worker_id, worker_pid, created_by, tags, "
    "timeout_seconds, cancel_requested_at, created_at, updated_at"
)

INSERT_JOB = sql.SQL(
    """INSERT INTO haosq.jobs
           (type, payload, priority, max_attempts, scheduled_at, due_at, tags, created_by,
            timeout_seconds)
       VALUES (%(type)s, %(payload)s, %(priority)s, %(max_attempts)s,
               coalesce(%(scheduled_at)s, now()), coalesce(%(scheduled_at)s, now()),
               %(tags)s, %(created_by)s, %(timeout_seconds)s)
       RETURNING {columns}"""
).format(columns=JOB_COLUMNS)

COPY_COLUMNS = (
    "type", "payload", "priority", "max_attempts", "scheduled_at", "due_at", "tags",
    "created_by", "timeout_seconds",
)
COPY_TYPES = ("text", "jsonb", "int4", "int4", "timestamptz", "timestamptz", "text[]", "text",
              "float8")
COPY_JOBS = sql.SQL("COPY haosq.jobs ({columns}) FROM STDIN (FORMAT BINARY)").format(
    columns=sql.SQL(", ").join(sql.Identifier(c) for c in COPY_COLUMNS)
)


class NewJob(NamedTuple):
    """A validated job, ready to insert. `payload_json` is the payload already serialised.
    (A named tuple: `add_many` builds one per job, and it is the cheapest record to build.)"""

    type: str
    payload_json: str
    priority: int = 0
    max_attempts: int | None = None
    scheduled_at: datetime | None = None
    tags: tuple[str, ...] = ()
    created_by: str | None = None
    timeout_seconds: float | None = None


class _JsonText(str):
    """Marks the COPY's jsonb column dumper (registered per cursor, looked up by column type)."""


def _raw_jsonb(text: str) -> Jsonb:
    """Wrap JSON text that was serialised (and size-checked) already, so it is not dumped twice."""
    return Jsonb(text, dumps=lambda already_json: already_json)


def insert_job(conn: psycopg.Connection[Any], job: NewJob) -> dict[str, Any]:
    # The caller's own connection may use any row factory: ask for dicts on this cursor.
    row = conn.cursor(row_factory=dict_row).execute(
        INSERT_JOB,
        {
            "type": job.type,
            "payload": _raw_jsonb(job.payload_json),
            "priority": job.priority,
            "max_attempts": job.max_attempts,
            "scheduled_at": job.scheduled_at,
            "tags": list(job.tags),
            "created_by": job.created_by,
            "timeout_seconds": job.timeout_seconds,
        },
    ).fetchone()
    assert row is not None
    return row


class _JsonTextBinaryDumper(Dumper):
    """jsonb in binary COPY from JSON text serialised (and size-checked) already: the format's
    version byte, then the text. Saves a wrapper object and a dumps() call per row."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode()


def copy_jobs(conn: psycopg.Connection[Any], jobs: Iterable[NewJob], now: datetime) -> int:
    """Bulk insert with COPY; scheduled_at defaults to `now` (the database's clock)."""
    count = 0
    with conn.cursor() as cur:
        cur.adapters.register_dumper(_JsonText, _JsonTextBinaryDumper)  # this cursor only
        with cur.copy(COPY_JOBS) as copy:
            copy.set_types(list(COPY_TYPES))
            write = copy.write_row
            for job in jobs:
                at = job.scheduled_at or now
                write((job.type, job.payload_json, job.priority, job.max_attempts, at, at,
                       list(job.tags), job.created_by, job.timeout_seconds))
                count += 1
    return count


def database_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.cursor(row_factory=dict_row).execute("SELECT now() AS now").fetchone()
    assert row is not None
    return row["now"]


def get_job(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    query = sql.SQL("SELECT {columns} FROM haosq.jobs WHERE id = %s").format(columns=JOB_COLUMNS)
    return conn.execute(query, (job_id,)).fetchone()


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What `haosq jobs list`, the API and the TUI filter on. Every field is optional.

    `type` is an exact type (`email:send`) or a family (`email`); `status` may be the
    derived "scheduled" (pending, not due yet); `search` matches an id or the error text.
    """

    status: str | None = None
    type: str | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: str | None = None

    def where(self) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = []
        params: list[Any] = []
        if self.status == "scheduled":
            clauses.append(sql.SQL("status = 'pending' AND due_at > now()"))
        elif self.status == "pending":
            clauses.append(sql.SQL("status = 'pending' AND due_at <= now()"))
        elif self.status:
            clauses.append(sql.SQL("status = %s"))
            params.append(self.status)
        if self.type:
            if ":" in self.type:
                clauses.append(sql.SQL("type = %s"))
                params.append(self.type)
            else:
                # A family: a range on the (type, id) index; ';' sorts right after ':'.
                clauses.append(sql.SQL("type >= %s AND type < %s"))
                params += [f"{self.type}:", f"{self.type};"]
        if self.tag:
            clauses.append(sql.SQL("tags @> ARRAY[%s]::text[]"))
            params.append(self.tag)
        if self.created_after:
            clauses.append(sql.SQL("created_at >= %s"))
            params.append(self.created_after)
        if self.created_before:
            clauses.append(sql.SQL("created_at < %s"))
            params.append(self.created_before)
        if self.search:
            text = self.search.strip()
            if text.isdigit() and len(text) < 19:
                clauses.append(sql.SQL("(id = %s OR error ILIKE %s)"))
                params += [int(text), f"%{_escape_like(text)}%"]
            else:
                clauses.append(sql.SQL("error ILIKE %s"))
                params.append(f"%{_escape_like(text)}%")
        if not clauses:
            return sql.SQL("TRUE"), params
        return sql.SQL(" AND ").join(clauses), params


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# The listing indexes (`jobs_status_id`, `jobs_type_id`, `jobs_tags`) cover finished jobs
# only (migration 0006); pending and running jobs are found through `jobs_pending_due` and
# `jobs_owner`. A filter on type or tag across every status therefore reads the finished,
# pending and running jobs separately, each through its own partial index, and merges them:
# one query over all of them would have no index for the type or tag and could walk the
# primary key through the whole history.
FINISHED = sql.SQL("status IN ('completed', 'failed', 'cancelled')")
PENDING = sql.SQL("status = 'pending'")
PROCESSING = sql.SQL("status = 'processing'")


def _halves(job_filter: JobFilter) -> list[sql.Composable]:
    if job_filter.status is None and (job_filter.type or job_filter.tag):
        return [FINISHED, PENDING, PROCESSING]
    return []


def page_query(
    job_filter: JobFilter,
    *,
    limit: int,
    after_id: int | None = None,
    oldest_first: bool = False,
) -> tuple[sql.Composable, list[Any]]:
    """One page of jobs in id order, keyset-paged (`after_id` is the last id shown)."""
    where, params = job_filter.where()
    order = sql.SQL("ASC" if oldest_first else "DESC")
    if after_id is not None:
        where = sql.SQL("{} AND id {} %s").format(where, sql.SQL(">" if oldest_first else "<"))
        params.append(after_id)
    halves = _halves(job_filter)
    if not halves:
        query = sql.SQL("SELECT {columns} FROM haosq.jobs WHERE {where} ORDER BY id {order} LIMIT %s")
        return query.format(columns=JOB_COLUMNS, where=where, order=order), [*params, limit]
    parts = [
        sql.SQL("(SELECT {columns} FROM haosq.jobs WHERE {where} AND {half} ORDER BY id {order} LIMIT %s)")
        .format(columns=JOB_COLUMNS, where=where, half=half, order=order)
        for half in halves
    ]
    query = sql.SQL("SELECT * FROM ({parts}) AS page ORDER BY id {order} LIMIT %s").format(
        parts=sql.SQL(" UNION ALL ").join(parts), order=order)
    return query, [*params, limit] * len(halves) + [limit]


def list_jobs(
    conn: psycopg.Connection[Any],
    job_filter: JobFilter,
    *,
    limit: int = 50,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first, paged by id (keyset): pass the last id seen as `before_id`."""
    query, params = page_query(job_filter, limit=limit, after_id=before_id)
    return conn.execute(query, params).fetchall()


def summed_counts(
    where: sql.Composable, params: list[Any], parts: Sequence[sql.Composable]
) -> tuple[sql.Composable, list[Any]]:
    """`SELECT (count of where AND part 1) + (count of where AND part 2) ... AS n`: one count
    per part, so that each can read the partial index its part selects."""
    counts = [sql.SQL("(SELECT count(*) FROM haosq.jobs WHERE {where} AND {part})").format(
        where=where, part=part) for part in parts]
    return sql.SQL("SELECT {sum} AS n").format(sum=sql.SQL(" + ").join(counts)), params * len(parts)


def count_matching(conn: psycopg.Connection[Any], job_filter: JobFilter) -> int:
    where, params = job_filter.where()
    query, all_params = summed_counts(where, params, _halves(job_filter) or [sql.SQL("TRUE")])
    row = conn.execute(query, all_params).fetchone()
    return int(row["n"]) if row else 0


RETRY_JOBS = sql.SQL(
    """UPDATE haosq.jobs
          SET status = 'pending', attempts = 0, due_at = now(), retry_at = NULL,
              completed_at = NULL, started_at = NULL, result = NULL, error = NULL,
              worker_id = NULL, worker_pid = NULL, owner_token = NULL,
              cancel_requested_at = NULL, updated_at = now()
        WHERE {where} AND status = 'failed'
    RETURNING id"""
)

CANCEL_PENDING = sql.SQL(
    """UPDATE haosq.jobs
          SET status = 'cancelled', completed_at = now(), updated_at = now(),
              error = coalesce(error, 'cancelled by operator')
        WHERE {where} AND status = 'pending'
    RETURNING id"""
)

REQUEST_CANCEL_RUNNING = sql.SQL(
    """UPDATE haosq.jobs
          SET cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
        WHERE {where} AND status = 'processing'
    RETURNING id, owner_token"""
)


def _by_ids(ids: Sequence[int]) -> tuple[sql.Composable, list[Any]]:
    return sql.SQL("id = ANY(%s)"), [list(ids)]


def retry_jobs(conn: psycopg.Connection[Any], where: sql.Composable, params: list[Any]) -> list[int]:
    ids = [r["id"] for r in conn.execute(RETRY_JOBS.format(where=where), params).fetchall()]
    if ids:
        add_logs(conn, [(i, None, "info", "retried by an operator", None) for i in ids])
        conn.execute("SELECT pg_notify('haosq_jobs', '*')")
    return ids


def cancel_jobs(
    conn: psycopg.Connection[Any], where: sql.Composable, params: list[Any]
) -> tuple[list[int], list[int]]:
    """Cancel pending jobs at once and ask the workers of running ones to stop them.

    Returns (cancelled now, cancellation requested)."""
    cancelled = [r["id"] for r in conn.execute(CANCEL_PENDING.format(where=where), params)]
    running = conn.execute(REQUEST_CANCEL_RUNNING.format(where=where), params).fetchall()
    for row in running:
        conn.execute("SELECT pg_notify('haosq_events', %s)", (f"cancel:{row['id']}",))
    if cancelled:
        add_logs(conn, [(i, None, "info", "cancelled by an operator", None) for i in cancelled])
    return cancelled, [r["id"] for r in running]


def retry_by_ids(conn: psycopg.Connection[Any], ids: Sequence[int]) -> list[int]:
    return retry_jobs(conn, *_by_ids(ids))


def cancel_by_ids(conn: psycopg.Connection[Any], ids: Sequence[int]) -> tuple[list[int], list[int]]:
    return cancel_jobs(conn, *_by_ids(ids))


def retry_matching(conn: psycopg.Connection[Any], job_filter: JobFilter) -> list[int]:
    return retry_jobs(conn, *job_filter.where())


def cancel_matching(conn: psycopg.Connection[Any], job_filter: JobFilter) -> tuple[list[int], list[int]]:
    return cancel_jobs(conn, *job_filter.where())


ADD_LOGS = """INSERT INTO haosq.job_logs (job_id, attempt, level, message, metadata)
              VALUES (%s, %s, %s, %s, %s)"""


def add_logs(
    conn: psycopg.Connection[Any],
    entries: Iterable[tuple[int, int | None, str, str, dict[str, Any] | None]],
) -> None:
    rows = [(j, a, lvl, msg, Jsonb(meta) if meta is not None else None)
            for j, a, lvl, msg, meta in entries]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(ADD_LOGS, rows)


def job_logs(
    conn: psycopg.Connection[Any], job_id: int, *, after_id: int | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT id, job_id, attempt, level, message, metadata, created_at
             FROM haosq.job_logs
            WHERE job_id = %s AND id > %s
         ORDER BY id LIMIT %s""",
        (job_id, after_id or 0, limit),
    ).fetchall()
