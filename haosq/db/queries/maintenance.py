"""Maintenance queries: the per-period claim of a duty, and batched pruning.

Pruning deletes in small batches, each its own short transaction (the caller's connection
is in autocommit), so that no long transaction holds back vacuum or blocks the claim path;
rows are picked with SKIP LOCKED so that a job being touched elsewhere is left for later.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

# One daemon per period: the row's last start must be at least one period old. The first
# daemon to ask for a period wins it; the others get no row back.
CLAIM_TASK = """
INSERT INTO haosq.maintenance_runs AS m (task, last_started_at, run_by)
VALUES (%(task)s, %(now)s, %(run_by)s)
ON CONFLICT (task) DO UPDATE
   SET last_started_at = excluded.last_started_at, run_by = excluded.run_by
 WHERE m.last_started_at <= excluded.last_started_at - %(every)s
RETURNING task
"""


def claim_task(
    conn: psycopg.Connection[Any], task: str, now: datetime, every: timedelta, run_by: str
) -> bool:
    params = {"task": task, "now": now, "every": every, "run_by": run_by}
    return conn.execute(CLAIM_TASK, params).fetchone() is not None


def finish_task(
    conn: psycopg.Connection[Any], task: str, now: datetime, result: dict[str, Any] | None,
    error: str | None,
) -> None:
    conn.execute(
        """UPDATE haosq.maintenance_runs
              SET last_finished_at = %s, last_result = %s, last_error = %s
            WHERE task = %s""",
        (now, Jsonb(result) if result is not None else None, error, task),
    )


def task_runs(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT task, last_started_at, last_finished_at, last_result, last_error, run_by
             FROM haosq.maintenance_runs ORDER BY task"""
    ).fetchall()


DELETE_JOB_LOGS = """
DELETE FROM haosq.job_logs
 WHERE id IN (SELECT id FROM haosq.job_logs WHERE created_at < %(cutoff)s
              LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
"""

# Finished jobs by status and finish time (the jobs_completed_at index); their logs go
# with them (ON DELETE CASCADE).
DELETE_FINISHED_JOBS = """
DELETE FROM haosq.jobs
 WHERE id IN (SELECT id FROM haosq.jobs
               WHERE completed_at < %(cutoff)s AND status = %(status)s
               LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
   AND status = %(status)s
"""

# Run records only guard due times a schedule has passed already; keep the recent ones
# for `haosq schedules` history.
DELETE_SCHEDULE_RUNS = """
DELETE FROM haosq.schedule_runs r
 WHERE (r.schedule_id, r.due_at) IN (
       SELECT r2.schedule_id, r2.due_at
         FROM haosq.schedule_runs r2
         JOIN haosq.schedules s ON s.id = r2.schedule_id
        WHERE r2.enqueued_at < %(cutoff)s AND r2.due_at < s.next_due_at
        LIMIT %(batch)s FOR UPDATE OF r2 SKIP LOCKED)
"""


def delete_job_logs_batch(conn: psycopg.Connection[Any], cutoff: datetime, batch: int) -> int:
    return conn.execute(DELETE_JOB_LOGS, {"cutoff": cutoff, "batch": batch}).rowcount


def delete_finished_jobs_batch(
    conn: psycopg.Connection[Any], status: str, cutoff: datetime, batch: int
) -> int:
    if status not in ("completed", "failed", "cancelled"):
        raise ValueError(f"not a finished status: {status!r}")
    params = {"cutoff": cutoff, "status": status, "batch": batch}
    return conn.execute(DELETE_FINISHED_JOBS, params).rowcount


def delete_schedule_runs_batch(conn: psycopg.Connection[Any], cutoff: datetime, batch: int) -> int:
    return conn.execute(DELETE_SCHEDULE_RUNS, {"cutoff": cutoff, "batch": batch}).rowcount


