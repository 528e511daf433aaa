"""What "nothing in the database changed" means: every row of the tables a bad input could
touch, compared before and after."""

from __future__ import annotations

from typing import Any

import psycopg

TABLES = ("haosq.jobs", "haosq.job_counts", "haosq.job_logs", "haosq.schedules")


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    state = {}
    for table in TABLES:
        rows = conn.execute(f"SELECT row_to_json(t)::text AS r FROM {table} AS t").fetchall()
        state[table] = sorted(r["r"] if isinstance(r, dict) else r[0] for r in rows)
    return state
