"""Chaos: jobs drained by three worker processes while a seeded loop kills, freezes, cuts
off and restarts them, and restarts PostgreSQL itself.

The server is a throwaway embedded PostgreSQL in a temporary directory (never the shared
server the other tests use), restarted in place (same data directory, same socket).

At the end every job is completed, once per successful run: none lost, none stuck, no
attempt run twice. Runs repeated after a kill are allowed and counted. The figures
(duplicates, refused late completions, maximum attempt, redelivery delay, time to recover)
are printed and written to bench/results/faults-*.json.

    HAOSQ_FAULT_JOBS=10000 HAOSQ_FAULT_SEED=7 pytest -m faults tests/faults/test_chaos.py -s
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from haosq.config import Settings, load_settings
from haosq.db.connection import start_embedded, stop_embedded
from haosq.db.migrate import migrate
from haosq.queue import JobQueue
from tests.conftest import ThrowawayServer
from tests.faults.chaos_handlers import RUNS_TABLE
from tests.faults.support import RESULTS_DIR, Worker, wait_until, worker_env

pytestmark = pytest.mark.faults

JOBS = int(os.environ.get("HAOSQ_FAULT_JOBS", "10000"))
SEED = int(os.environ.get("HAOSQ_FAULT_SEED", "7"))
WORKERS = 3
HEARTBEAT_MS = 300
WORKER_ARGS = ("--concurrency", "4", "--heartbeat-interval", str(HEARTBEAT_MS),
               "--poll-interval", "200", "--shutdown-timeout", "5", "--types", "chaos",
               "--log-level", "warning")
LATE_REFUSED = re.compile(r"job (\d+) \([^)]*\): late \w+ refused")
# The scripted faults, in order; victims and pauses come from the seeded generator.
EVENTS = ("kill", "kill", "freeze", "terminate", "kill", "sigterm", "kill", "restart_postgres",
          "kill", "terminate", "kill", "freeze", "kill")


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=5)


def query(url: str, text: str, params: Any = None) -> list[dict[str, Any]]:
    """One statement on a fresh connection, retried while the server restarts."""
    for _ in range(100):
        try:
            with connect(url) as conn:
                return conn.execute(text, params).fetchall()
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise AssertionError("the server did not come back")


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Chaos:
    def __init__(self, url: str, settings: Settings, tmp: Path) -> None:
        self.url = url
        self.settings = settings
        self.tmp = tmp
        self.env = worker_env(url, tmp)
        self.rng = random.Random(SEED)
        self.slots: list[Worker] = []
        self.retired: list[Worker] = []
        self.events: list[dict[str, Any]] = []
        self.started = 0

    def spawn(self, slot: int) -> Worker:
        self.started += 1
        worker = Worker(self.env, self.tmp / f"worker-{slot}.log", *WORKER_ARGS,
                        "--worker-id", f"chaos-{slot}-{self.started}")
        if slot < len(self.slots):
            self.retired.append(self.slots[slot])
            self.slots[slot] = worker
        else:
            self.slots.append(worker)
        return worker

    def record(self, kind: str, **fields: Any) -> None:
        self.events.append({"event": kind, "at": time.time(), **fields,
                            "unfinished_jobs": self.remaining()})

    def run(self, event: str) -> None:
        slot = self.rng.randrange(len(self.slots))
        victim = self.slots[slot]
        if event == "kill":
            victim.kill()
            self.record("kill", pid=victim.pid)
            self.spawn(slot).wait_registered(self.url)
        elif event == "freeze":
            # Frozen past its lease (2 heartbeats): its jobs are rescued and finished
            # elsewhere; once resumed, its late completions must be refused.
            victim.signal(signal.SIGSTOP)
            self.record("freeze", pid=victim.pid)
            time.sleep(HEARTBEAT_MS / 1000 * 2 + 1.5)
            victim.signal(signal.SIGCONT)
            self.record("resume", pid=victim.pid)
        elif event == "terminate":
            rows = query(self.url, """
                SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND backend_type = 'client backend'""")
            self.record("terminate_backends", count=len(rows))
        elif event == "sigterm":
            victim.signal(signal.SIGTERM)
            code = victim.proc.wait(30)
            self.record("sigterm", pid=victim.pid, exit_code=code)
            assert code == 0, victim.output()[-3000:]
            self.spawn(slot).wait_registered(self.url)
        elif event == "restart_postgres":
            began = time.time()
            stop_embedded(self.settings)
            time.sleep(0.5)
            start_embedded(self.settings)
            self.record("restart_postgres", seconds=round(time.time() - began, 2))

    def remaining(self) -> int:
        return int(query(self.url, "SELECT count(*) AS n FROM haosq.jobs "
                                   "WHERE status IN ('pending', 'processing')")[0]["n"])


def test_jobs_survive_kills_freezes_disconnects_and_a_server_restart(
        throwaway_server: ThrowawayServer, tmp_path: Path) -> None:
    url, settings = throwaway_server.url, throwaway_server.settings
    with connect(url) as conn:
        migrate(conn)
        conn.execute(RUNS_TABLE)
    env_settings = load_settings(env={"HAOSQ_CONFIG": "/dev/null",
                                      "HAOSQ_DATABASE_URL": url})
    with JobQueue(settings=env_settings) as queue:
        queue.add_many([{"type": "chaos:work", "payload": {"n": i}, "max_attempts": 50}
                        for i in range(JOBS)])

    chaos = Chaos(url, settings, tmp_path)
    began = time.time()
    try:
        for slot in range(WORKERS):
            chaos.spawn(slot)
        for worker in chaos.slots:
            worker.wait_registered(url)
        for event in EVENTS:
            time.sleep(chaos.rng.uniform(0.5, 1.5))
            chaos.run(event)
        wait_until(lambda: chaos.remaining() == 0, 240, "every job to finish", interval=0.2)
        drained = time.time() - began
        for worker in chaos.slots:
            assert worker.stop() == 0, worker.output()[-3000:]
    finally:
        for worker in chaos.slots + chaos.retired:
            if worker.alive():
                worker.signal(signal.SIGCONT)
                worker.kill()

    report = measure(url, chaos, drained)
    print(json.dumps(report, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"faults-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")

    assert report["lost"] == 0
    assert report["stuck"] == 0
    assert report["failed"] == 0
    assert report["same_attempt_repeats"] == 0
    assert report["completed_without_a_recorded_run"] == 0
    assert report["completed"] == JOBS
    # Runs repeat only after a fault: never more repeats than jobs in flight at the faults.
    kills = sum(1 for e in chaos.events if e["event"] in ("kill", "freeze", "restart_postgres"))
    assert report["duplicates"] <= kills * 4 * WORKERS + 50


def measure(url: str, chaos: Chaos, drained: float) -> dict[str, Any]:
    statuses = {r["status"]: int(r["n"]) for r in query(
        url, "SELECT status, count(*) AS n FROM haosq.jobs GROUP BY status")}
    runs = query(url, "SELECT job_id, attempt, pid, extract(epoch FROM started_at) AS at, repeats "
                      "FROM public.fault_runs ORDER BY job_id, attempt")
    unmatched = query(url, """
        SELECT count(*) AS n FROM haosq.jobs j
         WHERE j.status = 'completed'
           AND NOT EXISTS (SELECT 1 FROM public.fault_runs r
                            WHERE r.job_id = j.id AND r.attempt = j.attempts)""")[0]["n"]
    max_attempt = query(url, "SELECT max(attempts) AS m FROM haosq.jobs")[0]["m"]

    by_job: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_job.setdefault(run["job_id"], []).append(run)
    delays: list[float] = []
    next_start: dict[tuple[int, int], float] = {}
    for job_runs in by_job.values():
        for earlier, later in itertools.pairwise(job_runs):
            delays.append(float(later["at"]) - float(earlier["at"]))
            next_start[(earlier["job_id"], earlier["pid"])] = float(later["at"])
    # Time to recover from a kill or a freeze: until the last job the victim held started
    # again elsewhere.
    recoveries = []
    for event in chaos.events:
        if event["event"] not in ("kill", "freeze"):
            continue
        held = [next_start[(r["job_id"], r["pid"])] for r in runs
                if r["pid"] == event["pid"] and float(r["at"]) <= event["at"]
                and next_start.get((r["job_id"], r["pid"]), 0.0) > event["at"]]
        if held:
            recoveries.append(max(held) - event["at"])
    # Worker slots share a log file across restarts: read each file once.
    logs = {w.log_path: w.output() for w in chaos.slots + chaos.retired}
    refused = [int(job_id) for text in logs.values() for job_id in LATE_REFUSED.findall(text)]
    # A refusal is expected when the job was rescued and run again elsewhere. A refused job
    # that ran only once had its acknowledgement commit while the connection died: the
    # worker retried it and was refused by its own earlier commit.
    refused_run_once = sum(1 for job_id in refused if len(by_job.get(job_id, [])) == 1)
    return {
        "benchmark": "faults.chaos",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "jobs": JOBS, "seed": SEED, "workers": WORKERS, "heartbeat_ms": HEARTBEAT_MS,
        "completed": statuses.get("completed", 0),
        "failed": statuses.get("failed", 0),
        "lost": JOBS - statuses.get("completed", 0) - statuses.get("failed", 0),
        "stuck": statuses.get("processing", 0) + statuses.get("pending", 0),
        "runs": len(runs),
        "duplicates": len(runs) - len(by_job),
        "jobs_run_more_than_once": sum(1 for r in by_job.values() if len(r) > 1),
        "same_attempt_repeats": sum(int(r["repeats"]) for r in runs),
        "completed_without_a_recorded_run": int(unmatched),
        "late_completions_refused": len(refused),
        "refused_for_jobs_that_ran_once": refused_run_once,
        "max_attempt": max_attempt,
        "redelivery_delay_s": {"p50": percentile(delays, 0.5), "p95": percentile(delays, 0.95),
                               "max": max(delays) if delays else None, "n": len(delays)},
        "time_to_recover_s": {"max": max(recoveries) if recoveries else None,
                              "each": [round(r, 3) for r in recoveries]},
        "drain_seconds": round(drained, 1),
        "worker_processes_started": chaos.started,
        "events": [{k: v for k, v in e.items() if k != "at"} for e in chaos.events],
    }
