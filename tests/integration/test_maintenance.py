"""Maintenance duties against a real PostgreSQL: rescue of dead workers' jobs, job-log
pruning, retention of finished jobs, one daemon per period, and the config section."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from haosq.clock import FrozenClock
from haosq.config import Settings, load_settings
from haosq.daemon.maintenance import MaintenanceConfig, MaintenanceDuty, load_maintenance_config
from haosq.db.connection import Database
from haosq.errors import ConfigError
from tests.integration.worker_support import wait_until

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings)
    yield db
    db.close()


def make_duty(settings: Settings, database: Database, clock: FrozenClock, name: str = "m1",
              **config: object) -> MaintenanceDuty:
    return MaintenanceDuty(settings, database, clock, worker_id=name,
                           config=MaintenanceConfig(**config))  # type: ignore[arg-type]


def add_job(conn: psycopg.Connection, status: str = "pending", completed_at: datetime | None = None,
            **extra: object) -> int:
    row = conn.execute(
        """INSERT INTO haosq.jobs (type, status, completed_at, attempts, owner_token, worker_id)
           VALUES ('reports:build', %s, %s, %s, %s, %s) RETURNING id""",
        (status, completed_at, extra.get("attempts", 0), extra.get("owner_token"),
         extra.get("worker_id")),
    ).fetchone()
    return row["id"]


def add_logs(conn: psycopg.Connection, job_id: int, created_at: datetime, n: int) -> None:
    conn.execute(
        """INSERT INTO haosq.job_logs (job_id, level, message, created_at)
           SELECT %s, 'info', 'line ' || g, %s FROM generate_series(1, %s) g""",
        (job_id, created_at, n),
    )


def count(conn: psycopg.Connection, query: str, *params: object) -> int:
    return conn.execute(query, params).fetchone()["n"]


def test_rescue_marks_silent_workers_dead_and_requeues_their_jobs(settings, database, clock, conn):
    token = str(uuid.uuid4())
    conn.execute(
        """INSERT INTO haosq.workers (token, worker_id, pid, hostname, concurrency, last_heartbeat)
           VALUES (%s, 'gone', 4242, 'host-a', 1, now() - interval '10 minutes')""", (token,))
    alive = str(uuid.uuid4())
    conn.execute(
        """INSERT INTO haosq.workers (token, worker_id, pid, hostname, concurrency)
           VALUES (%s, 'alive', 4343, 'host-b', 1)""", (alive,))
    orphan = add_job(conn, "processing", attempts=1, owner_token=token, worker_id="gone")
    spent = add_job(conn, "processing", attempts=3, owner_token=token, worker_id="gone")
    running = add_job(conn, "processing", attempts=1, owner_token=alive, worker_id="alive")

    first = make_duty(settings, database, clock, "m1")
    second = make_duty(settings, database, clock, "m2")
    assert "rescue" in first.tick()
    assert second.tick() == []  # the period was taken by the first daemon
    statuses = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM haosq.jobs")}
    assert statuses == {orphan: "pending", spent: "failed", running: "processing"}
    workers = {r["worker_id"]: r["status"] for r in conn.execute(
        "SELECT worker_id, status FROM haosq.workers")}
    assert workers == {"gone": "dead", "alive": "active"}
    record = conn.execute("SELECT * FROM haosq.maintenance_runs WHERE task = 'rescue'").fetchone()
    assert record["run_by"] == "m1"
    assert record["last_result"] == {"dead_workers": 1, "rescued_jobs": 2}

    # A minute later the next period is free again, for whichever daemon asks first.
    clock.advance(timedelta(minutes=1))
    assert "rescue" in second.tick()


def test_job_log_pruning_is_batched_and_keeps_recent_logs(settings, database, clock, conn):
    job = add_job(conn)
    add_logs(conn, job, NOW - timedelta(days=40), 23)
    add_logs(conn, job, NOW - timedelta(days=5), 4)
    duty = make_duty(settings, database, clock, batch_size=5)
    assert duty.prune_job_logs(clock.now()) == {"job_logs": 23}
    assert count(conn, "SELECT count(*) AS n FROM haosq.job_logs") == 4
    assert count(conn, "SELECT count(*) AS n FROM haosq.jobs") == 1


def test_retention_deletes_old_finished_jobs_with_their_logs(settings, database, clock, conn):
    old_done = [add_job(conn, "completed", NOW - timedelta(days=8)) for _ in range(7)]
    new_done = add_job(conn, "completed", NOW - timedelta(days=2))
    old_failed = add_job(conn, "failed", NOW - timedelta(days=31))
    kept_failed = add_job(conn, "failed", NOW - timedelta(days=8))
    pending = add_job(conn, "pending")
    add_logs(conn, old_done[0], NOW - timedelta(days=8), 3)
    add_logs(conn, kept_failed, NOW - timedelta(days=8), 2)
    for name, age in (("ancient", "8 days"), ("recent", "1 day")):
        conn.execute(
            """INSERT INTO haosq.workers (token, worker_id, pid, hostname, concurrency, status,
                                          stopped_at)
               VALUES (gen_random_uuid(), %s, 1, 'h', 1, 'stopped', now() - %s::interval)""",
            (name, age))
    duty = make_duty(settings, database, clock, batch_size=3)
    result = duty.apply_retention(clock.now())
    assert (result["completed"], result["failed"], result["cancelled"]) == (7, 1, 0)
    left = {r["id"] for r in conn.execute("SELECT id FROM haosq.jobs")}
    assert left == {new_done, kept_failed, pending}
    assert old_failed not in left
    assert count(conn, "SELECT count(*) AS n FROM haosq.job_logs") == 2
    assert result["workers"] == 1
    assert [r["worker_id"] for r in conn.execute("SELECT worker_id FROM haosq.workers")] == ["recent"]
    # The status counters follow the deletions (statement triggers).
    counts = {r["status"]: r["n"] for r in conn.execute(
        "SELECT status, sum(delta) AS n FROM haosq.job_counts GROUP BY status")}
    assert counts["completed"] == 1 and counts["failed"] == 1


def test_retention_prunes_old_schedule_runs_but_not_the_guard_of_future_runs(
        settings, database, clock, conn):
    from haosq.queue import JobQueue

    api = JobQueue(settings=settings, clock=FrozenClock(NOW - timedelta(days=40)), database=database)
    api.schedule("hourly", "reports:build", cron="0 * * * *")
    api.run_schedule_now("hourly")
    make_duty(settings, database, clock).apply_retention(clock.now())
    assert count(conn, "SELECT count(*) AS n FROM haosq.schedule_runs") == 0
    assert count(conn, "SELECT count(*) AS n FROM haosq.schedules") == 1


def test_disabled_tasks_do_not_run(settings, database, clock, conn):
    from haosq.daemon.maintenance import TaskConfig

    off = TaskConfig(False, timedelta(minutes=1))
    duty = make_duty(settings, database, clock, rescue=off, job_logs=off, retention=off, vacuum=off,
                     snapshots=off)
    assert duty.tick() == []
    assert count(conn, "SELECT count(*) AS n FROM haosq.maintenance_runs") == 0


def dead_rows(conn: psycopg.Connection, at_least: int) -> int:
    """haosq.jobs's dead rows in the statistics, once they show at least `at_least`."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # this backend's counts, when idle
    found = 0

    def visible() -> bool:
        nonlocal found
        conn.execute("SELECT pg_stat_clear_snapshot()")
        found = count(conn, "SELECT n_dead_tup AS n FROM pg_stat_user_tables "
                            "WHERE relid = 'haosq.jobs'::regclass")
        return found >= at_least

    wait_until(visible, timeout=10, interval=0.05, message=f"{at_least} dead rows in the statistics")
    return found


