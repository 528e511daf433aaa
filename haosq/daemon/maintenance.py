"""The queue's own upkeep, run by every daemon beside its schedule loop.

Tasks (each can be tuned or disabled in the config file's `[maintenance]` section):

    [maintenance]
    enabled = true              # false turns every task off
    batch_size = 5000           # rows deleted per short transaction

    [maintenance.rescue]        # dead workers and the jobs they held (stale-job rescue)
    every = "1m"

    [maintenance.job_logs]      # job-log pruning
    every = "1d"
    keep = "30d"

    [maintenance.retention]     # finished jobs (with their logs), old records of runs and workers
    every = "1h"
    completed = "7d"
    failed = "30d"
    cancelled = "7d"
    schedule_runs = "30d"
    workers = "7d"              # stopped and dead workers' rows

    [maintenance.vacuum]        # VACUUM (ANALYZE) of haosq's tables, where autovacuum is off
    every = "1m"
    when = "autovacuum-off"     # or "always"

    [maintenance.snapshots]     # warn about a transaction that holds back vacuum
    every = "1m"
    warn_after = "5m"

    [maintenance.old_files]     # the `cleanup:old-files` job, enqueued on a schedule
    cron = "0 3 * * *"          # default: daily at 03:00 (timezone: default UTC)
    directory = "/var/tmp/app"  # every other key is the job's payload
    older_than_days = 30

Every daemon runs the tasks, but a guarded update of `haosq.maintenance_runs` gives each
period to one of them; when that one dies another takes the next period.

The vacuum task stands in for autovacuum on a server where it is turned off (a queue table
never vacuumed grows by two dead row versions per job: 350 MB in 30 minutes at 500 jobs/s):
each period it vacuums every haosq table whose dead rows exceed autovacuum's rule for
haosq.jobs (1,000 plus 2% of the live rows). With autovacuum on it does nothing, unless
`when = "always"`. VACUUM needs the table's owner; a daemon running as another role logs it
once and leaves vacuuming to the owner.

The snapshots task looks for the oldest open transaction of the database that holds a
snapshot for longer than `warn_after` (a forgotten `BEGIN` in psql, a long report, an idle
REPEATABLE READ session) and logs who holds it: while it stays open no vacuum can remove the
row versions the queue leaves behind, and every claim has to walk past them.

Job-log pruning and retention delete here, in SQL, rather than by enqueueing
`cleanup:job-logs` jobs: they need no handler process, no worker listening to the cleanup
family, and they delete in short batches that a job queue full of work cannot delay.
`cleanup:old-files` is a job because it touches a file system of some host; it is a
schedule ("haosq.old-files") that the maintenance duty writes at start when configured.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from haosq import schedules as defs
from haosq.clock import Clock, SystemClock
from haosq.config import Settings
from haosq.daemon.duty import DutyContext, register_duty
from haosq.daemon.scheduler import Ticker, default_enqueuer_id
from haosq.db.connection import Database
from haosq.db.queries import maintenance as maintenance_sql
from haosq.db.queries import schedules as schedule_sql
from haosq.db.queries import workers as worker_sql
from haosq.durations import parse_duration
from haosq.errors import ConfigError

log = logging.getLogger("haosq.maintenance")

OLD_FILES_SCHEDULE = "haosq.old-files"
OLD_FILES_TYPE = "cleanup:old-files"


@dataclass(frozen=True)
class TaskConfig:
    enabled: bool
    every: timedelta


@dataclass(frozen=True)
class MaintenanceConfig:
    """The `[maintenance]` section, validated, with its defaults."""

    batch_size: int = 5000
    rescue: TaskConfig = TaskConfig(True, timedelta(minutes=1))
    job_logs: TaskConfig = TaskConfig(True, timedelta(days=1))
    job_logs_keep: timedelta = timedelta(days=30)
    retention: TaskConfig = TaskConfig(True, timedelta(hours=1))
    keep: Mapping[str, timedelta] = field(default_factory=lambda: {
        "completed": timedelta(days=7), "failed": timedelta(days=30),
        "cancelled": timedelta(days=7)})
    schedule_runs_keep: timedelta = timedelta(days=30)
    workers_keep: timedelta = timedelta(days=7)
    vacuum: TaskConfig = TaskConfig(True, timedelta(minutes=1))
    vacuum_always: bool = False
    snapshots: TaskConfig = TaskConfig(True, timedelta(minutes=1))
    snapshot_warn_after: timedelta = timedelta(minutes=5)
    old_files: defs.ScheduleSpec | None = None

    @property
    def tick_seconds(self) -> float:
        """Often enough for the shortest enabled period to be kept within ~10%."""
        periods = [t.every.total_seconds()
                   for t in (self.rescue, self.job_logs, self.retention, self.vacuum,
                             self.snapshots) if t.enabled]
        return min(max(min(periods, default=60.0) / 10, 1.0), 15.0)


def _section(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table")
    return dict(value)


def _duration(value: Any, where: str) -> timedelta:
    try:
        duration = parse_duration(str(value)) if not isinstance(value, int | float) else (
            timedelta(seconds=value))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if duration <= timedelta(0):
        raise ConfigError(f"{where}: must be positive")
    return duration


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    return value


def _task(table: dict[str, Any], name: str, default: TaskConfig, all_enabled: bool,
          extra: tuple[str, ...]) -> TaskConfig:
    where = f"[maintenance.{name}]"
    unknown = set(table) - {"enabled", "every", *extra}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    enabled = _flag(table.get("enabled", default.enabled), f"{where} enabled") and all_enabled
    every = _duration(table["every"], f"{where} every") if "every" in table else default.every
    return TaskConfig(enabled, every)


def load_maintenance_config(settings: Settings) -> MaintenanceConfig:
    """Read `settings.sections["maintenance"]`; raises ConfigError on a bad value."""
    section = _section(settings.sections.get("maintenance"), "[maintenance]")
    default = MaintenanceConfig()
    unknown = set(section) - {"enabled", "batch_size", "rescue", "job_logs", "retention",
                              "vacuum", "snapshots", "old_files"}
    if unknown:
        raise ConfigError(f"[maintenance]: unknown key(s) {', '.join(sorted(unknown))}")
    all_enabled = _flag(section.get("enabled", True), "[maintenance] enabled")
    batch = section.get("batch_size", default.batch_size)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1_000_000:
        raise ConfigError(f"[maintenance] batch_size = {batch!r}: expected 1 to 1000000")

    rescue_table = _section(section.get("rescue"), "[maintenance.rescue]")
    logs_table = _section(section.get("job_logs"), "[maintenance.job_logs]")
    retention_table = _section(section.get("retention"), "[maintenance.retention]")
    vacuum_table = _section(section.get("vacuum"), "[maintenance.vacuum]")
    snapshots_table = _section(section.get("snapshots"), "[maintenance.snapshots]")
    when = vacuum_table.get("when", "autovacuum-off")
    if when not in ("autovacuum-off", "always"):
        raise ConfigError(f"[maintenance.vacuum] when = {when!r}: expected \"autovacuum-off\" "
                          "or \"always\"")
    keep = dict(default.keep)
    for status in keep:
        if status in retention_table:
            keep[status] = _duration(retention_table[status], f"[maintenance.retention] {status}")
    return MaintenanceConfig(
        batch_size=batch,
        rescue=_task(rescue_table, "rescue", default.rescue, all_enabled, ()),
        job_logs=_task(logs_table, "job_logs", default.job_logs, all_enabled, ("keep",)),
        job_logs_keep=(_duration(logs_table["keep"], "[maintenance.job_logs] keep")
                       if "keep" in logs_table else default.job_logs_keep),
        retention=_task(retention_table, "retention", default.retention, all_enabled,
                        ("completed", "failed", "cancelled", "schedule_runs", "workers")),
        keep=keep,
        schedule_runs_keep=(_duration(retention_table["schedule_runs"],
                                      "[maintenance.retention] schedule_runs")
                            if "schedule_runs" in retention_table else default.schedule_runs_keep),
        workers_keep=(_duration(retention_table["workers"], "[maintenance.retention] workers")
                      if "workers" in retention_table else default.workers_keep),
        vacuum=_task(vacuum_table, "vacuum", default.vacuum, all_enabled, ("when",)),
        vacuum_always=when == "always",
        snapshots=_task(snapshots_table, "snapshots", default.snapshots, all_enabled,
                        ("warn_after",)),
        snapshot_warn_after=(_duration(snapshots_table["warn_after"],
                                       "[maintenance.snapshots] warn_after")
                             if "warn_after" in snapshots_table else default.snapshot_warn_after),
        old_files=_old_files(section.get("old_files"), all_enabled,
                             settings["max_payload_bytes"]),
    )


def _old_files(value: Any, all_enabled: bool, max_payload_bytes: int) -> defs.ScheduleSpec | None:
    table = _section(value, "[maintenance.old_files]")
    if not table:
        return None
    payload = {k: v for k, v in table.items() if k not in ("cron", "timezone", "enabled")}
    if not payload:
        raise ConfigError("[maintenance.old_files]: give the cleanup:old-files payload "
                          "(e.g. directory and older_than_days)")
    enabled = _flag(table.get("enabled", True), "[maintenance.old_files] enabled") and all_enabled
    try:
        return defs.make_spec(OLD_FILES_SCHEDULE, OLD_FILES_TYPE, payload,
                              cron=table.get("cron", "0 3 * * *"),
                              timezone=table.get("timezone", "UTC"), enabled=enabled,
                              max_payload_bytes=max_payload_bytes)
    except defs.InvalidSchedule as exc:
        raise ConfigError(f"[maintenance.old_files]: {exc}") from None


class MaintenanceDuty:
    """Runs the maintenance tasks whose period has come; a Duty (see haosq.daemon.duty)."""

    name = "maintenance"

    def __init__(
        self,
        settings: Settings,
        database: Database,
        clock: Clock | None = None,
        *,
        worker_id: str | None = None,
        config: MaintenanceConfig | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or default_enqueuer_id()
        self.config = config or load_maintenance_config(settings)
        self._stop = threading.Event()
        self._stopping = stopping or (lambda: False)
        self._ticker = Ticker(f"haosq-{self.name}", self.config.tick_seconds, self.tick)
        self._not_owner_logged = False
        # The vacuum horizon each table was last vacuumed under (see `vacuum`).
        self._vacuumed_under: dict[str, str] = {}
        # Stale after this many missed heartbeats: the same rule as the daemon's own rescue.
        self.worker_timeout = timedelta(
            milliseconds=settings["worker.heartbeat_interval_ms"]
            * settings["worker.stale_after_heartbeats"])

    @classmethod
    def from_context(cls, context: DutyContext) -> MaintenanceDuty:
        return cls(context.settings, context.database, context.clock,
                   worker_id=context.worker_id, stopping=context.stopping)

    # -- Duty ----------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self.sync_old_files()
        self._ticker.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._ticker.stop(timeout)

    # -- work ----------------------------------------------------------------------------

    def tasks(self) -> dict[str, tuple[TaskConfig, Callable[[datetime], dict[str, Any]]]]:
        return {
            "rescue": (self.config.rescue, self.rescue),
            "job_logs": (self.config.job_logs, self.prune_job_logs),
            "retention": (self.config.retention, self.apply_retention),
            "vacuum": (self.config.vacuum, self.vacuum),
            "snapshots": (self.config.snapshots, self.watch_snapshots),
        }

    def tick(self) -> list[str]:
        """Run each enabled task whose period has come and that no other daemon took;
        returns the names of the tasks run here."""
        ran = []
        for name, (task, run) in self.tasks().items():
            if not task.enabled or self._halted():
                continue
            now = self.clock.now()
            with self.database.connection() as conn:
                if not maintenance_sql.claim_task(conn, name, now, task.every, self.worker_id):
                    continue
            ran.append(name)
            result: dict[str, Any] | None = None
            error: str | None = None
            try:
                result = run(now)
                if any(result.values()):
                    log.info("maintenance %s: %s", name, result)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.exception("maintenance %s failed", name)
            with self.database.connection() as conn:
                maintenance_sql.finish_task(conn, name, self.clock.now(), result, error)
        return ran

    def _halted(self) -> bool:
        return self._stop.is_set() or self._stopping()

    def rescue(self, now: datetime) -> dict[str, Any]:
        """Mark silent workers dead and send their jobs back (or fail them when out of
        attempts). Idempotent: safe beside the daemons' own heartbeat rescue."""
        with self.database.connection() as conn, conn.transaction():
            dead = worker_sql.mark_dead_workers(conn, self.worker_timeout)
            rescued = worker_sql.rescue_orphaned_jobs(
                conn, self.worker_timeout, self.settings["worker.max_attempts"])
        return {"dead_workers": len(dead), "rescued_jobs": len(rescued)}

    def _batched(self, delete: Callable[[Any], int]) -> int:
        """Repeat a batched delete (each batch its own transaction) until a batch comes back
        short, or the daemon stops."""
        total = 0
        while not self._halted():
            with self.database.connection() as conn:
                deleted = delete(conn)
            total += deleted
            if deleted < self.config.batch_size:
                break
        return total

    def prune_job_logs(self, now: datetime) -> dict[str, Any]:
        cutoff = now - self.config.job_logs_keep
        batch = self.config.batch_size
        return {"job_logs": self._batched(
            lambda conn: maintenance_sql.delete_job_logs_batch(conn, cutoff, batch))}

    def apply_retention(self, now: datetime) -> dict[str, Any]:
        batch = self.config.batch_size
        result: dict[str, Any] = {}
        for status, keep in self.config.keep.items():
            cutoff = now - keep
            result[status] = self._batched(
                lambda conn, s=status, c=cutoff: maintenance_sql.delete_finished_jobs_batch(
                    conn, s, c, batch))
        runs_cutoff = now - self.config.schedule_runs_keep
        result["schedule_runs"] = self._batched(
            lambda conn: maintenance_sql.delete_schedule_runs_batch(conn, runs_cutoff, batch))
        # Worker rows are few (one per daemon start): one statement, on the database's clock
        # like the heartbeats it compares with.
        with self.database.connection() as conn:
            result["workers"] = worker_sql.delete_old_workers(conn, self.config.workers_keep)
        return result

    def vacuum(self, now: datetime) -> dict[str, Any]:
        """VACUUM (ANALYZE) the haosq tables due for it, when autovacuum will not."""
        with self.database.connection() as conn:
            if not self.config.vacuum_always and maintenance_sql.autovacuum_on(conn):
                return {}
            due = maintenance_sql.tables_due_for_vacuum(conn)
            horizon = maintenance_sql.vacuum_horizon(conn) if due else None
            vacuumed: dict[str, int] = {}
            held_back: dict[str, int] = {}
            for table in due:
                if self._halted():
                    break
                if horizon is not None and self._vacuumed_under.get(table["name"]) == horizon:
                    # The same transaction still holds the horizon: everything this vacuum
                    # could remove, the last one removed. Vacuuming again would read the
                    # whole table and its indexes every period for nothing, and slowed a
                    # held-snapshot soak to a third of its rate while it ran.
                    held_back[table["name"]] = table["dead"]
                    continue
                if not table["owned"]:
                    if not self._not_owner_logged:
                        log.warning("maintenance vacuum: haosq.%s needs vacuuming (%d dead rows) "
                                    "but this daemon's role does not own it; run VACUUM as its "
                                    "owner or turn autovacuum on", table["name"], table["dead"])
                        self._not_owner_logged = True
                    continue
                maintenance_sql.vacuum_table(conn, table["name"])
                vacuumed[table["name"]] = table["dead"]
                if horizon is not None:
                    self._vacuumed_under[table["name"]] = horizon
        result: dict[str, Any] = {}
        if vacuumed:
            result["vacuumed"] = vacuumed
        if held_back:
            log.info("maintenance vacuum: skipped %s: transaction %s still holds back vacuum, "
                     "so nothing more can be removed (the snapshots task names its session)",
                     ", ".join(f"haosq.{name}" for name in held_back), horizon)
            result["held_back"] = held_back
        return result

    def watch_snapshots(self, now: datetime) -> dict[str, Any]:
        """Name the oldest transaction that holds back vacuum, when it is too old."""
        with self.database.connection() as conn:
            held = maintenance_sql.oldest_snapshot(conn, self.config.snapshot_warn_after)
        if held is None:
            return {}
        minutes = held["seconds"] / 60
        log.warning(
            "a transaction has held a snapshot for %.0f min (pid %s, role %s, application %r, "
            "client %s, %s): vacuum cannot remove the row versions finished jobs leave "
            "behind, so the queue's tables and indexes grow until it ends; end it (COMMIT, or SELECT "
            "pg_terminate_backend(%s)) and consider idle_in_transaction_session_timeout",
            minutes, held["pid"], held["role"] or "?", held["application"] or "",
            held["client"] or "local", held["state"] or "?", held["pid"])
        return {"held_by_pid": held["pid"], "minutes": round(minutes, 1)}

    def sync_old_files(self) -> bool:
        """Write the configured cleanup:old-files schedule (when there is one)."""
        spec = self.config.old_files
        if spec is None:
            return False
        row = defs.spec_row(spec, source="config", now=self.clock.now())
        with self.database.connection() as conn:
            return schedule_sql.upsert_config_schedule(conn, row)


@register_duty
def maintenance_duty(context: DutyContext) -> MaintenanceDuty:
    return MaintenanceDuty.from_context(context)
