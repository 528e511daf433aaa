"""Recurring schedules against a real PostgreSQL, driven by a frozen clock: fire times,
misfire policies, daylight-saving changes, exactly-once enqueue across daemons, the API,
the config file and the CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from haosq.clock import FrozenClock
from haosq.config import Settings, load_settings
from haosq.daemon.scheduler import SchedulerDuty
from haosq.db.connection import Database
from haosq.queue import JobQueue
from haosq.schedules import InvalidSchedule, ScheduleExists, ScheduleNotFound, load_config_schedules

START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings)
    yield db
    db.close()


@pytest.fixture
def api(settings: Settings, clock: FrozenClock, database: Database) -> JobQueue:
    return JobQueue(settings=settings, clock=clock, database=database)


@pytest.fixture
def duty(settings: Settings, clock: FrozenClock, database: Database) -> SchedulerDuty:
    return SchedulerDuty(settings, database, clock, worker_id="test-daemon", load_config=False)


def scheduled_jobs(conn: psycopg.Connection, name: str) -> list[datetime]:
    rows = conn.execute(
        "SELECT scheduled_at FROM haosq.jobs WHERE created_by = %s ORDER BY scheduled_at",
        (f"schedule:{name}",),
    ).fetchall()
    return [r["scheduled_at"] for r in rows]


def at(hour: int, minute: int = 0, day: int = 2, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_cron_schedule_fires_at_its_times_once(api, duty, clock, conn) -> None:
    created = api.schedule("every-5", "reports:build", {"kind": "short"}, cron="*/5 * * * *",
                           priority=7, max_attempts=2, tags=["nightly"])
    assert created.next_due_at == at(9, 35)
    assert duty.tick() == 0
    clock.set(at(9, 35))
    assert duty.tick() == 1
    assert duty.tick() == 0
    clock.set(at(9, 39) + timedelta(seconds=59))
    assert duty.tick() == 0
    clock.set(at(9, 40) + timedelta(seconds=2))
    assert duty.tick() == 1
    assert scheduled_jobs(conn, "every-5") == [at(9, 35), at(9, 40)]
    job = conn.execute("SELECT * FROM haosq.jobs ORDER BY id DESC LIMIT 1").fetchone()
    assert (job["type"], job["payload"], job["priority"], job["max_attempts"], job["tags"],
            job["status"]) == ("reports:build", {"kind": "short"}, 7, 2, ["nightly"], "pending")
    listed = {s.name: s for s in api.schedules()}["every-5"]
    assert (listed.next_due_at, listed.last_due_at, listed.last_outcome) == (
        at(9, 45), at(9, 40), "pending")


def test_interval_schedule_counts_from_its_creation(api, duty, clock, conn) -> None:
    api.schedule("ninety", "reports:build", interval="90s")
    clock.advance(89)
    assert duty.tick() == 0
    clock.advance(1)
    assert duty.tick() == 1
    clock.advance(90)
    assert duty.tick() == 1
    assert scheduled_jobs(conn, "ninety") == [START + timedelta(seconds=90),
                                              START + timedelta(seconds=180)]


@pytest.mark.parametrize(
    ("policy", "limit", "expected_hours"),
    [("none", 10, []), ("latest", 10, [13]), ("all", 3, [11, 12, 13]), ("all", 10, [10, 11, 12, 13])],
)
def test_misfire_policies(api, duty, clock, conn, policy, limit, expected_hours) -> None:
    api.schedule("hourly", "reports:build", cron="0 * * * *", catch_up=policy,
                 catch_up_limit=limit)
    clock.set(at(13, 30))  # runs due at 10, 11, 12 and 13 were missed (13:00 is 30 min late)
    duty.tick()
    assert scheduled_jobs(conn, "hourly") == [at(h) for h in expected_hours]
    assert api.schedules()[0].next_due_at == at(14)
    assert duty.tick() == 0


def test_catch_up_none_still_runs_a_slightly_late_tick(api, duty, clock, conn) -> None:
    api.schedule("hourly", "reports:build", cron="0 * * * *", catch_up="none")
    clock.set(at(10, 0) + timedelta(seconds=30))
    assert duty.tick() == 1
    assert scheduled_jobs(conn, "hourly") == [at(10)]


def tick_through(duty: SchedulerDuty, clock: FrozenClock, until: datetime, step: timedelta) -> None:
    while clock.now() < until:
        clock.advance(step)
        duty.tick()


def test_daylight_saving_changes_in_a_timezone(api, duty, clock, conn) -> None:
    berlin = "Europe/Berlin"
    clock.set(datetime(2026, 3, 27, 12, tzinfo=UTC))
    api.schedule("nine", "reports:build", cron="0 9 * * *", timezone=berlin)
    api.schedule("half-two", "reports:build", cron="30 2 * * *", timezone=berlin)
    tick_through(duty, clock, datetime(2026, 3, 31, 12, tzinfo=UTC), timedelta(minutes=10))
    # 09:00 local is 08:00 UTC in winter time and 07:00 UTC from 29 March on.
    assert scheduled_jobs(conn, "nine") == [
        datetime(2026, 3, 28, 8, tzinfo=UTC), datetime(2026, 3, 29, 7, tzinfo=UTC),
        datetime(2026, 3, 30, 7, tzinfo=UTC), datetime(2026, 3, 31, 7, tzinfo=UTC)]
    # 02:30 does not exist on 29 March (02:00 -> 03:00): it runs once, shifted by the gap.
    assert scheduled_jobs(conn, "half-two") == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC), datetime(2026, 3, 31, 0, 30, tzinfo=UTC)]

    # 25 October: 02:00-03:00 happens twice; a time in that hour runs once, the first time.
    clock.set(datetime(2026, 10, 23, 12, tzinfo=UTC))
    api.schedule("fall", "reports:build", cron="30 2 * * *", timezone=berlin)
    api.schedule("half-hourly", "reports:build", cron="*/30 * * * *", timezone=berlin)
    tick_through(duty, clock, datetime(2026, 10, 26, 12, tzinfo=UTC), timedelta(minutes=10))
    assert scheduled_jobs(conn, "fall") == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]
    fold = [t for t in scheduled_jobs(conn, "half-hourly")
            if datetime(2026, 10, 24, 23, tzinfo=UTC) <= t <= datetime(2026, 10, 25, 3, tzinfo=UTC)]
    assert fold == [datetime(2026, 10, 24, 23, tzinfo=UTC) + timedelta(minutes=30 * i)
                    for i in (0, 1, 2, 3)] + [datetime(2026, 10, 25, 2, tzinfo=UTC) + timedelta(
                        minutes=30 * i) for i in (0, 1, 2)]


def test_three_daemons_enqueue_each_due_run_once(settings, api, clock, conn) -> None:
    for n in range(20):
        api.schedule(f"s{n}", "reports:build", cron="* * * * *", catch_up="all")
    databases = [Database(settings) for _ in range(3)]
    duties = [SchedulerDuty(settings, db, clock, worker_id=f"d{i}", load_config=False)
              for i, db in enumerate(databases)]
    try:
        for _ in range(10):
            clock.advance(60)
            barrier = threading.Barrier(3)
            counts: list[int] = []

            def run(d: SchedulerDuty, barrier: threading.Barrier = barrier,
                    counts: list[int] = counts) -> None:
                barrier.wait()
                counts.append(d.tick())

            threads = [threading.Thread(target=run, args=(d,)) for d in duties]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sum(counts) == 20
    finally:
        for db in databases:
            db.close()
    rows = conn.execute(
        """SELECT created_by, scheduled_at, count(*) AS n FROM haosq.jobs
            GROUP BY created_by, scheduled_at""").fetchall()
    assert len(rows) == 200
    assert {r["n"] for r in rows} == {1}
    by = conn.execute("SELECT DISTINCT enqueued_by FROM haosq.schedule_runs").fetchall()
    assert len(by) >= 2  # the work is shared, not taken by one leader


def test_validation_errors_are_clear(api) -> None:
    with pytest.raises(InvalidSchedule, match="invalid cron expression '61 \\* \\* \\* \\*'"):
        api.schedule("bad", "reports:build", cron="61 * * * *")
    with pytest.raises(InvalidSchedule, match="unknown timezone 'Mars/Olympus'"):
        api.schedule("bad", "reports:build", cron="0 3 * * *", timezone="Mars/Olympus")
    with pytest.raises(InvalidSchedule, match="exactly one of cron or interval"):
        api.schedule("bad", "reports:build")
    with pytest.raises(InvalidSchedule, match="invalid catch_up 'some'"):
        api.schedule("bad", "reports:build", interval="1m", catch_up="some")
    with pytest.raises(InvalidSchedule, match="invalid job type"):
        api.schedule("bad", "Reports", interval="1m")
    with pytest.raises(InvalidSchedule, match="invalid interval"):
        api.schedule("bad", "reports:build", interval="soon")
    api.schedule("taken", "reports:build", interval="1m")
    with pytest.raises(ScheduleExists, match="'taken' exists already"):
        api.schedule("taken", "reports:build", interval="5m")
    replaced = api.schedule("taken", "reports:other", interval="5m", replace=True)
    assert (replaced.type, replaced.interval_seconds) == ("reports:other", 300.0)
    with pytest.raises(ScheduleNotFound):
        api.unschedule("missing")
    assert [s.name for s in api.schedules()] == ["taken"]


def test_disable_enable_and_run_now(api, duty, clock, conn) -> None:
    api.schedule("hourly", "reports:build", cron="0 * * * *", catch_up="all")
    assert api.set_schedule_enabled("hourly", False).enabled is False
    clock.set(at(12, 10))
    assert duty.tick() == 0
    enabled = api.set_schedule_enabled("hourly", True)
    assert enabled.next_due_at == at(13)  # what fell due while disabled is not replayed
    job = api.run_schedule_now("hourly")
    assert job.type == "reports:build" and job.created_by == "schedule:hourly"
    listed = api.schedules()[0]
    assert (listed.last_job_id, listed.next_due_at) == (job.id, at(13))
    conn.execute("UPDATE haosq.jobs SET status = 'failed', completed_at = now() WHERE id = %s",
                 (job.id,))
    assert api.schedules()[0].last_outcome == "failed"
    conn.execute("DELETE FROM haosq.jobs WHERE id = %s", (job.id,))
    assert api.schedules()[0].last_outcome == "pruned"
    api.unschedule("hourly")
    assert api.schedules() == []


def write_config(tmp_path: Path, text: str, database_url: str) -> Settings:
    path = tmp_path / "haosq.toml"
    path.write_text(text)
    return load_settings(env={"HAOSQ_CONFIG": str(path), "HAOSQ_DATABASE_URL": database_url})


CONFIG = """
[[schedules]]
name = "nightly"
type = "reports:nightly"
cron = "0 3 * * *"
timezone = "Europe/Berlin"
payload = { format = "pdf" }

