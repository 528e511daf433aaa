"""Drain throughput and pickup latency of `haosq worker`, with a raw-SQL reference.

    python -m bench.drain [--jobs 20000] [--latency-jobs 200] [--configs 1x32,2x32,4x16]

- raw_sql: one connection claims 100 jobs per statement (FOR UPDATE SKIP LOCKED) and marks
  them completed in one statement, no framework: this machine's ceiling.
- haosq: `haosq worker` processes (PROCESSESxTHREADS each) drain the same number of no-op
  jobs, inserted in one COPY once the workers are idle; jobs/s from the COPY's commit to the
  last completion (the raw-SQL loop likewise starts with every job inserted).
- pickup: an idle worker (1 process, 4 threads, LISTEN), one job at a time; latency from the
  enqueue's commit to the handler's start (wall clock, same machine).

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from bench.common import emit, machine, percentile, scratch_database
from haosq.config import load_settings
from haosq.queue import JobQueue

ROOT = Path(__file__).resolve().parents[1]

CLAIM_100 = """
WITH next AS (
    SELECT id FROM haosq.jobs
     WHERE status = 'pending' AND due_at <= now()
     ORDER BY priority DESC, due_at, id
     LIMIT 100
     FOR UPDATE SKIP LOCKED)
UPDATE haosq.jobs j SET status = 'processing', attempts = j.attempts + 1, started_at = now()
  FROM next WHERE j.id = next.id
RETURNING j.id
"""
COMPLETE = """
UPDATE haosq.jobs SET status = 'completed', completed_at = now(), result = 'null'
 WHERE id = ANY(%s) AND status = 'processing'
"""


def enqueue(url: str, count: int, job_type: str = "bench:noop") -> None:
    settings = load_settings(env={"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": "/dev/null"})
    with JobQueue(settings=settings) as queue:
        queue.add_many([{"type": job_type, "payload": {"i": i}} for i in range(count)])


def completed(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) AS n FROM haosq.jobs WHERE status = 'completed'").fetchone()
    return row["n"]


def raw_sql(jobs: int) -> float:
    with scratch_database() as url:
        enqueue(url, jobs)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE haosq.jobs")
            done = 0
            started = time.perf_counter()
            while True:
                ids = [r[0] for r in conn.execute(CLAIM_100).fetchall()]
                if not ids:
                    break
                conn.execute(COMPLETE, (ids,))
                done += len(ids)
            elapsed = time.perf_counter() - started
        assert done == jobs, done
        return jobs / elapsed


def start_workers(url: str, processes: int, threads: int, log_dir: Path) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAOSQ_", "JOB_QUEUE_"))}
    env.pop("DATABASE_URL", None)
    env.update({"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": "/dev/null"})
    workers = []
    for index in range(processes):
        log = (log_dir / f"worker-{index}.log").open("w")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "haosq", "worker", "--import", "bench.drain_handlers",
             "--types", "bench", "--concurrency", str(threads), "--log-level", "warning",
             "--worker-id", f"bench-{index}"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log))
    return workers


def wait_registered(conn: psycopg.Connection, count: int) -> None:
    deadline = time.monotonic() + 60
    while conn.execute("SELECT count(*) AS n FROM haosq.workers WHERE status = 'active'"
                       ).fetchone()["n"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start")
        time.sleep(0.05)
    time.sleep(0.3)  # let the LISTEN connections settle


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(30)


def haosq_drain(jobs: int, processes: int, threads: int, log_dir: Path) -> float:
    with scratch_database() as url, psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        workers = start_workers(url, processes, threads, log_dir)
        try:
            wait_registered(conn, processes)
            enqueue(url, jobs)  # one COPY: the jobs become visible at its commit
            started = time.perf_counter()
            while completed(conn) < jobs:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            stop(workers)
        return jobs / elapsed


def pickup_latency(count: int, log_dir: Path) -> list[float]:
    with scratch_database() as url, psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        workers = start_workers(url, 1, 4, log_dir)
        latencies = []
        try:
            wait_registered(conn, 1)
            for _ in range(count):
                row = conn.execute("SELECT haosq.add_job('bench:stamp') AS id").fetchone()
                committed = time.time()
                job_id = row["id"]
                while True:
                    done = conn.execute("SELECT status, result FROM haosq.jobs WHERE id = %s",
                                        (job_id,)).fetchone()
                    if done["status"] == "completed":
                        break
                    time.sleep(0.002)
                latencies.append((float(done["result"]) - committed) * 1000)
                time.sleep(0.01)  # the worker is idle again
        finally:
            stop(workers)
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--configs", default="1x32,2x32,4x16",
                        help="comma-separated PROCESSESxTHREADS worker configurations")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/haosq-bench-drain"))
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)

    with scratch_database(migrated=False) as url:
        info = machine(url)
    raw = raw_sql(args.jobs)
    results = {}
    for config in args.configs.split(","):
        processes, threads = (int(part) for part in config.split("x"))
        results[config] = haosq_drain(args.jobs, processes, threads, args.log_dir)
    best = max(results, key=lambda c: results[c])
    emit("drain", jobs=args.jobs, raw_sql_jobs_per_s=round(raw),
         haosq_jobs_per_s={c: round(r) for c, r in results.items()},
         best_config=best, best_vs_raw=round(results[best] / raw, 3), machine=info)
    latencies = pickup_latency(args.latency_jobs, args.log_dir)
    emit("pickup_latency", jobs=len(latencies),
         p50_ms=round(percentile(latencies, 0.50), 3), p95_ms=round(percentile(latencies, 0.95), 3),
         p99_ms=round(percentile(latencies, 0.99), 3), max_ms=round(max(latencies), 3), machine=info)


if __name__ == "__main__":
    main()
