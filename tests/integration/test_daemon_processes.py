"""Real `haosq worker` processes: draining exactly once, crashes, freezes, signals, lost
connections."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from haosq.queue import JobQueue
from tests.integration.worker_support import (
    WorkerProcess,
    create_executions,
    executions,
    job_row,
    wait_status,
    wait_until,
)


@pytest.fixture
def spawn(cli_env: dict[str, str], tmp_path: Path, conn: psycopg.Connection) -> Iterator[
        Callable[..., WorkerProcess]]:
    create_executions(conn)
    workers: list[WorkerProcess] = []

    def start(*args: str, name: str | None = None) -> WorkerProcess:
        label = name or f"w{len(workers)}"
        worker = WorkerProcess(cli_env, tmp_path / f"{label}.log", "--worker-id", label,
                               "--types", "test", "--poll-interval", "100", *args)
        workers.append(worker)
        worker.wait_ready(conn)
        return worker

    yield start
    for worker in workers:
        worker.close()


@pytest.mark.parametrize("processes", [2, 4])
def test_workers_drain_5000_jobs_each_exactly_once(
    processes: int, queue: JobQueue, conn: psycopg.Connection, spawn: Callable[..., WorkerProcess]
) -> None:
    workers = [spawn("--concurrency", "8", "--heartbeat-interval", "1000", "--log-level", "warning")
               for _ in range(processes)]
    queue.add_many([{"type": "test:record", "payload": {"n": i}} for i in range(5000)])
    wait_until(lambda: conn.execute("SELECT count(*) AS n FROM haosq.jobs WHERE status = 'completed'"
                                    ).fetchone()["n"] == 5000, timeout=90, interval=0.2,
               message="5000 completed jobs")
    counts = conn.execute("SELECT count(*) AS runs, count(DISTINCT job_id) AS jobs, max(attempt) AS top,"
                          " count(DISTINCT pid) AS pids FROM public.executions").fetchone()
    assert counts["runs"] == 5000 and counts["jobs"] == 5000 and counts["top"] == 1
    assert counts["pids"] == processes  # every worker took a share
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [w.wait() for w in workers] == [0] * processes
    assert "refused" not in "".join(w.output() for w in workers)


def test_kill_9_mid_job_is_rescued_by_another_worker(
    queue: JobQueue, conn: psycopg.Connection, spawn: Callable[..., WorkerProcess]
) -> None:
    victim = spawn("--heartbeat-interval", "200")
    job = queue.add("test:slow", {"seconds": 60, "retry_seconds": 0})
    wait_until(lambda: executions(conn, job.id), message="the job to start")
    due_before = job_row(conn, job.id)["due_at"]
    victim.proc.kill()
    victim.wait()
    rescuer = spawn("--heartbeat-interval", "200")
    row = wait_status(conn, job.id, "completed", timeout=15)
    assert row["attempts"] == 2 and row["due_at"] == due_before
    runs = executions(conn, job.id)
    assert [r["attempt"] for r in runs] == [1, 2]
    assert runs[0]["pid"] != runs[1]["pid"]
    assert "rescued 1 job(s)" in rescuer.output()
    # The daemon process tunes its garbage collector once started (the library never does).
    assert "start-up objects frozen, young generation collected every 10000" in rescuer.output()
    dead = conn.execute("SELECT status FROM haosq.workers WHERE worker_id = 'w0'").fetchone()
    assert dead["status"] == "dead"


def test_frozen_worker_cannot_overwrite_a_rescued_job(
    queue: JobQueue, conn: psycopg.Connection, spawn: Callable[..., WorkerProcess]
) -> None:
    frozen = spawn("--heartbeat-interval", "200")
    job = queue.add("test:slow", {"seconds": 1.0, "retry_seconds": 0})
    wait_until(lambda: executions(conn, job.id), message="the job to start")
    frozen.signal(signal.SIGSTOP)
    try:
        spawn("--heartbeat-interval", "200")
        row = wait_status(conn, job.id, "completed", timeout=15)
        assert row["attempts"] == 2
        time.sleep(1.0)  # past the frozen handler's wait: it has a result to report
    finally:
        frozen.signal(signal.SIGCONT)
    wait_until(lambda: "late completed refused" in frozen.output(), timeout=10,
               message="the late acknowledgement to be refused")
    after = job_row(conn, job.id)
    assert after["status"] == "completed" and after["attempts"] == 2
    assert after["result"] == {"interrupted": False}
    frozen.signal(signal.SIGTERM)
    assert frozen.wait() == 0


@pytest.mark.embedded
def test_sigterm_finishes_short_jobs_and_releases_long_ones_uncounted(
    queue: JobQueue, conn: psycopg.Connection, spawn: Callable[..., WorkerProcess]
) -> None:
    worker = spawn("--concurrency", "3", "--shutdown-timeout", "1")
    short = queue.add("test:slow", {"seconds": 0.4})
    long = [queue.add("test:hang", {"seconds": 30}) for _ in range(2)]
    wait_until(lambda: all(job_row(conn, j.id)["status"] == "processing" for j in [short, *long]),
               message="three running jobs")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert job_row(conn, short.id)["status"] == "completed"
    for job in long:
        row = job_row(conn, job.id)
        assert row["status"] == "pending" and row["attempts"] == 0 and row["owner_token"] is None
    status = conn.execute("SELECT status FROM haosq.workers WHERE worker_id = 'w0'").fetchone()
    assert status["status"] == "stopped"
    assert "released 2 unfinished job(s)" in worker.output()


def test_second_signal_stops_at_once(
    queue: JobQueue, conn: psycopg.Connection, spawn: Callable[..., WorkerProcess]
) -> None:
    worker = spawn("--shutdown-timeout", "60")
    job = queue.add("test:hang", {"seconds": 60})
    wait_status(conn, job.id, "processing")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in worker.output(), message="shutdown to begin")
    started = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    row = job_row(conn, job.id)
    assert row["status"] == "pending" and row["attempts"] == 0


def test_worker_survives_its_connections_being_terminated(
    queue: JobQueue, conn: psycopg.Connection, spawn: Callable[..., WorkerProcess]
) -> None:
    worker = spawn("--concurrency", "4", "--heartbeat-interval", "300")
    first = [queue.add("test:record", {"n": i}).id for i in range(100)]
    for job_id in first[-5:]:
        wait_status(conn, job_id, "completed")
    terminated = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()["n"]
    assert terminated >= 2
    # The test's own pool lost its connections too: enqueue on the surviving one.
    second = [add_job(conn, i) for i in range(100, 200)]
    wait_until(lambda: conn.execute(
        "SELECT count(*) AS n FROM haosq.jobs WHERE status = 'completed'").fetchone()["n"] == 200,
        timeout=20, message="200 completed jobs")
    runs = executions(conn)
    assert sorted(r["job_id"] for r in runs) == sorted(first + second)
    wait_until(lambda: "listen connection restored" in worker.output(), timeout=10,
               message="the listen connection to come back")
    # Notifications work again: a new job is picked up well before the next poll.
    wake = add_job(conn, 999)
    wait_status(conn, wake, "completed", timeout=5)
    assert worker.proc.poll() is None
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def add_job(conn: psycopg.Connection, n: int) -> int:
    row = conn.execute("SELECT haosq.add_job('test:record', jsonb_build_object('n', %s::int)) AS id",
                       (n,)).fetchone()
    return row["id"]


def test_worker_id_clash_is_a_clear_error(
    cli_env: dict[str, str], tmp_path: Path, spawn: Callable[..., WorkerProcess]
) -> None:
    spawn(name="twin")
    clash = WorkerProcess(cli_env, tmp_path / "clash.log", "--worker-id", "twin")
    try:
        assert clash.wait(timeout=15) == 2
        output = clash.output()
        assert "worker id 'twin' is in use by a live worker" in output
        assert "Traceback" not in output
    finally:
        clash.close()


def test_bad_types_selector_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    bad = WorkerProcess(cli_env, tmp_path / "bad.log", "--types", "Email!")
    try:
        assert bad.wait(timeout=15) == 2
        assert "--types: 'Email!' is neither a family" in bad.output()
        assert "Traceback" not in bad.output()
    finally:
        bad.close()
