"""The worker registry: listing, dead-worker detection and the rescue of their jobs.

Rescue lives here rather than in the daemon because operators run it too
(`haosq workers cleanup`), and every live daemon runs it: it must be idempotent and safe
when many run it at once (each statement only touches rows still in the state it expects).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

LIST_WORKERS = """
SELECT w.worker_id, w.token::text AS token, w.pid, w.hostname, w.status, w.concurrency,
       w.job_types, w.jobs_processed, w.jobs_succeeded, w.jobs_failed, w.started_at,
       w.last_heartbeat, w.stopped_at,
       (SELECT count(*) FROM haosq.jobs j
         WHERE j.status = 'processing' AND j.owner_token = w.token) AS busy
  FROM haosq.workers w
 WHERE %(all)s OR w.status IN ('active', 'stopping')
 ORDER BY w.status, w.worker_id
"""

MARK_DEAD = """
UPDATE haosq.workers
   SET status = 'dead', stopped_at = now()
 WHERE status IN ('active', 'stopping')
   AND last_heartbeat < now() - %(timeout)s
RETURNING worker_id
"""

# Jobs held by a worker that is not alive (dead, stopped, unknown, or silent past the
# timeout) go back to pending, keeping their due time, or to failed when out of attempts;
# a job an operator asked to cancel ends cancelled instead of running again.
# The attempt was counted when the job was claimed.
RESCUE_JOBS = """
WITH orphaned AS (
    SELECT j.id
      FROM haosq.jobs j
     WHERE j.status = 'processing'
       AND NOT EXISTS (
           SELECT 1 FROM haosq.workers w
            WHERE w.token = j.owner_token
              AND w.status IN ('active', 'stopping')
              AND w.last_heartbeat >= now() - %(timeout)s)
     FOR UPDATE OF j SKIP LOCKED
)
UPDATE haosq.jobs j
   SET status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                     WHEN j.attempts >= coalesce(j.max_attempts, %(default_max_attempts)s)
                     THEN 'failed' ELSE 'pending' END,
       completed_at = CASE WHEN j.cancel_requested_at IS NOT NULL
                             OR j.attempts >= coalesce(j.max_attempts, %(default_max_attempts)s)
                           THEN now() END,
       error = format('worker %%s stopped responding during attempt %%s', j.worker_id, j.attempts),
       owner_token = NULL, worker_id = NULL, worker_pid = NULL, updated_at = now()
  FROM orphaned
 WHERE j.id = orphaned.id AND j.status = 'processing'
RETURNING j.id, j.status, j.attempts
"""

DELETE_OLD_WORKERS = """
DELETE FROM haosq.workers
 WHERE status IN ('dead', 'stopped') AND coalesce(stopped_at, last_heartbeat) < now() - %(keep)s
"""


def list_workers(conn: psycopg.Connection[Any], *, include_gone: bool = False) -> list[dict[str, Any]]:
    return conn.execute(LIST_WORKERS, {"all": include_gone}).fetchall()


def mark_dead_workers(conn: psycopg.Connection[Any], timeout: timedelta) -> list[str]:
    return [r["worker_id"] for r in conn.execute(MARK_DEAD, {"timeout": timeout}).fetchall()]


def rescue_orphaned_jobs(
    conn: psycopg.Connection[Any], timeout: timedelta, default_max_attempts: int
) -> list[dict[str, Any]]:
    rows = conn.execute(
        RESCUE_JOBS, {"timeout": timeout, "default_max_attempts": default_max_attempts}
    ).fetchall()
    if any(r["status"] == "pending" for r in rows):
        conn.execute("SELECT pg_notify('haosq_jobs', '*')")
    return rows


def delete_old_workers(conn: psycopg.Connection[Any], keep: timedelta) -> int:
    return conn.execute(DELETE_OLD_WORKERS, {"keep": keep}).rowcount