def make_dead_rows(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO haosq.jobs (type) SELECT 'reports:build' FROM generate_series(1, 3000)")
    conn.execute("UPDATE haosq.jobs SET priority = priority + 1")
    conn.execute("UPDATE haosq.jobs SET priority = priority + 1")


def test_vacuum_stands_in_for_autovacuum(settings, database, clock, conn):
    # Where the server runs autovacuum, keep it off this table: the test counts dead rows.
    conn.execute("ALTER TABLE haosq.jobs SET (autovacuum_enabled = false)")
    # 3,000 jobs updated twice: 6,000 dead rows, over the 1,000 + 2% rule.
    make_dead_rows(conn)
    assert dead_rows(conn, 6000) >= 6000
    always = make_duty(settings, database, clock, vacuum_always=True)
    result = always.vacuum(NOW)
    assert result["vacuumed"]["jobs"] >= 6000
    conn.execute("SELECT pg_stat_clear_snapshot()")
    after = conn.execute("SELECT n_dead_tup, vacuum_count + autovacuum_count AS runs "
                         "FROM pg_stat_user_tables WHERE relid = 'haosq.jobs'::regclass").fetchone()
    assert after["n_dead_tup"] == 0 and after["runs"] >= 1
    assert always.vacuum(NOW) == {}  # nothing due any more
    # The default only stands in when the server's autovacuum is off.
    make_dead_rows(conn)
    dead_rows(conn, 6000)
    server_autovacuum = conn.execute("SELECT current_setting('autovacuum')::boolean AS on"
                                     ).fetchone()["on"]
    result = make_duty(settings, database, clock).vacuum(NOW)
    assert (result == {}) if server_autovacuum else (result["vacuumed"]["jobs"] >= 6000)


def test_vacuum_is_not_repeated_while_the_same_transaction_holds_it_back(
    settings, database, clock, conn, database_url
):
    conn.execute("ALTER TABLE haosq.jobs SET (autovacuum_enabled = false)")
    duty = make_duty(settings, database, clock, vacuum_always=True)

    def vacuum_runs() -> int:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT vacuum_count FROM pg_stat_user_tables "
                            "WHERE relid = 'haosq.jobs'::regclass").fetchone()["vacuum_count"]

    with psycopg.connect(database_url) as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM haosq.jobs")  # the snapshot, kept while idle
        make_dead_rows(conn)
        dead_rows(conn, 6000)
        assert duty.vacuum(NOW)["vacuumed"]["jobs"] >= 6000  # first time: it may remove some
        assert vacuum_runs() == 1
        make_dead_rows(conn)
        dead_rows(conn, 12000)
        result = duty.vacuum(NOW)
        # Nothing the holder keeps can go: the second vacuum is left out, and says why.
        assert "jobs" not in result.get("vacuumed", {}) and result["held_back"]["jobs"] >= 12000
        assert vacuum_runs() == 1
        holder.rollback()
    result = duty.vacuum(NOW)
    assert result["vacuumed"]["jobs"] >= 12000 and "held_back" not in result
    assert vacuum_runs() == 2 and dead_rows(conn, 0) == 0


