"""Scale: drain throughput and read-side query times with a big history or a big backlog.

    python -m bench.scale [--scale-max 1000000] [--drain-jobs 20000] [--runs 3]

Scenarios: an empty table; 1M finished jobs (and 10M with --scale-max 10000000); 1M pending
jobs. History is bulk-loaded with INSERT ... SELECT generate_series (in 1M-row statements),
then vacuumed and analysed, as autovacuum would have done by then. Each scenario loads its
database once; the runs drain on top of it. For each scenario:

- drain: `--drain-jobs` no-op jobs added with add_many, drained by worker processes (timed
  from the commit of the COPY to the last acknowledgement), with the CPU seconds per 1,000
  jobs used by the workers and by the PostgreSQL backends serving them; with the 1M
  backlog, the rate over the first `--drain-jobs` jobs of the backlog;
- `haosq stats`: JobQueue.stats(), what the command runs;
- the TUI: the jobs screen's first page (PostgresSource.jobs, newest first, no filter and
  filtered on failed jobs) and the dashboard (PostgresSource.dashboard).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench.common import emit, machine, percentile, scratch_database, summary
from bench.workers import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PROCESSES,
    BenchWorkers,
    close_probe,
    completed,
    timed_drain,
)
from haosq.config import Settings, load_settings
from haosq.db.queries.jobs import JobFilter
from haosq.queue import JobQueue
from haosq.tui.data import PostgresSource

CHUNK = 1_000_000

# Finished history spread over the last 30 days, 1% failed, ten types, a small payload.
LOAD_FINISHED = """
INSERT INTO haosq.jobs (type, status, priority, payload, result, error, scheduled_at, due_at,
                        started_at, completed_at, attempts, created_at, updated_at)
SELECT 'hist:type' || (g %% 10), CASE WHEN g %% 100 = 0 THEN 'failed' ELSE 'completed' END, 0,
       jsonb_build_object('i', g, 'to', 'user@example.com'),
       CASE WHEN g %% 100 = 0 THEN NULL ELSE '{"ok": true}'::jsonb END,
       CASE WHEN g %% 100 = 0 THEN 'ValueError: boom' END,
       t, t, t, t + interval '20 milliseconds', 1, t, t + interval '20 milliseconds'
  FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g,
       LATERAL (SELECT now() - interval '30 days' * (1 - g::float8 / %(total)s)) AS s(t)
"""

LOAD_PENDING = """
INSERT INTO haosq.jobs (type, payload)
SELECT 'bench:noop', jsonb_build_object('i', g)
  FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""


