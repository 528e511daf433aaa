"""Drain throughput and pickup latency of `haosq worker`, with a raw-SQL reference.

    python -m bench.drain [--jobs 20000] [--latency-jobs 200] [--configs 2x100,2x200] [--runs 3]

- raw_sql: one connection claims 100 jobs per statement (FOR UPDATE SKIP LOCKED) and marks
  them completed in one statement, no framework: this machine's ceiling.
- haosq: `haosq worker` processes (PROCESSESxTHREADS each) drain the same number of no-op
  jobs, inserted in one COPY once the workers are idle; jobs/s from the COPY's commit to the
  last completion (the raw-SQL loop likewise starts with every job inserted), with the CPU
  the workers and their PostgreSQL backends used per 1,000 jobs.
- pickup: an idle worker (1 process, 4 threads, LISTEN), one job at a time; latency from the
  enqueue's commit to the handler's start (wall clock, same machine).

Each drain figure is measured `--runs` times (median, min, max). Prints one JSON line per
measurement.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from bench.common import emit, machine, percentile, scratch_database, summary
from bench.workers import BenchWorkers, close_probe, timed_drain
from haosq.config import load_settings
from haosq.queue import JobQueue

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


def haosq_drain(jobs: int, processes: int, threads: int, log_dir: Path) -> tuple[float, float, float]:
    """jobs/s, and worker and server CPU seconds per 1,000 jobs."""
    with scratch_database() as url:
        try:
            with BenchWorkers(url, processes, threads, log_dir=log_dir) as workers:
                workers.wait_registered()
                return timed_drain(url, workers, lambda: enqueue(url, jobs), jobs)
        finally:
            close_probe(url)


def pickup_latency(count: int, log_dir: Path) -> list[float]:
    with scratch_database() as url, psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn, \
            BenchWorkers(url, 1, 4, log_dir=log_dir) as workers:
        workers.wait_registered()
        latencies = []
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
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--configs", default="2x100,2x200,4x100",
                        help="comma-separated PROCESSESxTHREADS worker configurations")
    parser.add_argument("--runs", type=int, default=3, help="measurements per figure")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/haosq-bench-drain"))
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)

    with scratch_database(migrated=False) as url:
        info = machine(url)
    configs = [tuple(int(part) for part in config.split("x")) for config in args.configs.split(",")]
    raw: list[float] = []
    rates: dict[str, list[float]] = {f"{p}x{t}": [] for p, t in configs}
    worker_cpu: dict[str, list[float]] = {name: [] for name in rates}
    server_cpu: dict[str, list[float]] = {name: [] for name in rates}
    # Interleaved, so that a noisy minute on the machine does not land on one figure only.
    for _ in range(args.runs):
        raw.append(raw_sql(args.jobs))
        for processes, threads in configs:
            name = f"{processes}x{threads}"
            rate, worker_used, server_used = haosq_drain(args.jobs, processes, threads, args.log_dir)
            rates[name].append(rate)
            worker_cpu[name].append(worker_used)
            server_cpu[name].append(server_used)
    best = max(rates, key=lambda name: statistics.median(rates[name]))
    emit("drain", jobs=args.jobs, raw_sql_jobs_per_s=summary(raw),
         haosq_jobs_per_s={name: summary(r) for name, r in rates.items()},
         worker_cpu_s_per_1000={name: summary(c) for name, c in worker_cpu.items()},
         postgres_cpu_s_per_1000={name: summary(c) for name, c in server_cpu.items()},
         best_config=best,
         best_vs_raw=round(statistics.median(rates[best]) / statistics.median(raw), 3),
         machine=info)
    latencies = pickup_latency(args.latency_jobs, args.log_dir)
    emit("pickup_latency", jobs=len(latencies),
         p50_ms=round(percentile(latencies, 0.50), 3), p95_ms=round(percentile(latencies, 0.95), 3),
         p99_ms=round(percentile(latencies, 0.99), 3), max_ms=round(max(latencies), 3), machine=info)


if __name__ == "__main__":
    main()