def test_a_transaction_holding_back_vacuum_is_named(settings, database, clock, database_url,
                                                     caplog):
    duty = make_duty(settings, database, clock, snapshot_warn_after=timedelta(0))
    assert duty.watch_snapshots(NOW) == {}
    with psycopg.connect(database_url, application_name="monthly-report") as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM haosq.jobs")  # takes the snapshot, then idles
        pid = holder.info.backend_pid
        with caplog.at_level("WARNING", logger="haosq.maintenance"):
            result = duty.watch_snapshots(NOW)
        assert result["held_by_pid"] == pid
        assert f"pid {pid}" in caplog.text and "'monthly-report'" in caplog.text
        assert "pg_terminate_backend" in caplog.text
        patient = make_duty(settings, database, clock, snapshot_warn_after=timedelta(hours=1))
        assert patient.watch_snapshots(NOW) == {}  # not old enough to warn about
        holder.rollback()
    assert duty.watch_snapshots(NOW) == {}


def config(tmp_path: Path, text: str, database_url: str = "") -> Settings:
    path = tmp_path / "haosq.toml"
    path.write_text(text)
    env = {"HAOSQ_CONFIG": str(path)}
    if database_url:
        env["HAOSQ_DATABASE_URL"] = database_url
    return load_settings(env=env)


