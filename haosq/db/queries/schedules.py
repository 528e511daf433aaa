"""Schedule queries: definitions, the due-schedule scan and the exactly-once enqueue of a run.

Exactly once, by construction: every run a schedule enqueues is first recorded in
`haosq.schedule_runs` under the primary key (schedule_id, due_at), with
`INSERT ... ON CONFLICT DO NOTHING`, and the job is inserted only when that row was new, in
the same transaction. Whatever the daemons do (race, stall past a lock, run a stale plan,
die between statements), a second insert for the same due time finds the row and enqueues
nothing, and a rolled-back transaction leaves neither the row nor the job.

Every live daemon scans for due schedules (`FOR UPDATE SKIP LOCKED`, so that they share
the work instead of queueing on each other) rather than electing a leader: there is no
leader to lose, so a killed daemon cannot delay the next run beyond one tick of another.
`next_due_at` advances with a guarded UPDATE (it must still hold the value the plan was
made from), so that a slow daemon never moves a schedule backwards.

Times come from the caller's clock (bound parameters), not `now()`, so that tests can
drive schedules with a frozen clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

SCHEDULE_COLUMNS = """
    s.id, s.name, s.type, s.payload, s.cron, s.interval_seconds, s.timezone, s.priority,
    s.max_attempts, s.tags, s.timeout_seconds, s.catch_up, s.catch_up_limit, s.enabled,
    s.source, s.anchor_at, s.next_due_at, s.last_due_at, s.last_job_id, s.last_enqueued_at,
    s.created_at, s.updated_at
"""

# last_outcome: the status of the job the latest run enqueued; 'pruned' once retention
# deleted it.
SELECT_SCHEDULES = f"""
SELECT {SCHEDULE_COLUMNS},
       CASE WHEN s.last_job_id IS NULL THEN NULL ELSE coalesce(j.status, 'pruned') END
           AS last_outcome
  FROM haosq.schedules s
  LEFT JOIN haosq.jobs j ON j.id = s.last_job_id
"""


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A validated definition, ready to store (`payload_json` already serialised)."""

    name: str
    type: str
    payload_json: str
    cron: str | None
    interval_seconds: float | None
    timezone: str
    priority: int
    max_attempts: int | None
    tags: tuple[str, ...]
    timeout_seconds: float | None
    catch_up: str
    catch_up_limit: int
    enabled: bool
    source: str
    anchor_at: datetime
    next_due_at: datetime

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type,
            "payload": Jsonb(self.payload_json, dumps=_already_json), "cron": self.cron,
            "interval_seconds": self.interval_seconds, "timezone": self.timezone,
            "priority": self.priority, "max_attempts": self.max_attempts,
            "tags": list(self.tags), "timeout_seconds": self.timeout_seconds,
            "catch_up": self.catch_up, "catch_up_limit": self.catch_up_limit,
            "enabled": self.enabled, "source": self.source, "anchor_at": self.anchor_at,
            "next_due_at": self.next_due_at,
        }


def _already_json(text: str) -> str:
    """The payload was serialised (and size-checked) by validation: send it as it is."""
    return text


_INSERT_VALUES = """
    (name, type, payload, cron, interval_seconds, timezone, priority, max_attempts, tags,
     timeout_seconds, catch_up, catch_up_limit, enabled, source, anchor_at, next_due_at,
     created_at, updated_at)
VALUES (%(name)s, %(type)s, %(payload)s, %(cron)s, %(interval_seconds)s, %(timezone)s,
        %(priority)s, %(max_attempts)s, %(tags)s, %(timeout_seconds)s, %(catch_up)s,
        %(catch_up_limit)s, %(enabled)s, %(source)s, %(anchor_at)s, %(next_due_at)s,
        %(anchor_at)s, %(anchor_at)s)
"""

INSERT_SCHEDULE = f"INSERT INTO haosq.schedules {_INSERT_VALUES} RETURNING id"

