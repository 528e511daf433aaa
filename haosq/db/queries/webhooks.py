"""Webhook routes, per-job webhook URLs and what a delivery reports about a job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

REPLACE_ROUTES_DELETE = "DELETE FROM haosq.webhook_routes WHERE NOT (type = ANY(%(types)s))"
REPLACE_ROUTES_UPSERT = """
INSERT INTO haosq.webhook_routes (type, url)
SELECT * FROM unnest(%(types)s::text[], %(urls)s::text[])
ON CONFLICT (type) DO UPDATE SET url = EXCLUDED.url, updated_at = now()
 WHERE haosq.webhook_routes.url IS DISTINCT FROM EXCLUDED.url
"""

ATTACH = """
INSERT INTO haosq.job_webhooks (job_id, url) VALUES (%(job_id)s, %(url)s)
ON CONFLICT (job_id) DO UPDATE SET url = EXCLUDED.url
"""

FINISHED_JOB = """
SELECT id, type, status, attempts, max_attempts, result, error, tags,
       created_at, started_at, completed_at
  FROM haosq.jobs WHERE id = %(job_id)s
"""


def replace_routes(conn: psycopg.Connection[Any], routes: Mapping[str, str]) -> None:
    """Make the routes table equal to `routes` (one transaction)."""
    types = list(routes)
    with conn.transaction():
        conn.execute(REPLACE_ROUTES_DELETE, {"types": types})
        if types:
            conn.execute(REPLACE_ROUTES_UPSERT, {"types": types, "urls": [routes[t] for t in types]})


def routes(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT type, url FROM haosq.webhook_routes ORDER BY type").fetchall()
    return {_get(row, "type", 0): _get(row, "url", 1) for row in rows}


def attach(conn: psycopg.Connection[Any], job_id: int, url: str) -> None:
    conn.execute(ATTACH, {"job_id": job_id, "url": url})


def finished_job(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    row = conn.execute(FINISHED_JOB, {"job_id": job_id}).fetchone()
    if row is None:
        return None
    if isinstance(row, dict):
        return row
    names = ("id", "type", "status", "attempts", "max_attempts", "result", "error", "tags",
             "created_at", "started_at", "completed_at")
    return dict(zip(names, row, strict=True))


def _get(row: Any, name: str, index: int) -> Any:
    return row[name] if isinstance(row, dict) else row[index]