def test_maintenance_config_defaults_and_overrides(tmp_path):
    defaults = load_maintenance_config(config(tmp_path, ""))
    assert defaults.rescue.every == timedelta(minutes=1) and defaults.rescue.enabled
    assert defaults.job_logs.every == timedelta(days=1)
    assert defaults.job_logs_keep == timedelta(days=30)
    assert defaults.old_files is None
    tuned = load_maintenance_config(config(tmp_path, """
[maintenance]
batch_size = 1000
[maintenance.rescue]
every = "30s"
[maintenance.job_logs]
keep = "14d"
[maintenance.retention]
enabled = false
completed = "2d"
failed = "90d"
"""))
    assert tuned.batch_size == 1000
    assert tuned.rescue.every == timedelta(seconds=30)
    assert tuned.job_logs_keep == timedelta(days=14)
    assert not tuned.retention.enabled
    assert tuned.keep["completed"] == timedelta(days=2)
    assert tuned.keep["failed"] == timedelta(days=90)
    assert tuned.tick_seconds == 3.0
    off = load_maintenance_config(config(tmp_path, "[maintenance]\nenabled = false\n"))
    assert not (off.rescue.enabled or off.job_logs.enabled or off.retention.enabled)
    with pytest.raises(ConfigError, match=r"\[maintenance.job_logs\] keep: invalid duration"):
        load_maintenance_config(config(tmp_path, "[maintenance.job_logs]\nkeep = 'forever'\n"))
    with pytest.raises(ConfigError, match="unknown key"):
        load_maintenance_config(config(tmp_path, "[maintenance.rescue]\nevry = '1m'\n"))
    assert defaults.vacuum.enabled and not defaults.vacuum_always
    assert load_maintenance_config(config(tmp_path, "[maintenance.vacuum]\nwhen = 'always'\n"
                                                    "every = '5m'\n")).vacuum_always
    assert load_maintenance_config(config(tmp_path, "[maintenance.snapshots]\nwarn_after = '30s'\n"
                                                    )).snapshot_warn_after == timedelta(seconds=30)
    with pytest.raises(ConfigError, match=r"\[maintenance.vacuum\] when = 'sometimes'"):
        load_maintenance_config(config(tmp_path, "[maintenance.vacuum]\nwhen = 'sometimes'\n"))
    with pytest.raises(ConfigError, match="invalid cron expression"):
        load_maintenance_config(config(tmp_path, "[maintenance.old_files]\ncron = 'daily'\n"
                                                 "directory = '/tmp/x'\n"))


def test_old_files_cleanup_is_a_daily_schedule_when_configured(tmp_path, database_url, clock, conn):
    settings = config(tmp_path, """
[maintenance.old_files]
directory = "/var/tmp/uploads"
older_than_days = 30
""", database_url)
    db = Database(settings)
    try:
        duty = MaintenanceDuty(settings, db, clock)
        assert duty.sync_old_files() is True
        assert duty.sync_old_files() is False  # a second daemon's start changes nothing
    finally:
        db.close()
    row = conn.execute("SELECT * FROM haosq.schedules").fetchone()
    assert (row["name"], row["type"], row["cron"], row["payload"], row["next_due_at"]) == (
        "haosq.old-files", "cleanup:old-files", "0 3 * * *",
        {"directory": "/var/tmp/uploads", "older_than_days": 30},
        datetime(2026, 6, 2, 3, tzinfo=UTC))
