"""Queue statistics that stay fast on a table with millions of finished jobs.

Counts by status and type come from the `job_counts` deltas (kept by statement triggers),
never from count(*) over history; "scheduled" and the oldest pending age come from the
partial index on pending jobs.
"""

from __future__ import annotations

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

def counts_by_type(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(COUNTS_BY_TYPE).fetchall()


def pending_times(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(PENDING_TIMES).fetchone()
    assert row is not None
    return row


def compact_counts(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT haosq.compact_job_counts()")
