"""Queue statistics that stay fast on a table with millions of finished jobs.

Counts by status and type come from the `job_counts` deltas (kept by statement triggers),
never from count(*) over history; "scheduled" and the oldest pending age come from the
partial index on pending jobs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

COUNTS_BY_TYPE = """
SELECT type, status, sum(delta)::bigint AS n
  FROM haosq.job_counts
 GROUP BY type, status
HAVING sum(delta) <> 0
"""

PENDING_TIMES = """
SELECT (SELECT count(*) FROM haosq.jobs WHERE status = 'pending' AND due_at > now()) AS scheduled,
       extract(epoch FROM now() - (SELECT min(due_at) FROM haosq.jobs
                                    WHERE status = 'pending' AND due_at <= now())) AS oldest_age
"""

# Recent activity: completions and failures per minute and durations per type, over a
# window read through the completed_at index (never the whole history).
RECENT_THROUGHPUT = """
SELECT date_trunc('minute', completed_at) AS minute,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed
  FROM haosq.jobs
 WHERE completed_at >= now() - %(window)s
 GROUP BY 1 ORDER BY 1
"""

RECENT_BY_TYPE = """
SELECT type,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       avg(extract(epoch FROM completed_at - started_at))
           FILTER (WHERE status = 'completed') AS mean_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at))
           FILTER (WHERE status = 'completed') AS p95_seconds
  FROM haosq.jobs
 WHERE completed_at >= now() - %(window)s AND started_at IS NOT NULL
 GROUP BY type ORDER BY type
"""


def counts_by_type(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(COUNTS_BY_TYPE).fetchall()


def pending_times(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(PENDING_TIMES).fetchone()
    assert row is not None
    return row


def compact_counts(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT haosq.compact_job_counts()")


def recent_throughput(conn: psycopg.Connection[Any], window: timedelta) -> list[dict[str, Any]]:
    return conn.execute(RECENT_THROUGHPUT, {"window": window}).fetchall()


def recent_by_type(conn: psycopg.Connection[Any], window: timedelta) -> list[dict[str, Any]]:
    return conn.execute(RECENT_BY_TYPE, {"window": window}).fetchall()
