"""The schedule loop: every live daemon enqueues the recurring runs that fall due.

APScheduler (3.x) only drives the tick; which runs are due is computed by
`haosq.schedules` from the stored schedule and the injectable clock, and each run is
enqueued exactly once by the database (see `haosq.db.queries.schedules`): there is no
leader, so any number of daemons can run this duty and any of them can die.

At start the duty writes the config file's `[[schedules]]` into the `schedules` table
(rows with source 'config'; the due time is kept unless the trigger changed).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC
from typing import Any

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from haosq import schedules as defs
from haosq.clock import Clock, SystemClock
from haosq.config import Settings
from haosq.daemon.duty import DutyContext, register_duty
from haosq.db.connection import Database
from haosq.db.queries import schedules as schedule_sql

log = logging.getLogger("haosq.scheduler")

DEFAULT_TICK_SECONDS = 1.0
# Schedules handled per transaction; a tick loops until no due schedule is left.
BATCH_SIZE = 100


def quiet_apscheduler() -> None:
    """APScheduler logs every run of a job at INFO: once a second is noise in the journal."""
    for name in ("apscheduler.executors.default", "apscheduler.scheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Ticker:
    """Calls a function every `seconds` on an APScheduler background thread, never two at
    once; a failing call is logged and the next tick tries again."""

    def __init__(self, name: str, seconds: float, function: Any) -> None:
        self.name = name
        self.seconds = seconds
        self.function = function
        self._scheduler: BackgroundScheduler | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        try:
            self.function()
        except Exception:
            log.exception("%s: tick failed; retrying at the next tick", self.name)

    def start(self) -> None:
        quiet_apscheduler()
        with self._lock:
            if self._scheduler is not None:
                return
            scheduler = BackgroundScheduler(timezone=UTC)
            scheduler.add_job(
                self._run, IntervalTrigger(seconds=self.seconds, timezone=UTC), id=self.name,
                max_instances=1, coalesce=True, misfire_grace_time=None,
                next_run_time=SystemClock().now(),
            )
            scheduler.start()
            self._scheduler = scheduler

    def stop(self, timeout: float) -> None:
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        # shutdown(wait=True) waits for a running tick; bound that wait by `timeout`.
        waiter = threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, daemon=True)
        waiter.start()
        waiter.join(timeout)


def default_enqueuer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SchedulerDuty:
    """Enqueues due runs of recurring schedules; a Duty (see haosq.daemon.duty)."""

    name = "scheduler"

    def __init__(
        self,
        settings: Settings,
        database: Database,
        clock: Clock | None = None,
        *,
        worker_id: str | None = None,
        tick_seconds: float = DEFAULT_TICK_SECONDS,
        load_config: bool = True,
        wake: Any = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or default_enqueuer_id()
        self.load_config = load_config
        self.wake = wake
        self._ticker = Ticker(f"haosq-{self.name}", tick_seconds, self.tick)

    @classmethod
    def from_context(cls, context: DutyContext) -> SchedulerDuty:
        return cls(context.settings, context.database, context.clock,
                   worker_id=context.worker_id, wake=context.wake)

    # -- Duty ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.load_config:
            self.sync_config()
        self._ticker.start()

    def stop(self, timeout: float) -> None:
        self._ticker.stop(timeout)

    # -- work ----------------------------------------------------------------------------

    def sync_config(self) -> int:
        """Write the config file's [[schedules]] into the database; returns how many changed.
        An invalid definition raises InvalidSchedule (the daemon does not start)."""
        where = str(self.settings.config_file or "config")
        specs = defs.load_config_schedules(self.settings.sections, where,
                                           self.settings["max_payload_bytes"])
        now = self.clock.now()
        changed = 0
        with self.database.connection() as conn:
            for spec in specs:
                row = defs.spec_row(spec, source="config", now=now)
                changed += schedule_sql.upsert_config_schedule(conn, row)
        if specs:
            log.info("%d schedule(s) from %s, %d changed", len(specs), where, changed)
        return changed

    def tick(self) -> int:
        """Enqueue every run due now; returns the number of jobs enqueued here."""
        now = self.clock.now()
        enqueued = 0
        while True:
            advanced = 0
            with self.database.connection() as conn, conn.transaction():
                due = schedule_sql.lock_due_schedules(conn, now, BATCH_SIZE)
                for row in due:
                    count = self._enqueue_due(conn, row, now)
                    if count is not None:
                        enqueued += count
                        advanced += 1
            # A full batch of schedules that all failed would come back at once: stop there.
            if len(due) < BATCH_SIZE or not advanced:
                break
        if enqueued and self.wake is not None:
            self.wake()
        return enqueued

    def _enqueue_due(
        self, conn: psycopg.Connection[Any], row: dict[str, Any], now: Any
    ) -> int | None:
        """One schedule's due runs and its next due time, under a savepoint; the number of
        jobs enqueued. A schedule that fails is logged and left due (None), the others go on."""
        try:
            with conn.transaction():
                plan = defs.plan_runs(defs.trigger_of(row), row["catch_up"], row["catch_up_limit"],
                                      row["next_due_at"], now)
                count = 0
                for due_at in plan.due_times:
                    job_id = schedule_sql.enqueue_run(conn, row, due_at, now,
                                                      enqueued_by=self.worker_id)
                    if job_id is not None:
                        count += 1
                        log.info("schedule %s: enqueued job %s for %s", row["name"], job_id,
                                 due_at.isoformat())
                if not plan.due_times:
                    log.info("schedule %s: missed run(s) not enqueued (catch_up = %s)",
                             row["name"], row["catch_up"])
                schedule_sql.advance_schedule(conn, row["id"], row["next_due_at"],
                                              plan.next_due_at, now)
                return count
        except (psycopg.Error, defs.InvalidSchedule, ValueError, LookupError):
            log.exception("schedule %s: cannot enqueue its due runs", row["name"])
            return None


@register_duty
def scheduler_duty(context: DutyContext) -> SchedulerDuty:
    return SchedulerDuty.from_context(context)
