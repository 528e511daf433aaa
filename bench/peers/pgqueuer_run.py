"""PgQueuer under the same load as haosq (run by the peers' virtualenv Python).

    pgqueuer_run.py run --dsn URL --jobs 20000 --processes 2 --batch 100 [--pickup 200]
    pgqueuer_run.py worker --dsn URL --batch 100 [--report-pickup]

`run` installs PgQueuer's schema in the (scratch) database, times a bulk enqueue of no-op
jobs, times their drain by worker processes, then measures pickup latency with one idle
worker, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import psycopg
from peerlib import (
    emit,
    pickup_latencies,
    spawn_workers,
    stop_on_stdin_eof,
    timed_drain,
    wait_ready_then_go,
)
from pgqueuer import QueueManager
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.domain.types import QueueExecutionMode


async def worker(dsn: str, batch: int, report_pickup: bool) -> None:
    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: object) -> None:
        if report_pickup:
            payload = getattr(job, "payload", b"") or b""
            sys.stdout.write(f"pick {payload.decode()} {time.time()}\n")
            sys.stdout.flush()

    loop = asyncio.get_running_loop()
    stop_on_stdin_eof(lambda: loop.call_soon_threadsafe(qm.shutdown.set))
    await qm.run(batch_size=batch, mode=QueueExecutionMode.continuous,
                 dequeue_timeout=timedelta(seconds=1))
    await conn.close()


def depth_probe(dsn: str) -> Callable[[], int]:
    """Queue depth through one connection kept open (a connection per poll would load the
    server under measurement)."""
    conn = psycopg.connect(dsn, autocommit=True)

    def depth() -> int:
        row = conn.execute("SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')").fetchone()
        return int(row[0]) if row else 0

    return depth


async def install_and_enqueue(dsn: str, jobs: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        started = time.perf_counter()
        chunk = 10_000
        for start in range(0, jobs, chunk):
            n = min(chunk, jobs - start)
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
        return jobs / (time.perf_counter() - started)
    finally:
        await conn.close()


async def enqueue_one(conn: asyncpg.Connection, index: int) -> float:
    await Queries(AsyncpgDriver(conn)).enqueue("noop", str(index).encode(), 0)
    return time.time()


def run(args: argparse.Namespace) -> None:
    enqueue_rate = asyncio.run(install_and_enqueue(args.dsn, args.jobs))
    worker_args = ["worker", "--dsn", args.dsn, "--batch", str(args.batch)]
    procs = spawn_workers(__file__, worker_args, args.processes)
    drain = timed_drain(procs, depth_probe(args.dsn), args.jobs, args.timeout)

    pickup = pickup_latencies("", {})
    if args.pickup:
        [proc] = spawn_workers(__file__, [*worker_args, "--report-pickup"], 1)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(0.5)

        async def feed() -> dict[str, float]:
            conn = await asyncpg.connect(args.dsn)
            committed: dict[str, float] = {}
            for i in range(args.pickup):
                committed[str(i)] = await enqueue_one(conn, i)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            await conn.close()
            return committed

        committed = asyncio.run(feed())
        out, _ = proc.communicate(timeout=30)  # closes stdin: the worker stops
        pickup = pickup_latencies(out, committed)
    emit({
        "peer": "pgqueuer", "processes": args.processes, "batch": args.batch, "jobs": args.jobs,
        "enqueue_jobs_per_s": enqueue_rate, **drain,
        "pickup_ms": pickup,
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "worker"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--pickup", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--report-pickup", action="store_true")
    args = parser.parse_args()
    if args.mode == "worker":
        wait_ready_then_go()
        asyncio.run(worker(args.dsn, args.batch, args.report_pickup))
    else:
        run(args)


if __name__ == "__main__":
    main()