def bulk_load(url: str, statement: str, rows: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(1, rows + 1, CHUNK):
            last = min(first + CHUNK - 1, rows)
            conn.execute(statement, {"first": first, "last": last, "total": rows})
        conn.execute("SELECT haosq.compact_job_counts()")
        conn.execute("VACUUM ANALYZE haosq.jobs")
    return time.perf_counter() - started


def timed(call: Callable[[], Any], repeat: int = 15) -> dict[str, float]:
    call()  # connections and caches warm, as on every refresh after the first
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return {"median": statistics.median(samples), "p95": percentile(samples, 0.95),
            "max": max(samples)}


def settings_for(url: str) -> Settings:
    return load_settings(env={"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": "/dev/null"})


def read_times(url: str) -> dict[str, dict[str, float]]:
    settings = settings_for(url)
    source = PostgresSource(settings, read_only=True)
    try:
        with JobQueue(settings=settings) as queue:
            return {
                "stats_ms": timed(queue.stats),
                "tui_jobs_page_ms": timed(lambda: source.jobs(JobFilter(), limit=200)),
                "tui_failed_page_ms": timed(lambda: source.jobs(JobFilter(status="failed"), limit=200)),
                "tui_dashboard_ms": timed(source.dashboard),
            }
    finally:
        source.close()


def drain_added(url: str, jobs: int, processes: int, concurrency: int) -> tuple[float, float, float]:
    """Workers up first; then add_many; time from its commit until every job is done.
    Returns jobs/s and the CPU seconds per 1,000 jobs of the workers and of PostgreSQL."""
    with BenchWorkers(url, processes, concurrency) as workers, \
            JobQueue(settings=settings_for(url)) as queue:
        workers.wait_registered()
        return timed_drain(url, workers, lambda: queue.add_many(
            [{"type": "bench:noop", "payload": {"i": i}} for i in range(jobs)]), jobs)


def drain_backlog(url: str, jobs: int, processes: int, concurrency: int) -> float:
    """The rate over `jobs` jobs taken from a large backlog (after the first 1,000). Counted
    on the completed side: counting a million pending rows at every poll would load the
    server under measurement."""
    done = completed(url)
    with BenchWorkers(url, processes, concurrency) as workers:
        workers.wait_registered()
        while completed(url) < done + 1000:
            time.sleep(0.02)
        started = time.perf_counter()
        while completed(url) < done + 1000 + jobs:
            time.sleep(0.02)
        return jobs / (time.perf_counter() - started)


def scenario(name: str, finished: int, pending: int, args: argparse.Namespace,
             info: dict[str, Any]) -> dict[str, Any]:
    rates: list[float] = []
    worker_cpu: list[float] = []
    server_cpu: list[float] = []
    load_seconds = 0.0
    # One load per scenario; the runs drain on top of it (each adds only --drain-jobs to the
    # history, or takes them from the backlog).
    with scratch_database() as url:
        if finished:
            load_seconds = bulk_load(url, LOAD_FINISHED, finished)
        if pending:
            load_seconds = bulk_load(url, LOAD_PENDING, pending)
        reads = read_times(url)
        for _ in range(args.runs):
            if pending:
                rates.append(drain_backlog(url, args.drain_jobs, args.processes, args.concurrency))
            else:
                rate, worker_used, server_used = drain_added(url, args.drain_jobs, args.processes,
                                                             args.concurrency)
                rates.append(rate)
                worker_cpu.append(worker_used)
                server_cpu.append(server_used)
        close_probe(url)  # before the scratch database is dropped
    return emit(f"scale.{name}", finished_jobs=finished, pending_jobs=pending,
                drain_jobs=args.drain_jobs, drain_jobs_per_s=summary(rates),
                worker_cpu_s_per_1000=summary(worker_cpu) if worker_cpu else None,
                postgres_cpu_s_per_1000=summary(server_cpu) if server_cpu else None,
                daemon={"processes": args.processes, "concurrency": args.concurrency},
                load_seconds=round(load_seconds, 1), **reads, machine=info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale-max", type=int, default=1_000_000,
                        help="largest finished history (10000000 for the 10M scenario)")
    parser.add_argument("--drain-jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--only", choices=["empty", "finished", "pending"])
    parser.add_argument("--finished-sizes", help="comma-separated history sizes instead of "
                        "1M and 10M up to --scale-max (e.g. 10000000 alone)")
    args = parser.parse_args()
    with scratch_database(migrated=False) as url:
        info = machine(url)
    sizes = [n for n in (1_000_000, 10_000_000) if n <= args.scale_max]
    if args.scale_max not in sizes and args.scale_max > 0:
        sizes.append(args.scale_max)
    if args.only in (None, "empty"):
        scenario("empty", 0, 0, args, info)
    if args.finished_sizes:
        sizes = [int(n) for n in args.finished_sizes.split(",")]
    if args.only in (None, "finished"):
        for size in sorted(set(sizes)):
            label = f"{size // 1_000_000}M" if size % 1_000_000 == 0 else str(size)
            scenario(f"finished_{label}", size, 0, args, info)
    if args.only in (None, "pending"):
        backlog = min(1_000_000, max(args.scale_max, args.drain_jobs * 2))
        label = f"{backlog // 1_000_000}M" if backlog % 1_000_000 == 0 else str(backlog)
        scenario(f"pending_{label}", 0, backlog, args, info)


if __name__ == "__main__":
    main()
