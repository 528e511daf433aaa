"""Every screen shows stored data literally: markup stays text, escape sequences are made
visible, and a row Python cannot load (infinity, year 10000, a 5,000-digit number) neither
breaks a screen nor hides the rows around it."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console
from textual.content import Content
from textual.widgets import DataTable, Input, Static
from textual.widgets._data_table import default_cell_formatter

from haosq.tui.screens.confirm import ConfirmScreen
from haosq.tui.screens.dashboard import DashboardScreen
from haosq.tui.screens.detail import JobDetailScreen
from haosq.tui.screens.jobs import JobsScreen
from haosq.tui.screens.new_job import NewJobScreen
from haosq.tui.screens.schedules import SchedulesScreen
from haosq.tui.screens.workers import WorkersScreen
from tests.badinput.hostile import (
    CLOSE,
    ESCAPE,
    ESCAPE_SHOWN,
    HOSTILE,
    LINK,
    LOG_LINE,
    MARKUP,
    insert_hostile_rows,
    raw_escape_in,
)
from tests.tui.conftest import settle

pytestmark = pytest.mark.anyio
HOSTILE_SHOWN = HOSTILE.replace(ESCAPE, ESCAPE_SHOWN)


@pytest.fixture
def hostile(conn) -> dict[str, int]:
    return insert_hostile_rows(conn)


def table_text(table: DataTable) -> str:
    """Every cell as the table renders it (a str cell is parsed as markup there)."""
    return "\n".join(" | ".join(default_cell_formatter(cell).plain for cell in row)
                     for row in (table.get_row_at(i) for i in range(table.row_count)))


def static_text(screen: Any, selector: str) -> str:
    """What a Static shows (a str given to it is parsed as markup when it renders)."""
    content = screen.query_one(selector, Static).content
    if isinstance(content, str):
        return str(Content.from_markup(content))
    if isinstance(content, Content):
        return str(content)
    console = Console(width=400, color_system=None, legacy_windows=False)
    with console.capture() as captured:
        console.print(content)
    return captured.get()


def assert_literal(text: str, *expected: str) -> None:
    assert not raw_escape_in(text), text
    for item in expected:
        assert item in text, f"{item!r} not shown in:\n{text}"


async def open_screen(pilot: Any, key: str, kind: type) -> Any:
    await settle(pilot)
    await pilot.press(key)
    await settle(pilot)
    assert isinstance(pilot.app.screen, kind)
    return pilot.app.screen


async def test_jobs_screen_shows_hostile_rows_literally(make_app, hostile) -> None:
    app = make_app()
    async with app.run_test(size=(200, 40)) as pilot:
        screen = await open_screen(pilot, "j", JobsScreen)
        assert set(hostile.values()) <= set(screen.order)  # no row hides the others
        text = table_text(screen.table)
        assert_literal(text, f"RuntimeError: {HOSTILE_SHOWN}", f"demo:{HOSTILE_SHOWN}"[:16])
        assert_literal(text, "-infinity")  # created_at of the "times" job


@pytest.mark.parametrize("name", ["markup", "times", "numbers", "type"])
async def test_job_detail_renders_every_stored_value(make_app, hostile, name) -> None:
    app = make_app()
    async with app.run_test(size=(200, 60)) as pilot:
        jobs = await open_screen(pilot, "j", JobsScreen)
        jobs.table.move_cursor(row=jobs.order.index(hostile[name]), animate=False)
        await pilot.press("enter")
        await settle(pilot)
        detail = app.screen
        assert isinstance(detail, JobDetailScreen)
        assert detail.job is not None and detail.job.id == hostile[name]
        fields = static_text(detail, "#detail-fields")
        payload = static_text(detail, "#detail-payload")
        assert_literal(fields + payload + static_text(detail, "#detail-result")
                       + static_text(detail, "#detail-error") + static_text(detail, "#detail-attempts")
                       + str(app.format_title(detail.title or "", detail.sub_title or "")))
        logs = "\n".join(line.text for line in detail.query_one("#detail-logs").lines)
        assert not raw_escape_in(logs)
        if name == "markup":
            assert_literal(fields, f"{CLOSE}{ESCAPE_SHOWN}", *MARKUP)
            assert_literal(payload, "[bold]b [/] [link=https://x]click \\u001b[31mred")
            assert_literal(static_text(detail, "#detail-error"), f"RuntimeError: {HOSTILE_SHOWN}")
            assert_literal(logs, LOG_LINE.replace(ESCAPE, ESCAPE_SHOWN), f"plain {ESCAPE_SHOWN} line")
            assert_literal(static_text(detail, "#detail-attempts"), LOG_LINE.replace(ESCAPE, ESCAPE_SHOWN))
        if name == "times":
            assert_literal(fields, "infinity", "-infinity", "10000-01-01 00:00:00+00",
                           "0044-03-15 00:00:00+00 BC")
        if name == "numbers":
            assert "9" * 5000 in "".join(payload.split())


async def test_workers_schedules_and_dashboard_render(make_app, hostile) -> None:
    app = make_app()
    async with app.run_test(size=(200, 40)) as pilot:
        dashboard = app.screen
        await settle(pilot)
        assert isinstance(dashboard, DashboardScreen)
        assert_literal(table_text(dashboard.query_one("#types-table", DataTable)),
                       f"demo:{HOSTILE_SHOWN}"[:20])
        workers = await open_screen(pilot, "w", WorkersScreen)
        assert_literal(table_text(workers.query_one("#workers-table", DataTable)),
                       f"[bold]worker{ESCAPE_SHOWN}"[:12], f"{LINK}host"[:16], "infinity")
        schedules = await open_screen(pilot, "4", SchedulesScreen)
        text = table_text(schedules.query_one("#schedules-table", DataTable))
        assert_literal(text, f"[bold]sched{ESCAPE_SHOWN}"[:18], f"{CLOSE} * * * *", "forever", "never")


async def test_filter_confirmation_and_notifications_show_markup_as_text(make_app, hostile) -> None:
    app = make_app()
    async with app.run_test(size=(200, 40)) as pilot:
        screen = await open_screen(pilot, "j", JobsScreen)
        await pilot.press("slash")
        await settle(pilot)
        app.screen.query_one("#filter-tag", Input).value = LINK
        await pilot.press("enter")
        await settle(pilot)
        assert screen.order == [hostile["markup"]]
        assert_literal(static_text(screen, "#jobs-status"), f"tag={LINK}")
        await pilot.press("R")
        await settle(pilot)
        confirm = app.screen
        assert isinstance(confirm, ConfirmScreen)
        assert_literal(static_text(confirm, "#confirm-question"), f"matching tag={LINK}")
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("slash")
        await settle(pilot)
        app.screen.query_one("#filter-tag", Input).value = f"{CLOSE}nothing"
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        # A toast parses its message as markup unless the notification says otherwise.
        shown = [n.message for n in app._notifications if not n.markup]
        assert any(f"tag={CLOSE}nothing" in message for message in shown), list(app._notifications)


async def test_new_job_hints_and_errors_show_input_as_text(make_app, hostile) -> None:
    app = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await open_screen(pilot, "j", JobsScreen)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, NewJobScreen)
        form.query_one("#field-type", Input).value = f"x:{CLOSE}"
        form.query_one("#field-tags", Input).value = f"{'t' * 101}{CLOSE}"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert_literal(static_text(form, "#error-type"), f"'x:{CLOSE}'")
        assert_literal(static_text(form, "#error-tags"), CLOSE)
