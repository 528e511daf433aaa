"""Poison jobs: a handler that raises, hangs, exits or blows up its memory ends its job
failed, and the worker that ran it carries on with the next job."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from haosq.queue import JobQueue
from tests.faults.chaos_handlers import RUNS_TABLE
from tests.faults.support import Worker, wait_until, worker_env

pytestmark = pytest.mark.faults

POISON = {
    "poison:raise": "poison: the handler raised",
    "poison:hang": "time limit",
    "poison:thread-hang": "time limit",
    "poison:exit": "",
    "poison:memory": "MemoryError",
    "poison:oom-kill": "",
}


def test_poison_jobs_fail_and_the_worker_survives(database_url: str, queue: JobQueue,
                                                   tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(RUNS_TABLE)
        worker = Worker(worker_env(database_url, tmp_path), tmp_path / "worker.log",
                        "--concurrency", "2", "--heartbeat-interval", "300",
                        "--poll-interval", "200", "--types", "poison,chaos")
        try:
            worker.wait_registered(database_url)
            poison = {queue.add(job_type, {}).id: job_type for job_type in POISON}

            def settled() -> list[dict]:
                rows = conn.execute(
                    "SELECT id, type, status, error, attempts FROM haosq.jobs WHERE id = ANY(%s)",
                    (list(poison),)).fetchall()
                return rows if all(r["status"] == "failed" for r in rows) else []

            rows = wait_until(settled, 60, "every poison job to end failed")
            for row in rows:
                assert row["attempts"] == 1, row
                assert POISON[row["type"]] in (row["error"] or ""), row
                assert row["error"], row
            # The same process, still running, takes the next job.
            canary = queue.add("chaos:work", {"n": 1})
            wait_until(lambda: conn.execute("SELECT status FROM haosq.jobs WHERE id = %s",
                                            (canary.id,)).fetchone()["status"] == "completed",
                       30, "the canary job to complete")
            ran = conn.execute("SELECT pid FROM public.fault_runs WHERE job_id = %s",
                               (canary.id,)).fetchone()
            assert ran is not None
            assert worker.alive()
            stuck = conn.execute(
                "SELECT count(*) AS n FROM haosq.jobs WHERE status IN ('pending', 'processing')"
            ).fetchone()["n"]
            assert stuck == 0
            assert worker.stop() == 0
        finally:
            worker.kill()
