"""Enqueue throughput: single `JobQueue.add`, `add_many` (COPY) and the SQL function.

    python -m bench.enqueue [--single 3000] [--bulk 100000] [--runs 3]

Prints one JSON line per measurement (median and spread over the runs).
"""

from __future__ import annotations

import argparse
import time

import psycopg

from bench.common import emit, machine, percentile, scratch_database, summary
from haosq.config import load_settings
from haosq.queue import JobQueue


def single_adds(queue: JobQueue, count: int) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for i in range(count):
        before = time.perf_counter()
        queue.add("demo:echo", {"i": i, "to": "user@example.com"})
        latencies.append(time.perf_counter() - before)
    return count / (time.perf_counter() - started), latencies


def bulk_add(queue: JobQueue, count: int) -> float:
    jobs = [{"type": "demo:echo", "payload": {"i": i, "to": "user@example.com"}} for i in range(count)]
    started = time.perf_counter()
    queue.add_many(jobs)
    return count / (time.perf_counter() - started)


def sql_function(url: str, count: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for i in range(count):
            conn.execute("SELECT haosq.add_job('demo:echo', %s::jsonb)", (f'{{"i": {i}}}',))
        return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single", type=int, default=3000)
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    single_rates, p50s, p99s, bulk_rates, function_rates = [], [], [], [], []
    for _ in range(args.runs):
        with scratch_database() as url:
            settings = load_settings(env={"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": "/dev/null"})
            with JobQueue(settings=settings) as queue:
                queue.add("demo:echo", {})  # open the pool outside the measurement
                rate, latencies = single_adds(queue, args.single)
                single_rates.append(rate)
                p50s.append(percentile(latencies, 0.50) * 1000)
                p99s.append(percentile(latencies, 0.99) * 1000)
                bulk_rates.append(bulk_add(queue, args.bulk))
            function_rates.append(sql_function(url, args.single))
    with scratch_database(migrated=False) as url:
        info = machine(url)
    emit("enqueue.single_add", jobs=args.single, jobs_per_s=summary(single_rates),
         p50_ms=summary(p50s), p99_ms=summary(p99s), machine=info)
    emit("enqueue.add_many_copy", jobs=args.bulk, jobs_per_s=summary(bulk_rates), machine=info)
    emit("enqueue.sql_function", jobs=args.single, jobs_per_s=summary(function_rates), machine=info)


if __name__ == "__main__":
    main()