# Vacuum: only needed where the server's autovacuum is off (some CI and appliance setups turn
# it off; a queue table that is never vacuumed grows by two dead row versions per job). The
# same rule as autovacuum with the settings haosq.jobs carries (migration 0001): a table is due
# when its dead rows exceed 1,000 plus 2% of its live rows.
AUTOVACUUM_ON = "SELECT current_setting('autovacuum')::boolean AS on"
TABLES_DUE_FOR_VACUUM = """
SELECT s.relname AS name, s.n_dead_tup AS dead,
       pg_has_role(c.relowner, 'USAGE') AS owned
  FROM pg_stat_user_tables s
  JOIN pg_class c ON c.oid = s.relid
 WHERE s.schemaname = 'haosq'
   AND s.n_dead_tup > %(threshold)s + %(scale)s * s.n_live_tup
 ORDER BY s.n_dead_tup DESC
"""
VACUUM_THRESHOLD = 1000
VACUUM_SCALE = 0.02


def autovacuum_on(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(AUTOVACUUM_ON).fetchone()
    return bool(row and (row["on"] if isinstance(row, dict) else row[0]))


def tables_due_for_vacuum(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    cursor = conn.cursor(row_factory=dict_row)
    return cursor.execute(TABLES_DUE_FOR_VACUUM, {"threshold": VACUUM_THRESHOLD,
                                                  "scale": VACUUM_SCALE}).fetchall()


def vacuum_table(conn: psycopg.Connection[Any], name: str) -> None:
    """VACUUM (ANALYZE) one haosq table; `conn` must be in autocommit (VACUUM cannot run in
    a transaction)."""
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier("haosq", name)))


# The transaction id that vacuum cannot remove row versions past: the oldest snapshot or
# write transaction of this database, of a standby's feedback or a replication slot, or a
# prepared transaction. While it stays the same, a second vacuum can remove nothing the
# first could not, and only reads the whole table and its indexes again.
VACUUM_HORIZON = """
SELECT held::text AS horizon FROM (
    SELECT backend_xmin AS held FROM pg_stat_activity
     WHERE pid <> pg_backend_pid() AND (datname = current_database() OR datname IS NULL)
    UNION ALL
    SELECT backend_xid FROM pg_stat_activity
     WHERE pid <> pg_backend_pid() AND (datname = current_database() OR datname IS NULL)
    UNION ALL
    SELECT xmin FROM pg_replication_slots
    UNION ALL
    SELECT catalog_xmin FROM pg_replication_slots
    UNION ALL
    SELECT transaction FROM pg_prepared_xacts
) AS holders
 WHERE held IS NOT NULL
 ORDER BY age(held) DESC
 LIMIT 1
"""


def vacuum_horizon(conn: psycopg.Connection[Any]) -> str | None:
    """The oldest transaction id another session holds (None: nothing holds one)."""
    row = conn.cursor(row_factory=dict_row).execute(VACUUM_HORIZON).fetchone()
    return None if row is None else str(row["horizon"])


# The oldest client transaction of this database that holds a snapshot, when older than the
# limit: while it stays open, vacuum can remove none of the row versions the queue leaves
# behind (two per job), and the tables and indexes grow by them until it ends.
OLDEST_SNAPSHOT = """
SELECT pid, usename AS role, application_name AS application, client_addr::text AS client,
       state, extract(epoch FROM now() - coalesce(xact_start, backend_start))::float8 AS seconds
  FROM pg_stat_activity
 WHERE backend_xmin IS NOT NULL
   AND backend_type = 'client backend'
   AND pid <> pg_backend_pid()
   AND datname = current_database()
   AND coalesce(xact_start, backend_start) < now() - %(older_than)s
 ORDER BY coalesce(xact_start, backend_start)
 LIMIT 1
"""


def oldest_snapshot(conn: psycopg.Connection[Any], older_than: timedelta) -> dict[str, Any] | None:
    cursor = conn.cursor(row_factory=dict_row)
    return cursor.execute(OLDEST_SNAPSHOT, {"older_than": older_than}).fetchone()
