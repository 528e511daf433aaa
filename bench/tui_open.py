"""Time to first paint and to open the jobs screen with a large jobs table, as JSON.

    python bench/tui_open.py --server postgresql://postgres@127.0.0.1:5432/postgres --jobs 1000000

Creates a scratch database, bulk-loads the jobs with one generate_series INSERT (mixed types and
statuses), then runs the app headless: "first paint" is the dashboard showing its counts ("dashboard
complete" adds the last hour's throughput and durations), "jobs screen" is the first page of
the jobs table on screen after pressing `j`, "next page" the next 200 rows after the cursor
reaches the end of the loaded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from haosq.config import load_settings
from haosq.db.migrate import migrate
from haosq.db.queries.jobs import JobFilter
from haosq.tui.app import HaosqApp
from haosq.tui.data import PostgresSource
from haosq.tui.screens.dashboard import DashboardScreen
from haosq.tui.screens.jobs import JobsScreen

LOAD = """
INSERT INTO haosq.jobs (type, status, payload, attempts, started_at, completed_at, error, created_at)
SELECT (ARRAY['email:send', 'files:thumbnail', 'notify:push', 'cleanup:prune'])[1 + i %% 4],
       CASE WHEN i %% 50 = 0 THEN 'failed' WHEN i %% 10 = 0 THEN 'pending' ELSE 'completed' END,
       jsonb_build_object('n', i), 1,
       now() - make_interval(secs => (%(n)s - i) * 0.01) - interval '1 second',
       CASE WHEN i %% 10 <> 0 THEN now() - make_interval(secs => (%(n)s - i) * 0.01) END,
       CASE WHEN i %% 50 = 0 THEN 'boom' END,
       now() - make_interval(secs => (%(n)s - i) * 0.01)
  FROM generate_series(1, %(n)s) AS i
"""


async def until(app: HaosqApp, done: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for {what} (database error: {app.db_error})")
        await asyncio.sleep(0.005)


async def measure(url: str) -> dict[str, float]:
    settings = load_settings(env={"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": str(Path("/dev/null"))})
    started = time.perf_counter()
    app = HaosqApp(PostgresSource(settings), refresh_interval=0, live=False)
    app.animation_level = "none"
    result: dict[str, float] = {}
    async with app.run_test(size=(160, 48)) as pilot:
        await until(app, lambda: isinstance(app.screen, DashboardScreen)
                    and app.screen.query_one("#types-table").row_count > 0, "the dashboard")
        result["first_paint_seconds"] = round(time.perf_counter() - started, 3)
        dashboard = app.screen
        assert isinstance(dashboard, DashboardScreen)
        await until(app, lambda: dashboard.activity is not None, "the last hour's activity")
        result["dashboard_complete_seconds"] = round(time.perf_counter() - started, 3)
        pressed = time.perf_counter()
        await pilot.press("j")
        await until(app, lambda: isinstance(app.screen, JobsScreen) and bool(app.screen.order),
                    "the jobs screen")
        result["jobs_screen_seconds"] = round(time.perf_counter() - pressed, 3)
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        paged = time.perf_counter()
        loaded = len(screen.order)
        screen.table.move_cursor(row=loaded - 1, animate=False)
        await until(app, lambda: len(screen.order) > loaded, "the next page")
        result["next_page_seconds"] = round(time.perf_counter() - paged, 3)
    return result


def query_times(url: str) -> dict[str, float]:
    """The database's share: the first page of the jobs table and the dashboard's reads."""
    settings = load_settings(env={"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": str(Path("/dev/null"))})
    source = PostgresSource(settings)
    try:
        source.jobs(JobFilter(), limit=200)  # open the pool
        timings = {}
        for name, call in (("first_page_query_ms", lambda: source.jobs(JobFilter(), limit=200)),
                           ("failed_page_query_ms",
                            lambda: source.jobs(JobFilter(status="failed"), limit=200)),
                           ("dashboard_counts_ms", source.dashboard),
                           ("dashboard_activity_ms", source.activity)):
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                call()
                best = min(best, time.perf_counter() - started)
            timings[name] = round(best * 1000, 1)
        return timings
    finally:
        source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="app starts to time (min and median)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    name = f"haosq_bench_tui_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(args.server, dbname=name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            loading = time.perf_counter()
            conn.execute(LOAD, {"n": args.jobs})
            conn.execute("VACUUM ANALYZE haosq.jobs")
            load_seconds = time.perf_counter() - loading
            sys.stderr.write(f"loaded {args.jobs} jobs in {load_seconds:.1f}s\n")
        queries = query_times(url)
        runs = [asyncio.run(measure(url)) for _ in range(args.runs)]
        figures = {key: {"min": min(r[key] for r in runs),
                         "median": statistics.median(r[key] for r in runs)} for key in runs[0]}
        json.dump({"jobs": args.jobs, "load_seconds": round(load_seconds, 1), "runs": args.runs,
                   **figures, **queries, "terminal": "160x48 headless",
                   "load_average_1m": round(os.getloadavg()[0], 1)}, sys.stdout)
        sys.stdout.write("\n")
    finally:
        if not args.keep:
            with psycopg.connect(args.server, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


if __name__ == "__main__":
    main()
