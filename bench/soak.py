"""Soak: a steady enqueue rate for a long time; does the queue stay small and fast?

    python -m bench.soak [--minutes 30] [--rate 500] [--held-xmin | --only-held-xmin]
                         [--sample-seconds 30]

A producer adds `--rate` no-op jobs per second (a COPY every 100 ms) while worker processes
drain them. Every sample records the jobs completed since the last one, the size of the jobs
table and of its indexes, dead tuples and the claim index's size. With `--held-xmin` the
same soak runs a second time while another connection holds a REPEATABLE READ snapshot open
the whole time, holding back the xmin horizon (vacuum cannot remove the dead rows the queue
leaves behind): the case that cut a SKIP LOCKED queue's throughput by a third elsewhere.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import psycopg

from bench.common import emit, machine, scratch_database
from bench.workers import BenchWorkers
from haosq.config import load_settings
from haosq.queue import JobQueue

SIZES = """
SELECT pg_relation_size('haosq.jobs') AS table_bytes,
       pg_indexes_size('haosq.jobs') AS indexes_bytes,
       pg_relation_size('haosq.jobs_claim') AS claim_index_bytes,
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'haosq.jobs'::regclass) AS dead_tuples,
       (SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = 'haosq.jobs'::regclass) AS live_tuples,
       (SELECT coalesce(sum(delta), 0) FROM haosq.job_counts WHERE status = 'completed') AS completed,
       (SELECT count(*) FROM haosq.jobs WHERE status = 'pending') AS pending
"""


def sample(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(SIZES)
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        return {column.name: int(value) for column, value in zip(cur.description, row, strict=True)}


def produce(url: str, rate: int, stop: threading.Event) -> None:
    settings = load_settings(env={"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": "/dev/null"})
    per_tick = max(rate // 10, 1)
    with JobQueue(settings=settings) as queue:
        next_tick = time.monotonic()
        while not stop.is_set():
            queue.add_many([{"type": "bench:noop", "payload": {"i": i}} for i in range(per_tick)])
            next_tick += 0.1
            stop.wait(max(next_tick - time.monotonic(), 0))


def soak(minutes: float, rate: int, sample_seconds: float, held_xmin: bool) -> dict[str, Any]:
    with scratch_database() as url:
        holder = None
        if held_xmin:
            holder = psycopg.connect(url, autocommit=True)
            holder.execute("SET idle_in_transaction_session_timeout = 0")
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            holder.execute("SELECT count(*) FROM haosq.workers")  # takes the snapshot
        try:
            with BenchWorkers(url, 2, 16) as workers:
                workers.wait_registered()
                stop = threading.Event()
                producer = threading.Thread(target=produce, args=(url, rate, stop), daemon=True)
                before = sample(url)
                started = time.monotonic()
                producer.start()
                series = []
                last = before
                while time.monotonic() - started < minutes * 60:
                    time.sleep(sample_seconds)
                    now = sample(url)
                    series.append({
                        "t_s": round(time.monotonic() - started),
                        "jobs_per_s": round((now["completed"] - last["completed"]) / sample_seconds, 1),
                        **{k: v for k, v in now.items() if k != "completed"},
                    })
                    last = now
                stop.set()
                producer.join(10)
                after = sample(url)
        finally:
            if holder is not None:
                holder.close()
    rates = [s["jobs_per_s"] for s in series]
    return {"before": before, "after": after, "series": series,
            "jobs_per_s_first": rates[0] if rates else None,
            "jobs_per_s_last": rates[-1] if rates else None,
            "jobs_per_s_min": min(rates) if rates else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=500, help="jobs enqueued per second")
    parser.add_argument("--sample-seconds", type=float, default=30)
    parser.add_argument("--held-xmin", action="store_true",
                        help="then the same soak with a transaction holding the xmin horizon")
    parser.add_argument("--only-held-xmin", action="store_true",
                        help="only the soak with a transaction holding the xmin horizon")
    args = parser.parse_args()
    sample_seconds = min(args.sample_seconds, max(args.minutes * 60 / 6, 1))
    with scratch_database(migrated=False) as url:
        info = machine(url)
    if not args.only_held_xmin:
        emit("soak", minutes=args.minutes, rate=args.rate,
             **soak(args.minutes, args.rate, sample_seconds, False), machine=info)
    if args.held_xmin or args.only_held_xmin:
        emit("soak.held_xmin", minutes=args.minutes, rate=args.rate,
             **soak(args.minutes, args.rate, sample_seconds, True), machine=info)


if __name__ == "__main__":
    main()
