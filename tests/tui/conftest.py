"""TUI fixtures: a fixed data set at fixed times, a frozen clock, an app wired to the test DB."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from textual.pilot import Pilot

from haosq.clock import FrozenClock
from haosq.config import Settings
from haosq.tui.app import HaosqApp
from haosq.tui.data import PostgresSource

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
TOKENS = {
    "alpha": "00000000-0000-4000-8000-000000000001",
    "bravo": "00000000-0000-4000-8000-000000000002",
    "charlie": "00000000-0000-4000-8000-000000000003",
}

TRACEBACK = """SMTPRecipientsRefused: {'nobody@example.com': (550, b'mailbox unavailable')}
Traceback (most recent call last):
  File "haosq/daemon/execution.py", line 88, in run
    result = spec.call(payload, context)
  File "haosq/handlers/mailer.py", line 41, in send
    client.send_message(message)
smtplib.SMTPRecipientsRefused: {'nobody@example.com': (550, b'mailbox unavailable')}"""


@pytest.fixture(autouse=True)
def utc_local_time() -> Iterator[None]:
    """Local time is shown on screen: pin it, so snapshots match on any machine."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def at(minutes: float) -> datetime:
    """NOW plus (or minus) some minutes."""
    return NOW + timedelta(minutes=minutes)


def insert_job(conn: psycopg.Connection, job_type: str, status: str, *, created: float,
               started: float | None = None, finished: float | None = None, due: float | None = None,
               payload: str = "{}", result: str | None = None, error: str | None = None,
               attempts: int = 0, max_attempts: int | None = None, priority: int = 0,
               tags: tuple[str, ...] = (), worker: str | None = None) -> int:
    row = conn.execute(
        """INSERT INTO haosq.jobs (type, status, priority, payload, result, error, scheduled_at,
                                   due_at, started_at, completed_at, attempts, max_attempts,
                                   worker_id, worker_pid, owner_token, tags, created_by,
                                   created_at, updated_at)
           VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                   'tests', %s, %s)
           RETURNING id""",
        (job_type, status, priority, payload, result, error, at(created),
         at(due if due is not None else created), at(started) if started is not None else None,
         at(finished) if finished is not None else None, attempts, max_attempts,
         worker, 4242 if worker else None, TOKENS[worker] if worker else None, list(tags),
         at(created), at(finished if finished is not None else started if started is not None
                         else created)),
    ).fetchone()
    return int(row["id"])


def insert_log(conn: psycopg.Connection, job_id: int, attempt: int | None, level: str, message: str,
               minutes: float) -> None:
    conn.execute(
        "INSERT INTO haosq.job_logs (job_id, attempt, level, message, created_at)"
        " VALUES (%s, %s, %s, %s, %s)", (job_id, attempt, level, message, at(minutes)))


