"""Schedules with running daemons: the duty's own thread, real `haosq worker` processes
racing for the same runs (one of them killed), and one-off jobs scheduled for a time."""

from __future__ import annotations

import itertools
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from haosq.config import Settings
from haosq.daemon.scheduler import SchedulerDuty
from haosq.db.connection import Database
from haosq.queue import JobQueue
from tests.integration.worker_support import (
    WorkerProcess,
    create_executions,
    executions,
    wait_until,
)


def runs(conn: psycopg.Connection, name: str) -> list[dict]:
    return conn.execute(
        """SELECT r.due_at, r.enqueued_by, r.job_id FROM haosq.schedule_runs r
             JOIN haosq.schedules s ON s.id = r.schedule_id
            WHERE s.name = %s ORDER BY r.due_at""", (name,)).fetchall()


def test_duty_thread_enqueues_on_its_own_and_stops(settings: Settings, queue: JobQueue, conn) -> None:
    queue.schedule("soon", "reports:build", interval="1s")
    db = Database(settings)
    duty = SchedulerDuty(settings, db, tick_seconds=0.1, load_config=False)
    try:
        duty.start()
        wait_until(lambda: len(runs(conn, "soon")) >= 2, timeout=10, message="two runs")
    finally:
        duty.stop(5)
        duty.stop(5)  # safe twice
        db.close()
    settled = len(runs(conn, "soon"))
    time.sleep(1.5)  # proving that nothing happens needs a moment of nothing happening
    assert len(runs(conn, "soon")) == settled


@pytest.mark.slow
def test_three_worker_processes_enqueue_each_run_once_and_survive_a_kill(
        cli_env, queue: JobQueue, conn, tmp_path: Path) -> None:
    queue.schedule("tick", "sched:tick", interval="1s", catch_up="all", catch_up_limit=100)
    env = {**cli_env, "HAOSQ_HEARTBEAT_INTERVAL": "1000"}
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log",
                             "--worker-id", f"w{i}", "--types", "test", "--log-level", "info")
               for i in range(3)]
    try:
        for w in workers:
            w.wait_ready(conn)
        wait_until(lambda: len(runs(conn, "tick")) >= 4, timeout=20, message="four runs")
        last = runs(conn, "tick")[-1]["enqueued_by"]
        victim = workers[int(last[1:])]
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = datetime.now(UTC)
        wait_until(lambda: runs(conn, "tick")[-1]["due_at"] >= killed_at + timedelta(seconds=3),
                   timeout=20, message="runs after the kill")
        for w in workers:
            if w is not victim:
                w.signal(signal.SIGTERM)
                assert w.wait(20) == 0
    finally:
        for w in workers:
            w.close()
    done = runs(conn, "tick")
    due = [r["due_at"] for r in done]
    # Every due time from the first to the last, each enqueued once.
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(due))
    jobs = conn.execute(
        """SELECT scheduled_at, count(*) AS n FROM haosq.jobs WHERE type = 'sched:tick'
            GROUP BY scheduled_at""").fetchall()
    assert len(jobs) == len(done)
    assert {j["n"] for j in jobs} == {1}
    after_kill = {r["enqueued_by"] for r in done if r["due_at"] > killed_at}
    assert after_kill and last not in after_kill
    assert "duty scheduler started" in workers[0].output()


def test_a_job_scheduled_for_a_time_runs_within_one_poll_interval(
        cli_env, queue: JobQueue, conn, tmp_path: Path) -> None:
    create_executions(conn)
    worker = WorkerProcess({**cli_env, "HAOSQ_POLL_INTERVAL": "250"}, tmp_path / "w.log",
                           "--no-listen", "--types", "test")
    try:
        worker.wait_ready(conn)
        when = datetime.now(UTC) + timedelta(seconds=1.5)
        job = queue.add("test:record", {"n": 1}, scheduled_at=when)
        assert queue.get(job.id).is_scheduled(datetime.now(UTC))
        listed = queue.list(status="scheduled")
        assert [j.id for j in listed] == [job.id]
        wait_until(lambda: executions(conn, job.id), timeout=10, message="the scheduled job")
    finally:
        worker.signal(signal.SIGTERM)
        worker.wait(20)
        worker.close()
    [run] = executions(conn, job.id)
    claimed = conn.execute("SELECT started_at FROM haosq.jobs WHERE id = %s", (job.id,)).fetchone()
    late = (claimed["started_at"] - when).total_seconds()
    # Claimed within one poll interval of its time (plus scheduling slack on a busy machine).
    assert 0 <= late < 0.25 + 0.5, late
    assert run["at"] >= when
