"""Schedule loop cost: an idle tick, and enqueueing many due runs with one or three daemons.

    python -m bench.schedules [--schedules 2000] [--runs 3]

Every schedule fires each minute; a frozen clock moves a minute per round so that all of
them fall due at once. Prints one JSON line per measurement (median and spread).
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC, datetime

import psycopg

from bench.common import emit, machine, scratch_database, summary
from haosq.clock import FrozenClock
from haosq.config import load_settings
from haosq.daemon.scheduler import SchedulerDuty
from haosq.db.connection import Database
from haosq.queue import JobQueue

START = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)


def round_of(duties: list[SchedulerDuty], clock: FrozenClock) -> tuple[float, int]:
    """Move the clock a minute and tick every duty at once; (seconds, jobs enqueued)."""
    clock.advance(60)
    counts: list[int] = []
    barrier = threading.Barrier(len(duties))

    def run(duty: SchedulerDuty) -> None:
        barrier.wait()
        counts.append(duty.tick())

    threads = [threading.Thread(target=run, args=(d,)) for d in duties]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    idle_ms: list[float] = []
    rates: dict[int, list[float]] = {1: [], 3: []}
    for _ in range(args.runs):
        with scratch_database() as url:
            settings = load_settings(env={"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": "/dev/null"})
            clock = FrozenClock(START)
            databases = [Database(settings) for _ in range(3)]
            try:
                queue = JobQueue(settings=settings, clock=clock, database=databases[0])
                for n in range(args.schedules):
                    queue.schedule(f"s{n}", "demo:echo", {"n": n}, cron="* * * * *")
                duties = [SchedulerDuty(settings, db, clock, worker_id=f"d{i}", load_config=False)
                          for i, db in enumerate(databases)]
                duties[0].tick()  # nothing due yet: warm the pool and the plan
                started = time.perf_counter()
                for _ in range(50):
                    duties[0].tick()
                idle_ms.append((time.perf_counter() - started) / 50 * 1000)
                for count in (1, 3):
                    seconds, enqueued = round_of(duties[:count], clock)
                    assert enqueued == args.schedules, (enqueued, args.schedules)
                    rates[count].append(enqueued / seconds)
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "SELECT count(*), count(DISTINCT (created_by, scheduled_at)) FROM haosq.jobs"
                    ).fetchone()
                    assert row is not None and row[0] == row[1] == 2 * args.schedules
            finally:
                for db in databases:
                    db.close()
    with scratch_database(migrated=False) as url:
        info = machine(url)
    emit("schedules.idle_tick", schedules=args.schedules, ms=summary(idle_ms), machine=info)
    for count, samples in rates.items():
        emit(f"schedules.enqueue_due_runs.{count}_daemons", schedules=args.schedules,
             runs_per_s=summary(samples), machine=info)


if __name__ == "__main__":
    main()
