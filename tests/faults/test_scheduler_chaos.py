"""Three daemons run the schedule loop while a seeded loop kills them (SIGKILL) and starts
them again: every due time of every schedule is enqueued exactly once (no duplicate, no
gap), whichever daemon got there first."""

from __future__ import annotations

import itertools
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.faults.chaos_handlers import RUNS_TABLE
from tests.faults.support import RESULTS_DIR, Worker, wait_until, worker_env

pytestmark = pytest.mark.faults

SEED = 11
DAEMONS = 3
KILLS = 8
CONFIG = """
[[schedules]]
name = "every-second-a"
type = "chaos:work"
interval = "1s"
catch_up = "all"
catch_up_limit = 100
payload = { seconds = 0 }

[[schedules]]
name = "every-second-b"
type = "chaos:work"
interval = "1s"
catch_up = "all"
catch_up_limit = 100
payload = { seconds = 0 }

[[schedules]]
name = "every-minute-cron"
type = "chaos:work"
cron = "* * * * *"
catch_up = "all"
payload = { seconds = 0 }
"""


def test_killed_schedulers_never_enqueue_a_run_twice(database_url: str, tmp_path: Path) -> None:
    env = worker_env(database_url, tmp_path)
    config = tmp_path / "haosq.toml"
    config.write_text(CONFIG)
    env["HAOSQ_CONFIG"] = str(config)
    args = ("--concurrency", "2", "--heartbeat-interval", "300", "--poll-interval", "200",
            "--types", "chaos", "--log-level", "warning")
    rng = random.Random(SEED)
    started = 0

    def spawn(slot: int) -> Worker:
        nonlocal started
        started += 1
        worker = Worker(env, tmp_path / f"daemon-{slot}.log", *args,
                        "--worker-id", f"sched-{slot}-{started}")
        worker.wait_registered(database_url)
        return worker

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(RUNS_TABLE)
        daemons = [spawn(slot) for slot in range(DAEMONS)]
        try:
            for _ in range(KILLS):
                time.sleep(rng.uniform(0.8, 1.6))
                slot = rng.randrange(DAEMONS)
                daemons[slot].kill()
                daemons[slot] = spawn(slot)
            time.sleep(2.0)
            # Stop the schedules, then let the live daemons finish every enqueued run (the
            # killed daemons' jobs are rescued by the others).
            conn.execute("UPDATE haosq.schedules SET enabled = false")
            wait_until(lambda: conn.execute(
                "SELECT count(*) AS n FROM haosq.jobs WHERE status IN ('pending', 'processing')"
            ).fetchone()["n"] == 0, 60, "the scheduled jobs to finish")
            for daemon in daemons:
                assert daemon.stop() == 0, daemon.output()[-3000:]
        finally:
            for daemon in daemons:
                daemon.kill()

        runs = conn.execute("""
            SELECT s.name, r.due_at, r.job_id FROM haosq.schedule_runs r
              JOIN haosq.schedules s ON s.id = r.schedule_id ORDER BY s.name, r.due_at""").fetchall()
        jobs = conn.execute("SELECT id, status FROM haosq.jobs WHERE type = 'chaos:work'").fetchall()

    by_schedule: dict[str, list[datetime]] = {}
    for run in runs:
        by_schedule.setdefault(run["name"], []).append(run["due_at"])
    job_ids = [r["job_id"] for r in runs]
    gaps = {
        name: [(b - a).total_seconds() for a, b in itertools.pairwise(dues)
               if (b - a).total_seconds() != 1.0]
        for name, dues in by_schedule.items() if not name.endswith("cron")
    }
    report = {
        "benchmark": "faults.scheduler",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "daemons": DAEMONS, "kills": KILLS, "seed": SEED, "daemon_processes_started": started,
        "runs_per_schedule": {name: len(dues) for name, dues in by_schedule.items()},
        "jobs": len(jobs),
        "duplicate_enqueues": len(jobs) - len(set(job_ids)),
        "runs_without_job": sum(1 for j in job_ids if j is None),
        "gaps": gaps,
    }
    print(json.dumps(report, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"faults-scheduler-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")

    assert report["duplicate_enqueues"] == 0
    assert report["runs_without_job"] == 0
    assert sorted(job_ids) == sorted(j["id"] for j in jobs)  # every job belongs to one run
    assert all(j["status"] == "completed" for j in jobs)
    assert by_schedule["every-second-a"] and by_schedule["every-second-b"]
    # At least one daemon was always alive, and catch_up = "all": no due time was skipped.
    assert gaps == {"every-second-a": [], "every-second-b": []}
    assert len(by_schedule["every-second-a"]) >= KILLS
