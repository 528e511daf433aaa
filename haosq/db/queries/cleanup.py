"""Batched deletes for the cleanup job types: host tables named in configuration, and
haosq's own history. Each call deletes at most `limit` rows in one short statement, so a
large cleanup never holds long locks; callers loop until a batch comes back short."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row


def table_identifier(qualified: tuple[str, ...]) -> sql.Identifier:
    return sql.Identifier(*qualified)


def column_exists(conn: psycopg.Connection[Any], table: tuple[str, ...], column: str) -> bool:
    """Whether `table` (optionally schema-qualified) exists and has `column`."""
    relation = ".".join(f'"{part}"' for part in table)
    row = conn.execute(
        """SELECT 1 FROM pg_attribute
            WHERE attrelid = to_regclass(%s) AND attname = %s AND attnum > 0 AND NOT attisdropped""",
        (relation, column),
    ).fetchone()
    return row is not None


def delete_older_batch(
    conn: psycopg.Connection[Any], table: tuple[str, ...], column: str, age: timedelta, limit: int
) -> int:
    """Delete up to `limit` rows whose `column` is older than now() - `age`; returns how many.

    Rows locked by other transactions are skipped (the next run gets them)."""
    query = sql.SQL(
        """DELETE FROM {table} WHERE ctid = ANY(ARRAY(
               SELECT ctid FROM {table} WHERE {column} < now() - %s
                LIMIT %s FOR UPDATE SKIP LOCKED))"""
    ).format(table=table_identifier(table), column=sql.Identifier(column))
    with conn.cursor() as cur:
        cur.execute(query, (age, limit))
        return cur.rowcount


def count_older(conn: psycopg.Connection[Any], table: tuple[str, ...], column: str, age: timedelta) -> int:
    query = sql.SQL("SELECT count(*) FROM {table} WHERE {column} < now() - %s").format(
        table=table_identifier(table), column=sql.Identifier(column)
    )
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(query, (age,)).fetchone()
    return int(row[0]) if row else 0


DELETE_JOB_LOGS = """
DELETE FROM haosq.job_logs WHERE id = ANY(ARRAY(
    SELECT id FROM haosq.job_logs WHERE created_at < now() - %s ORDER BY id LIMIT %s))
"""

# Finished jobs only; their logs and checkpoints go with them (ON DELETE CASCADE).
DELETE_FINISHED_JOBS = """
DELETE FROM haosq.jobs WHERE id = ANY(ARRAY(
    SELECT id FROM haosq.jobs
     WHERE completed_at < now() - %s AND status IN ('completed', 'failed', 'cancelled')
     LIMIT %s FOR UPDATE SKIP LOCKED))
"""

DELETE_SENT_DIGEST_ITEMS = """
DELETE FROM haosq.digest_items WHERE id = ANY(ARRAY(
    SELECT id FROM haosq.digest_items WHERE sent_at < now() - %s LIMIT %s FOR UPDATE SKIP LOCKED))
"""

COUNT_JOB_LOGS = "SELECT count(*) FROM haosq.job_logs WHERE created_at < now() - %s"
COUNT_FINISHED_JOBS = """SELECT count(*) FROM haosq.jobs
    WHERE completed_at < now() - %s AND status IN ('completed', 'failed', 'cancelled')"""
COUNT_SENT_DIGEST_ITEMS = "SELECT count(*) FROM haosq.digest_items WHERE sent_at < now() - %s"

HISTORY = {
    "job_logs": (DELETE_JOB_LOGS, COUNT_JOB_LOGS),
    "jobs": (DELETE_FINISHED_JOBS, COUNT_FINISHED_JOBS),
    "digest_items": (DELETE_SENT_DIGEST_ITEMS, COUNT_SENT_DIGEST_ITEMS),
}


def delete_history_batch(conn: psycopg.Connection[Any], what: str, age: timedelta, limit: int) -> int:
    """One batch of haosq's own history: "job_logs", "jobs" (finished) or "digest_items" (sent)."""
    with conn.cursor() as cur:
        cur.execute(HISTORY[what][0], (age, limit))
        return cur.rowcount


def count_history(conn: psycopg.Connection[Any], what: str, age: timedelta) -> int:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(HISTORY[what][1], (age,)).fetchone()
    return int(row[0]) if row else 0