[[schedules]]
name = "often"
type = "reports:often"
interval = "{interval}"
catch_up = "none"
"""


def test_config_schedules_are_loaded_at_start_and_kept(tmp_path, database_url, clock, conn) -> None:
    settings = write_config(tmp_path, CONFIG.replace("{interval}", "15m"), database_url)
    db = Database(settings)
    try:
        first = SchedulerDuty(settings, db, clock)
        assert first.sync_config() == 2
        rows = {r["name"]: r for r in conn.execute("SELECT * FROM haosq.schedules").fetchall()}
        assert rows["nightly"]["payload"] == {"format": "pdf"}
        assert rows["nightly"]["source"] == "config"
        assert rows["often"]["next_due_at"] == START + timedelta(minutes=15)
        # Another daemon starting later with the same file changes nothing.
        clock.advance(300)
        assert SchedulerDuty(settings, db, clock).sync_config() == 0
        # A changed trigger starts afresh from now.
        changed = write_config(tmp_path, CONFIG.replace("{interval}", "10m"), database_url)
        assert SchedulerDuty(changed, db, clock).sync_config() == 1
        after = conn.execute("SELECT next_due_at FROM haosq.schedules WHERE name = 'often'").fetchone()
        assert after["next_due_at"] == START + timedelta(minutes=15)
    finally:
        db.close()


def test_config_errors_name_the_schedule() -> None:
    entry = {"name": "a", "type": "reports:a", "cron": "0 3 * * *"}
    with pytest.raises(InvalidSchedule, match="duplicate schedule name 'a'"):
        load_config_schedules({"schedules": [entry, entry]}, "haosq.toml")
    with pytest.raises(InvalidSchedule, match="schedule #1: unknown key"):
        load_config_schedules({"schedules": [{**entry, "every": "1m"}]}, "haosq.toml")
    with pytest.raises(InvalidSchedule, match=r"schedule #1: .*unknown timezone"):
        load_config_schedules({"schedules": [{**entry, "timezone": "Nowhere/City"}]}, "haosq.toml")


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "haosq", *args], env={**env, "COLUMNS": "200"},
                          capture_output=True,
                          text=True, timeout=60)


def test_cli_schedules_commands(cli_env, conn) -> None:
    added = run_cli(cli_env, "schedules", "add", "nightly", "reports:nightly", "--cron", "0 3 * * *",
                    "--timezone", "Europe/Berlin", "--payload",
                    '{"format": "pdf", "smtp_password": "hunter2"}')
    assert added.returncode == 0, added.stderr
    assert "added schedule nightly (0 3 * * *)" in added.stdout
    duplicate = run_cli(cli_env, "schedules", "add", "nightly", "reports:nightly", "--every", "5m")
    assert duplicate.returncode == 2
    assert "exists already" in duplicate.stderr and "Traceback" not in duplicate.stderr
    bad = run_cli(cli_env, "schedules", "add", "bad", "reports:x", "--cron", "* * *")
    assert bad.returncode == 2 and "invalid cron expression" in bad.stderr
    now = run_cli(cli_env, "schedules", "run-now", "nightly")
    assert now.returncode == 0 and "enqueued job" in now.stdout
    assert run_cli(cli_env, "schedules", "disable", "nightly").returncode == 0
    listed = run_cli(cli_env, "schedules", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    import json

    assert "hunter2" not in listed.stdout
    [row] = json.loads(listed.stdout)
    assert row["payload"]["format"] == "pdf"
    assert (row["name"], row["enabled"], row["last_outcome"], row["timezone"]) == (
        "nightly", False, "pending", "Europe/Berlin")
    assert run_cli(cli_env, "schedules", "enable", "nightly").returncode == 0
    table = run_cli(cli_env, "schedules", "list")
    assert "nightly" in table.stdout and "pending" in table.stdout
    assert run_cli(cli_env, "schedules", "remove", "nightly").returncode == 0
    missing = run_cli(cli_env, "schedules", "remove", "nightly")
    assert missing.returncode == 2 and "no schedule named 'nightly'" in missing.stderr
    assert conn.execute("SELECT count(*) AS n FROM haosq.schedules").fetchone()["n"] == 0


def test_cli_shows_a_job_for_later_as_scheduled(cli_env, queue) -> None:
    queue.add("reports:build", scheduled_at=datetime.now(UTC) + timedelta(hours=1))
    queue.add("reports:now")
    listed = run_cli(cli_env, "jobs", "list", "--status", "scheduled", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"display_status": "scheduled"' in listed.stdout
    assert "reports:build" in listed.stdout and "reports:now" not in listed.stdout


def test_a_broken_schedule_row_does_not_hold_up_the_others(api, duty, clock, conn) -> None:
    api.schedule("good", "reports:build", cron="0 * * * *")
    api.schedule("broken", "reports:build", cron="0 * * * *")
    # A row no longer valid on this host (say, a timezone its tz database lacks).
    conn.execute("UPDATE haosq.schedules SET timezone = 'Mars/Base' WHERE name = 'broken'")
    clock.set(at(10))
    assert duty.tick() == 1
    assert scheduled_jobs(conn, "good") == [at(10)]
    assert scheduled_jobs(conn, "broken") == []
    broken = conn.execute("SELECT next_due_at FROM haosq.schedules WHERE name = 'broken'").fetchone()
    assert broken["next_due_at"] == at(10)  # still due: it runs once the row is fixed
