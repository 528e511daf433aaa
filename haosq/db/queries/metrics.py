"""The queries behind the metrics endpoint and /healthz: cheap enough to run on every scrape.

Queue depth and the oldest runnable job's age read only pending rows (through the partial
indexes on pending jobs), never the history of finished jobs.
"""

from __future__ import annotations

from typing import Any

import psycopg

PENDING_BY_TYPE = """
SELECT type,
       count(*) FILTER (WHERE due_at <= now()) AS runnable,
       count(*) FILTER (WHERE due_at > now()) AS scheduled,
       extract(epoch FROM now() - min(due_at) FILTER (WHERE due_at <= now()))::float8 AS oldest_age
  FROM haosq.jobs
 WHERE status = 'pending'
 GROUP BY type
"""


def pending_by_type(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(PENDING_BY_TYPE).fetchall()


def ping(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT 1").fetchone()
