"""Reads for the terminal UI's dashboard and jobs table.

Every query takes the moment it describes (`now`) as a parameter instead of the database's
now(): the TUI runs on an injectable clock, so that a frozen clock gives a frozen screen.
None of them counts over history: status counts come from the `job_counts` deltas, recent
activity goes through the completed_at index, pending times through the pending index.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from haosq.db.queries.jobs import JobFilter, page_query, summed_counts

PENDING_TIMES = """
SELECT (SELECT count(*) FROM haosq.jobs
         WHERE status = 'pending' AND due_at > %(now)s) AS scheduled,
       (SELECT min(due_at) FROM haosq.jobs
         WHERE status = 'pending' AND due_at <= %(now)s) AS oldest_due
"""

THROUGHPUT = """
SELECT date_trunc('minute', completed_at) AS minute,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed
  FROM haosq.jobs
 WHERE completed_at > %(now)s - %(window)s AND completed_at <= %(now)s
 GROUP BY 1 ORDER BY 1
"""

# Durations per type from the latest completions of the window (at most %(sample)s rows, read
# backwards through the completed_at index), so that a busy hour does not mean sorting
# millions of rows on every refresh.
RECENT_BY_TYPE = """
WITH recent AS (
    SELECT type, status, extract(epoch FROM completed_at - started_at) AS seconds
      FROM haosq.jobs
     WHERE completed_at > %(now)s - %(window)s AND completed_at <= %(now)s
       AND started_at IS NOT NULL
     ORDER BY completed_at DESC
     LIMIT %(sample)s
)
SELECT type,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       avg(seconds) FILTER (WHERE status = 'completed') AS mean_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds)
           FILTER (WHERE status = 'completed') AS p95_seconds
  FROM recent
 GROUP BY type
"""

# Busy slots per live worker; the jobs_owner partial index holds only processing rows.
WORKER_SUMMARY = """
SELECT count(*) FILTER (WHERE status IN ('active', 'stopping')
                          AND last_heartbeat >= %(now)s - %(stale)s) AS alive,
       count(*) FILTER (WHERE status = 'dead'
                          OR (status IN ('active', 'stopping')
                              AND last_heartbeat < %(now)s - %(stale)s)) AS dead,
       coalesce(sum(concurrency) FILTER (WHERE status IN ('active', 'stopping')
                                           AND last_heartbeat >= %(now)s - %(stale)s), 0) AS slots,
       (SELECT count(*) FROM haosq.jobs WHERE status = 'processing') AS busy
  FROM haosq.workers
"""

# The jobs each worker process holds right now, through the jobs_owner partial index.
CURRENT_JOBS = """
SELECT owner_token::text AS token, array_agg(id ORDER BY id) AS ids
  FROM haosq.jobs
 WHERE status = 'processing' AND owner_token IS NOT NULL
 GROUP BY owner_token
"""

JOB_TYPES_SEEN = "SELECT DISTINCT type FROM haosq.job_counts ORDER BY type"


def pending_times(conn: psycopg.Connection[Any], now: datetime) -> dict[str, Any]:
    row = conn.execute(PENDING_TIMES, {"now": now}).fetchone()
    assert row is not None
    return row


def throughput(conn: psycopg.Connection[Any], now: datetime, window: timedelta) -> list[dict[str, Any]]:
    return conn.execute(THROUGHPUT, {"now": now, "window": window}).fetchall()


def recent_by_type(
    conn: psycopg.Connection[Any], now: datetime, window: timedelta, sample: int = 20_000
) -> list[dict[str, Any]]:
    return conn.execute(RECENT_BY_TYPE, {"now": now, "window": window, "sample": sample}).fetchall()


def worker_summary(conn: psycopg.Connection[Any], now: datetime, stale: timedelta) -> dict[str, Any]:
    row = conn.execute(WORKER_SUMMARY, {"now": now, "stale": stale}).fetchone()
    assert row is not None
    return row


def current_jobs(conn: psycopg.Connection[Any]) -> dict[str, list[int]]:
    return {r["token"]: list(r["ids"]) for r in conn.execute(CURRENT_JOBS).fetchall()}


def job_types_seen(conn: psycopg.Connection[Any]) -> list[str]:
    return [r["type"] for r in conn.execute(JOB_TYPES_SEEN).fetchall()]


def jobs_page(
    conn: psycopg.Connection[Any],
    job_filter: JobFilter,
    *,
    limit: int,
    after_id: int | None = None,
    oldest_first: bool = False,
) -> list[dict[str, Any]]:
    """One page of the jobs table in id order (keyset: `after_id` is the last id shown).

    Newest first by default; the primary key index serves both directions, so the first
    page of ten million rows costs the same as the first page of ten."""
    query, params = page_query(job_filter, limit=limit, after_id=after_id, oldest_first=oldest_first)
    return conn.execute(query, params).fetchall()


def actionable_count_query(job_filter: JobFilter, action: str) -> tuple[sql.Composable, list[Any]]:
    """One count per status, so that each reads its own partial index (`jobs_status_id` for
    failed jobs, `jobs_pending_due` and `jobs_owner` for live ones) instead of the history.
    The status is a literal, not a parameter: a generic plan could not prove that a partial
    index's predicate holds for a parameter's value."""
    where, params = job_filter.where()
    statuses = ["failed"] if action == "retry" else ["pending", "processing"]
    return summed_counts(where, params, [sql.SQL("status = {}").format(sql.Literal(status))
                                         for status in statuses])


def count_actionable(conn: psycopg.Connection[Any], job_filter: JobFilter, action: str) -> int:
    """How many jobs matching the filter a bulk retry or cancel would touch (for its confirmation)."""
    query, params = actionable_count_query(job_filter, action)
    row = conn.execute(query, params).fetchone()
    return int(row["n"]) if row else 0
