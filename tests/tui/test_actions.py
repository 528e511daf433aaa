"""Pilot tests: drive each action with keys against a real database and check what changed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from textual.widgets import Input, Select, Static, TextArea

from haosq.tui.screens.confirm import ConfirmScreen
from haosq.tui.screens.detail import JobDetailScreen
from haosq.tui.screens.jobs import JobsScreen
from haosq.tui.screens.new_job import NewJobScreen
from tests.tui.conftest import settle

pytestmark = pytest.mark.anyio


def status_of(conn: psycopg.Connection, job_id: int) -> str:
    return conn.execute("SELECT status FROM haosq.jobs WHERE id = %s", (job_id,)).fetchone()["status"]


def job_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) AS n FROM haosq.jobs").fetchone()["n"]


async def open_jobs(pilot: Any) -> JobsScreen:
    await settle(pilot)
    await pilot.press("j")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, JobsScreen)
    return screen


def cursor_to(screen: JobsScreen, job_id: int) -> None:
    screen.table.move_cursor(row=screen.order.index(job_id), animate=False)


async def test_retry_a_failed_job(make_app, fixed_data, conn) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_jobs(pilot)
        cursor_to(screen, fixed_data["failed"])
        await pilot.press("r")
        await settle(pilot)
    assert status_of(conn, fixed_data["failed"]) == "pending"
    assert status_of(conn, fixed_data["failed2"]) == "failed"


async def test_cancel_asks_then_cancels(make_app, fixed_data, conn) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_jobs(pilot)
        cursor_to(screen, fixed_data["pending"])
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert status_of(conn, fixed_data["pending"]) == "pending"
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
    assert status_of(conn, fixed_data["pending"]) == "cancelled"


async def test_detail_retry_and_masked_payload(make_app, fixed_data, conn) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_jobs(pilot)
        cursor_to(screen, fixed_data["failed"])
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, JobDetailScreen)
        payload = str(app.screen.query_one("#detail-payload", Static).render())
        assert "hunter2" not in payload and "Bearer" not in payload
        assert "nobody@example.com" in payload
        await pilot.press("r")
        await settle(pilot)
    assert status_of(conn, fixed_data["failed"]) == "pending"


async def test_new_job_validates_inline_then_enqueues(make_app, fixed_data, conn) -> None:
    before = job_count(conn)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_jobs(pilot)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, NewJobScreen)
        form.query_one("#field-type", Input).value = "Not A Type"
        form.query_one("#field-payload", TextArea).text = '{"to": '
        form.query_one("#field-priority", Input).value = "5000"
        await pilot.press("ctrl+s")
        await settle(pilot)
        errors = {name: str(form.query_one(f"#error-{name}", Static).render())
                  for name in ("type", "payload", "priority")}
        assert "invalid job type" in errors["type"]
        assert "invalid JSON" in errors["payload"]
        assert "invalid priority" in errors["priority"]
        assert job_count(conn) == before
        form.query_one("#field-type", Input).value = "email:send"
        form.query_one("#field-payload", TextArea).text = '{"to": "a@example.com"}'
        form.query_one("#field-priority", Input).value = "7"
        form.query_one("#field-tags", Input).value = "welcome, tui"
        form.query_one("#field-max_attempts", Input).value = "2"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, NewJobScreen)
    row = conn.execute("SELECT * FROM haosq.jobs ORDER BY id DESC LIMIT 1").fetchone()
    assert job_count(conn) == before + 1
    assert (row["type"], row["payload"], row["priority"], row["tags"], row["max_attempts"]) == (
        "email:send", {"to": "a@example.com"}, 7, ["welcome", "tui"], 2)


async def test_bulk_retry_of_selected_rows(make_app, fixed_data, conn) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_jobs(pilot)
        for key in ("failed", "failed2"):
            cursor_to(screen, fixed_data[key])
            await pilot.press("space")
        assert screen.selected == {fixed_data["failed"], fixed_data["failed2"]}
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "2 selected jobs" in app.screen.question
        await pilot.press("y")
        await settle(pilot)
    assert status_of(conn, fixed_data["failed"]) == "pending"
    assert status_of(conn, fixed_data["failed2"]) == "pending"


async def test_filter_then_bulk_cancel_everything_matching(make_app, fixed_data, conn) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_jobs(pilot)
        await pilot.press("slash")
        await settle(pilot)
        app.screen.query_one("#filter-type", Input).value = "notify"
        await pilot.press("enter")
        await settle(pilot)
        assert {screen.jobs[i].type for i in screen.order} == {"notify:push"}
        assert len(screen.order) == 2
        await pilot.press("C")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "all 1 pending or processing job matching type=notify" in app.screen.question
        await pilot.press("y")
        await settle(pilot)
    assert status_of(conn, fixed_data["pending2"]) == "cancelled"
    assert status_of(conn, fixed_data["pending"]) == "pending"  # email:send, outside the filter


async def test_filter_by_status_and_bulk_retry_counts(make_app, fixed_data, conn) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_jobs(pilot)
        await pilot.press("slash")
        await settle(pilot)
        app.screen.query_one("#filter-status", Select).value = "failed"
        app.screen.query_one("#filter-search", Input).value = "mailbox"
        await pilot.press("enter")
        await settle(pilot)
        assert screen.order == [fixed_data["failed"]]
        await pilot.press("R")
        await settle(pilot)
        assert "all 1 failed job matching status=failed text='mailbox'" in app.screen.question
        await pilot.press("y")
        await settle(pilot)
    assert status_of(conn, fixed_data["failed"]) == "pending"
    assert status_of(conn, fixed_data["failed2"]) == "failed"


async def test_invalid_filter_is_shown_inline(make_app, fixed_data) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_jobs(pilot)
        await pilot.press("slash")
        await settle(pilot)
        app.screen.query_one("#filter-type", Input).value = "Bad Type!"
        await pilot.press("enter")
        await settle(pilot)
        assert "invalid type filter" in str(app.screen.query_one("#filter-error", Static).render())


async def test_cleanup_dead_workers(make_app, fixed_data, conn) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
    statuses = {r["worker_id"]: r["status"] for r in conn.execute(
        "SELECT worker_id, status FROM haosq.workers")}
    # bravo-1 is silent for longer than the (real-time) timeout; alpha-1 too, since the data
    # set's heartbeats are in the past: every live row is older than 60 s of wall time.
    assert statuses["bravo-1"] == "dead"
    assert statuses["charlie-1"] == "dead"


async def test_read_only_hides_actions_and_changes_nothing(make_app, fixed_data, conn, database_url,
                                                           make_settings) -> None:
    import uuid

    from psycopg import sql

    role = f"haosq_tui_reader_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA haosq TO {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA haosq TO {}").format(sql.Identifier(role)))
    reader_url = psycopg.conninfo.make_conninfo(database_url, user=role)
    try:
        app = make_app(read_only=True, app_settings=make_settings(HAOSQ_DATABASE_URL=reader_url))
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_jobs(pilot)
            assert app.db_error is None
            assert fixed_data["failed"] in screen.order
            cursor_to(screen, fixed_data["failed"])
            await pilot.press("r", "R", "n", "c")
            await settle(pilot)
            assert isinstance(app.screen, JobsScreen)
            shown = {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
            assert not shown & {"retry", "cancel", "bulk_retry", "bulk_cancel", "new_job"}
        assert status_of(conn, fixed_data["failed"]) == "failed"
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

def schedule_state(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    return conn.execute("SELECT enabled, last_job_id FROM haosq.schedules WHERE name = %s",
                        (name,)).fetchone()


async def open_schedules(pilot: Any, name: str) -> None:
    from haosq.tui.screens.schedules import SchedulesScreen

    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, SchedulesScreen)
    names = [s.name for s in screen.schedules]
    screen.query_one("#schedules-table").move_cursor(row=names.index(name), animate=False)


async def test_schedules_disable_enable_and_run_now(make_app, fixed_data, conn) -> None:
    before = job_count(conn)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_schedules(pilot, "nightly-prune")
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert schedule_state(conn, "nightly-prune")["enabled"] is False
        await open_schedules(pilot, "weekly-report")
        await pilot.press("e")
        await settle(pilot)
        assert schedule_state(conn, "weekly-report")["enabled"] is True
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
    assert job_count(conn) == before + 1
    newest = conn.execute("SELECT type FROM haosq.jobs ORDER BY id DESC LIMIT 1").fetchone()
    assert newest["type"] == "report:weekly"


async def wait_until(pilot: Any, condition: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


async def test_logs_stream_live_on_notify(make_app, fixed_data, conn) -> None:
    from textual.widgets import RichLog

    app = make_app(live=True)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_jobs(pilot)
        cursor_to(screen, fixed_data["processing"])
        await pilot.press("enter")
        await settle(pilot)
        log = app.screen.query_one("#detail-logs", RichLog)
        assert "decoding /srv/media/cat.jpg" in "\n".join(line.text for line in log.lines)
        conn.execute("INSERT INTO haosq.job_logs (job_id, attempt, level, message)"
                     " VALUES (%s, 1, 'info', 'wrote 64px thumbnail')", (fixed_data["processing"],))
        conn.execute("SELECT pg_notify('haosq_events', 'log')")
        await wait_until(pilot, lambda: "wrote 64px thumbnail" in "\n".join(
            line.text for line in log.lines))


async def test_lost_connection_shows_banner_and_recovers(make_app, fixed_data, conn) -> None:
    from haosq.tui.screens.base import ConnectionBanner

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.db_error is None
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        app.request_refresh(True)
        await wait_until(pilot, lambda: app.db_error is not None)
        banner = app.screen.query_one(ConnectionBanner)
        assert banner.has_class("-visible")
        assert "Database unreachable" in str(banner.render())
        await wait_until(pilot, lambda: app.db_error is None)
        assert not banner.has_class("-visible")


async def test_command_palette_lists_actions_and_respects_read_only(make_app, fixed_data) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_jobs(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"Retry", "Cancel", "Retry all", "Cancel all", "New", "Filter", "Go to workers",
                "Go to schedules", "Help"} <= titles
    read_only = make_app(read_only=True)
    async with read_only.run_test(size=(120, 40)) as pilot:
        await open_jobs(pilot)
        titles = {command.title for command in read_only.get_system_commands(read_only.screen)}
        assert "Filter" in titles
        assert not titles & {"Retry", "Cancel", "Retry all", "Cancel all", "New"}


async def test_sort_orders(make_app, fixed_data) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_jobs(pilot)
        newest = list(screen.order)
        assert newest == sorted(newest, reverse=True)
        await pilot.press("s")
        await settle(pilot)
        assert screen.order == sorted(newest)
        await pilot.press("s")
        await settle(pilot)
        assert screen.order[0] == fixed_data["pending"]  # the only job with priority 5
        await pilot.press("s")
        await settle(pilot)
        assert screen.order[0] == fixed_data["processing"]
        assert "by status" in str(screen.query_one("#jobs-status", Static).render())
        for _ in range(3):
            await pilot.press("s")
            await settle(pilot)
        assert screen.order == newest


def test_estimates_come_from_the_counters(make_app, fixed_data, conn) -> None:
    from haosq.db.queries.jobs import JobFilter

    source = make_app().source
    try:
        for job_filter in (JobFilter(), JobFilter(status="failed"), JobFilter(type="email"),
                           JobFilter(type="files:thumbnail", status="completed")):
            where, params = job_filter.where()
            exact = conn.execute(f"SELECT count(*) AS n FROM haosq.jobs WHERE {where.as_string(conn)}",
                                 params).fetchone()["n"]
            assert source.estimate(job_filter) == exact, job_filter
        # Scheduled versus pending is decided on the app's (frozen) clock: one job is due
        # tomorrow, two are waiting.
        assert source.estimate(JobFilter(status="scheduled")) == 1
        assert source.estimate(JobFilter(status="pending")) == 2
        assert source.estimate(JobFilter(tag="images")) is None
    finally:
        source.close()
