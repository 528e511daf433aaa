"""Rows that hold what a producer, a handler or a direct SQL writer can put in the database:
Rich markup, terminal escape sequences, timestamps out of Python's range, numbers it cannot
parse. Every view (CLI text and JSON, TUI screens) must show them literally and keep working.

The CHECK constraints of the test database are dropped first: the rows stand for data written
before a constraint existed, or by a writer that bypassed it; a view never gets to choose.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

BOLD, CLOSE, LINK, ESCAPE = "[bold]", "[/]", "[link=https://x]", "\x1b[31m"
MARKUP = (BOLD, CLOSE, LINK)
# How an escape sequence must appear on every surface: its characters made visible.
ESCAPE_SHOWN = "\\x1b[31m"
HOSTILE = f"{BOLD}b {CLOSE} {LINK}click {ESCAPE}red"
LOG_LINE = f"[handlers.smtp] host or url in {CLOSE} {LINK} {ESCAPE}"
HUGE_NUMBER = "9" * 5000

TABLES = ("haosq.jobs", "haosq.job_logs", "haosq.workers", "haosq.schedules")


def drop_checks(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT conrelid::regclass::text AS tbl, conname FROM pg_constraint"
        " WHERE contype = 'c' AND conrelid = ANY(%s::regclass[])", (list(TABLES),)).fetchall()
    for row in rows:
        table, name = (row["tbl"], row["conname"]) if isinstance(row, dict) else row
        conn.execute(psycopg.sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            psycopg.sql.SQL(table), psycopg.sql.Identifier(name)))


def insert_hostile_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Jobs, logs, a worker and a schedule full of markup, escapes and unloadable values."""
    drop_checks(conn)

    def job(**values: Any) -> int:
        columns = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        row = conn.execute(f"INSERT INTO haosq.jobs ({columns}) VALUES ({marks}) RETURNING id",
                           list(values.values())).fetchone()
        return int(row["id"] if isinstance(row, dict) else row[0])

    ids = {
        "markup": job(type="demo:echo", status="failed", attempts=1, max_attempts=1,
                      payload=json.dumps({"note": HOSTILE, HOSTILE: [CLOSE]}),
                      result=json.dumps({CLOSE: ESCAPE}),
                      error=f"RuntimeError: {HOSTILE}\nsecond line {CLOSE}",
                      tags=[BOLD, CLOSE, LINK, ESCAPE], created_by=f"{CLOSE}{ESCAPE}",
                      worker_id=f"{BOLD}w{ESCAPE}"),
        "times": job(type="demo:echo", status="pending", scheduled_at="infinity", due_at="infinity",
                     created_at="-infinity", updated_at="10000-01-01 00:00:00+00",
                     started_at="0044-03-15 00:00:00+00 BC", retry_at="294276-12-31 00:00:00+00",
                     timeout_seconds=float("nan")),
        "numbers": job(type="demo:echo", status="completed", attempts=1,
                       payload='{"n": ' + HUGE_NUMBER + "}", result='{"big": ' + HUGE_NUMBER + "}",
                       completed_at="infinity", started_at="-infinity",
                       timeout_seconds=float("inf")),
        "type": job(type=f"demo:{HOSTILE}"),
    }
    conn.execute(
        "INSERT INTO haosq.job_logs (job_id, attempt, level, message, metadata, created_at)"
        " VALUES (%s, 1, 'error', %s, %s, 'infinity'), (%s, 1, 'info', %s, NULL, now())",
        (ids["markup"], LOG_LINE, json.dumps({BOLD: CLOSE, "n": HUGE_NUMBER}), ids["markup"],
         f"plain {ESCAPE} line"))
    conn.execute(
        """INSERT INTO haosq.workers (token, worker_id, pid, hostname, status, concurrency, job_types,
                                      started_at, last_heartbeat)
           VALUES ('00000000-0000-4000-8000-0000000000aa', %s, 4242, %s, 'active', 2, %s,
                   '-infinity', 'infinity')""",
        (f"{BOLD}worker{ESCAPE}", f"{LINK}host{CLOSE}", [CLOSE, ESCAPE]))
    conn.execute(
        """INSERT INTO haosq.schedules (name, type, cron, timezone, tags, next_due_at, last_due_at,
                                        anchor_at, payload)
           VALUES (%s, 'demo:echo', %s, %s, %s, 'infinity', '-infinity', '-infinity', %s)""",
        (f"{BOLD}sched{ESCAPE}", f"{CLOSE} * * * *", f"{LINK}tz", [BOLD], json.dumps({"n": HOSTILE})))
    conn.execute(
        """INSERT INTO haosq.schedules (name, type, interval_seconds, next_due_at, last_due_at)
           VALUES ('forever', 'demo:echo', 'Infinity', 'infinity', NULL),
                  ('never', 'demo:echo', 'NaN', '10000-01-01', '0044-03-15 BC')""")
    return ids


def raw_escape_in(text: str) -> bool:
    """Whether an escape character reached the output as it is."""
    return "\x1b" in text or "\x9b" in text