# Config schedules are rewritten at every daemon start. The due time is kept unless the
# trigger itself changed (a new cron, interval or timezone starts afresh), so that many
# daemons starting at once neither skip nor repeat a run.
UPSERT_CONFIG_SCHEDULE = f"""
INSERT INTO haosq.schedules {_INSERT_VALUES}
ON CONFLICT (name) DO UPDATE SET
    type = excluded.type, payload = excluded.payload, priority = excluded.priority,
    max_attempts = excluded.max_attempts, tags = excluded.tags,
    timeout_seconds = excluded.timeout_seconds, catch_up = excluded.catch_up,
    catch_up_limit = excluded.catch_up_limit, enabled = excluded.enabled, source = 'config',
    cron = excluded.cron, interval_seconds = excluded.interval_seconds,
    timezone = excluded.timezone,
    anchor_at = CASE WHEN {{changed}} THEN excluded.anchor_at ELSE schedules.anchor_at END,
    next_due_at = CASE WHEN {{changed}} OR (excluded.enabled AND NOT schedules.enabled)
                       THEN excluded.next_due_at ELSE schedules.next_due_at END,
    updated_at = excluded.updated_at
WHERE (schedules.type, schedules.payload, schedules.priority, schedules.max_attempts,
       schedules.tags, schedules.timeout_seconds, schedules.catch_up, schedules.catch_up_limit,
       schedules.enabled, schedules.source, schedules.cron, schedules.interval_seconds,
       schedules.timezone)
      IS DISTINCT FROM
      (excluded.type, excluded.payload, excluded.priority, excluded.max_attempts,
       excluded.tags, excluded.timeout_seconds, excluded.catch_up, excluded.catch_up_limit,
       excluded.enabled, 'config', excluded.cron, excluded.interval_seconds,
       excluded.timezone)
RETURNING id
""".replace(
    "{changed}",
    "((schedules.cron, schedules.interval_seconds, schedules.timezone) IS DISTINCT FROM "
    "(excluded.cron, excluded.interval_seconds, excluded.timezone))",
)


def insert_schedule(conn: psycopg.Connection[Any], row: ScheduleRow) -> int:
    """Raises psycopg.errors.UniqueViolation when the name is taken."""
    found = conn.cursor(row_factory=dict_row).execute(INSERT_SCHEDULE, row.params()).fetchone()
    assert found is not None
    return int(found["id"])


def upsert_config_schedule(conn: psycopg.Connection[Any], row: ScheduleRow) -> bool:
    """Insert or rewrite a config-defined schedule; True when something changed."""
    return conn.execute(UPSERT_CONFIG_SCHEDULE, row.params()).fetchone() is not None