def insert_worker(conn: psycopg.Connection, name: str, status: str, heartbeat: float, *,
                  concurrency: int = 4, types: tuple[str, ...] = (), processed: int = 0,
                  failed: int = 0) -> None:
    conn.execute(
        """INSERT INTO haosq.workers (token, worker_id, pid, hostname, status, concurrency, job_types,
                                      jobs_processed, jobs_succeeded, jobs_failed, started_at,
                                      last_heartbeat, stopped_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (TOKENS[name], f"{name}-1", 1000 + len(name), f"{name}.example", status, concurrency,
         list(types), processed, processed - failed, failed, at(-600), at(heartbeat),
         at(heartbeat) if status == "dead" else None),
    )


def load_fixed_data(conn: psycopg.Connection) -> dict[str, int]:
    """A small queue with every status, three workers and an hour of history; returns job ids."""
    insert_worker(conn, "alpha", "active", -0.1, processed=1280, failed=12)
    insert_worker(conn, "bravo", "active", -9, concurrency=2, types=("files",), processed=310, failed=3)
    insert_worker(conn, "charlie", "dead", -180, concurrency=1, processed=41)
    ids: dict[str, int] = {}
    ids["completed_prune"] = insert_job(conn, "cleanup:prune", "completed", created=-9 * 60,
                                        started=-9 * 60, finished=-9 * 60 + 0.5, attempts=1,
                                        result='{"deleted": 1204}')
    for minute in range(1, 58, 3):
        for n in range(minute % 7 + 1):
            insert_job(conn, "email:send", "completed", created=-minute - 1, started=-minute - 0.5,
                       finished=-minute - 0.5 + 0.02 * (n + 1), attempts=1,
                       payload='{"to": "user@example.com"}', result='{"sent": true}')
        if minute % 9 == 1:
            insert_job(conn, "files:thumbnail", "completed", created=-minute - 2, started=-minute - 1,
                       finished=-minute, attempts=1, tags=("images",))
    ids["failed"] = insert_job(
        conn, "email:send", "failed", created=-30, started=-20, finished=-20, attempts=3,
        max_attempts=3, error=TRACEBACK, tags=("newsletter",),
        payload='{"to": "nobody@example.com", "subject": "Welcome", "smtp_password": "hunter2",'
                ' "headers": {"Authorization": "Bearer abc"}}')
    for attempt, minutes in ((1, -29), (2, -25), (3, -20)):
        insert_log(conn, ids["failed"], attempt, "info", "connecting to smtp.example.com:25", minutes)
        insert_log(conn, ids["failed"], attempt, "error", "550 mailbox unavailable", minutes + 0.1)
    ids["failed2"] = insert_job(conn, "files:resize", "failed", created=-15, started=-14, finished=-14,
                                attempts=1, max_attempts=1, error="PermanentError: not an image")
    ids["cancelled"] = insert_job(conn, "notify:push", "cancelled", created=-12, finished=-11,
                                  error="cancelled by operator")
    ids["processing"] = insert_job(conn, "files:thumbnail", "processing", created=-3, started=-1,
                                   attempts=1, worker="alpha", tags=("images",),
                                   payload='{"path": "/srv/media/cat.jpg", "sizes": [64, 256]}')
    insert_log(conn, ids["processing"], 1, "info", "decoding /srv/media/cat.jpg", -0.9)
    ids["pending"] = insert_job(conn, "email:send", "pending", created=-2, priority=5,
                                payload='{"to": "ops@example.com", "api_token": "t0k3n"}')
    ids["pending2"] = insert_job(conn, "notify:push", "pending", created=-1, tags=("mobile",))
    ids["scheduled"] = insert_job(conn, "cleanup:prune", "pending", created=-5, due=60 * 24,
                                  tags=("nightly",))
    insert_schedule(conn, "nightly-prune", "cleanup:prune", cron="0 3 * * *", next_due=15 * 60,
                    last_due=-9 * 60, last_job=ids["completed_prune"])
    insert_schedule(conn, "digest-every-15m", "email:send", interval=900, next_due=5, last_due=-10,
                    last_job=ids["failed"])
    insert_schedule(conn, "weekly-report", "report:weekly", cron="0 8 * * 1", next_due=4 * 24 * 60,
                    enabled=False)
    return ids


def insert_schedule(conn: psycopg.Connection, name: str, job_type: str, *, cron: str | None = None,
                    interval: float | None = None, next_due: float, last_due: float | None = None,
                    last_job: int | None = None, enabled: bool = True) -> None:
    conn.execute(
        """INSERT INTO haosq.schedules (name, type, cron, interval_seconds, enabled, anchor_at,
                                        next_due_at, last_due_at, last_job_id, created_at, updated_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (name, job_type, cron, interval, enabled, at(-24 * 60), at(next_due),
         at(last_due) if last_due is not None else None, last_job, at(-24 * 60), at(-24 * 60)))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def fixed_data(conn: psycopg.Connection) -> dict[str, int]:
    return load_fixed_data(conn)


def handler_types() -> list[str]:
    """A fixed list, so that completions on screen do not follow the built-in handlers."""
    return ["email:send", "files:thumbnail", "report:weekly"]


@pytest.fixture
def make_app(settings: Settings, clock: FrozenClock) -> Callable[..., HaosqApp]:
    def make(*, read_only: bool = False, live: bool = False, app_settings: Settings | None = None,
             refresh_interval: float = 0) -> HaosqApp:
        source = PostgresSource(app_settings or settings, read_only=read_only, clock=clock,
                                stale_after=timedelta(seconds=60), handler_types=handler_types)
        app = HaosqApp(source, clock=clock, refresh_interval=refresh_interval, min_refresh=0,
                       read_only=read_only, live=live)
        app.animation_level = "none"
        return app

    return make


async def settle(pilot: Pilot) -> None:
    """Wait until every load started by the last keys has landed on screen."""
    for _ in range(4):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()
