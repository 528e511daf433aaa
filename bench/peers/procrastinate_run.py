"""Procrastinate under the same load as haosq (run by the peers' virtualenv Python).

    procrastinate_run.py run --dsn URL --jobs 5000 --processes 2 --concurrency 10 [--pickup 200]
    procrastinate_run.py worker --dsn URL --concurrency 10 [--report-pickup]

Same protocol as pgqueuer_run.py: schema, timed bulk defer, timed drain, pickup latency.
Finished jobs are kept (delete_jobs="never"), as haosq keeps its history.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable

import procrastinate
import psycopg
from peerlib import (
    emit,
    pickup_latencies,
    spawn_workers,
    stop_on_stdin_eof,
    timed_drain,
    wait_ready_then_go,
)


def make_app(dsn: str, report_pickup: bool = False) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(i: int = 0) -> None:
        if report_pickup:
            sys.stdout.write(f"pick {i} {time.time()}\n")
            sys.stdout.flush()

    return app


async def worker(dsn: str, concurrency: int, report_pickup: bool) -> None:
    app = make_app(dsn, report_pickup)
    async with app.open_async():
        task = asyncio.create_task(app.run_worker_async(
            concurrency=concurrency, install_signal_handlers=False, delete_jobs="never",
            fetch_job_polling_interval=1.0,
        ))
        loop = asyncio.get_running_loop()
        stop_on_stdin_eof(lambda: loop.call_soon_threadsafe(task.cancel))
        with contextlib.suppress(asyncio.CancelledError):
            await task


def depth_probe(dsn: str) -> Callable[[], int]:
    """Queue depth through one connection kept open."""
    conn = psycopg.connect(dsn, autocommit=True)

    def depth() -> int:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')").fetchone()
        return int(row[0]) if row else 0

    return depth


async def install_and_enqueue(dsn: str, jobs: int) -> float:
    app = make_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        task = app.tasks["noop"]
        started = time.perf_counter()
        chunk = 5_000
        for start in range(0, jobs, chunk):
            n = min(chunk, jobs - start)
            await task.batch_defer_async(*({"i": start + k} for k in range(n)))
        return jobs / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> None:
    enqueue_rate = asyncio.run(install_and_enqueue(args.dsn, args.jobs))
    worker_args = ["worker", "--dsn", args.dsn, "--concurrency", str(args.concurrency)]
    procs = spawn_workers(__file__, worker_args, args.processes)
    drain = timed_drain(procs, depth_probe(args.dsn), args.jobs, args.timeout)

    pickup = pickup_latencies("", {})
    if args.pickup:
        [proc] = spawn_workers(__file__, [*worker_args, "--report-pickup"], 1)
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(0.5)

        async def feed() -> dict[str, float]:
            app = make_app(args.dsn)
            committed: dict[str, float] = {}
            async with app.open_async():
                task = app.tasks["noop"]
                for i in range(args.pickup):
                    await task.defer_async(i=i)
                    committed[str(i)] = time.time()
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)
            return committed

        committed = asyncio.run(feed())
        out, _ = proc.communicate(timeout=30)  # closes stdin: the worker stops
        pickup = pickup_latencies(out, committed)
    emit({
        "peer": "procrastinate", "processes": args.processes, "concurrency": args.concurrency,
        "jobs": args.jobs, "enqueue_jobs_per_s": enqueue_rate, **drain,
        "pickup_ms": pickup,
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "worker"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--pickup", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--report-pickup", action="store_true")
    args = parser.parse_args()
    if args.mode == "worker":
        wait_ready_then_go()
        asyncio.run(worker(args.dsn, args.concurrency, args.report_pickup))
    else:
        run(args)


if __name__ == "__main__":
    main()