def list_schedules(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every schedule by name, with its last outcome (see SELECT_SCHEDULES)."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(SELECT_SCHEDULES + " ORDER BY s.name").fetchall()


def get_schedule(conn: psycopg.Connection[Any], name: str) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(SELECT_SCHEDULES + " WHERE s.name = %s", (name,)).fetchone()


def lock_schedule(conn: psycopg.Connection[Any], name: str) -> dict[str, Any] | None:
    """The schedule row, locked for the rest of the caller's transaction."""
    cur = conn.cursor(row_factory=dict_row)
    query = f"SELECT {SCHEDULE_COLUMNS} FROM haosq.schedules s WHERE s.name = %s FOR UPDATE"
    return cur.execute(query, (name,)).fetchone()


def delete_schedule(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("DELETE FROM haosq.schedules WHERE name = %s", (name,)).rowcount > 0


def set_enabled(
    conn: psycopg.Connection[Any], name: str, enabled: bool, next_due_at: datetime | None,
    now: datetime,
) -> bool:
    """Enable or disable; `next_due_at` (when given) restarts the schedule from now, so that
    re-enabling does not replay what fell due while it was disabled."""
    return conn.execute(
        """UPDATE haosq.schedules
              SET enabled = %(enabled)s, next_due_at = coalesce(%(next)s, next_due_at),
                  updated_at = %(now)s
            WHERE name = %(name)s""",
        {"enabled": enabled, "next": next_due_at, "now": now, "name": name},
    ).rowcount > 0


def lock_due_schedules(
    conn: psycopg.Connection[Any], now: datetime, limit: int
) -> list[dict[str, Any]]:
    """Enabled schedules due at `now`, locked; rows another daemon holds are skipped."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        f"""SELECT {SCHEDULE_COLUMNS}
              FROM haosq.schedules s
             WHERE s.enabled AND s.next_due_at <= %s
          ORDER BY s.next_due_at
             LIMIT %s
               FOR UPDATE SKIP LOCKED""",
        (now, limit),
    ).fetchall()


# The run row, then the job only when the run row was new (the job CTE reads from it), and
# the schedule's pointer to its latest run: one statement, one round trip.
ENQUEUE_RUN = """
WITH run AS (
    INSERT INTO haosq.schedule_runs (schedule_id, due_at, manual, enqueued_by, enqueued_at)
    VALUES (%(schedule_id)s, %(due_at)s, %(manual)s, %(enqueued_by)s, %(now)s)
    ON CONFLICT (schedule_id, due_at) DO NOTHING
    RETURNING schedule_id, due_at
), job AS (
    -- A run is due at its due time: runnable at once, in due order.
    INSERT INTO haosq.jobs (type, payload, priority, max_attempts, scheduled_at, due_at, tags,
                            created_by, timeout_seconds)
    SELECT s.type, s.payload, s.priority, s.max_attempts, run.due_at, run.due_at, s.tags,
           'schedule:' || s.name, s.timeout_seconds
      FROM run JOIN haosq.schedules s ON s.id = run.schedule_id
    RETURNING id, due_at
), latest AS (
    UPDATE haosq.schedules s
       SET last_due_at = CASE WHEN s.last_due_at IS NULL OR s.last_due_at <= job.due_at
                              THEN job.due_at ELSE s.last_due_at END,
           last_job_id = CASE WHEN s.last_due_at IS NULL OR s.last_due_at <= job.due_at
                              THEN job.id ELSE s.last_job_id END,
           last_enqueued_at = %(now)s
      FROM job
     WHERE s.id = %(schedule_id)s
)
SELECT id FROM job
"""


def enqueue_run(
    conn: psycopg.Connection[Any],
    schedule: dict[str, Any],
    due_at: datetime,
    now: datetime,
    *,
    enqueued_by: str,
    manual: bool = False,
) -> int | None:
    """Record the run (schedule, due_at) and enqueue its job; None when it was recorded
    already. Call inside a transaction: the run row and the job commit together."""
    params = {"schedule_id": schedule["id"], "due_at": due_at, "manual": manual,
              "enqueued_by": enqueued_by, "now": now}
    job = conn.cursor(row_factory=dict_row).execute(ENQUEUE_RUN, params).fetchone()
    if job is None:
        return None
    conn.execute(
        "UPDATE haosq.schedule_runs SET job_id = %s WHERE schedule_id = %s AND due_at = %s",
        (job["id"], schedule["id"], due_at),
    )
    return int(job["id"])


def advance_schedule(
    conn: psycopg.Connection[Any],
    schedule_id: int,
    expected_next: datetime,
    new_next: datetime | None,
    now: datetime,
) -> bool:
    """Move next_due_at on, only from the value the caller planned from. A schedule that
    never fires again is disabled."""
    return conn.execute(
        """UPDATE haosq.schedules
              SET next_due_at = coalesce(%(new)s, next_due_at),
                  enabled = enabled AND %(new)s::timestamptz IS NOT NULL,
                  updated_at = %(now)s
            WHERE id = %(id)s AND next_due_at = %(expected)s""",
        {"new": new_next, "now": now, "id": schedule_id, "expected": expected_next},
    ).rowcount > 0


def schedule_runs(
    conn: psycopg.Connection[Any], name: str, limit: int = 100
) -> list[dict[str, Any]]:
    """The latest runs of a schedule, newest first."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        """SELECT r.due_at, r.job_id, r.manual, r.enqueued_by, r.enqueued_at, j.status
             FROM haosq.schedule_runs r
             JOIN haosq.schedules s ON s.id = r.schedule_id
             LEFT JOIN haosq.jobs j ON j.id = r.job_id
            WHERE s.name = %s
         ORDER BY r.due_at DESC
            LIMIT %s""",
        (name, limit),
    ).fetchall()
