"""The look of every screen at 80x24 and 160x48, with fixed data and a frozen clock.

The SVG files under __snapshots__ are the reviewed spec of the look; after a deliberate
change, regenerate them with `pytest tests/tui --snapshot-update` and review the diff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from textual.pilot import Pilot

from haosq.tui.screens.jobs import JobsScreen
from tests.tui.conftest import settle

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


async def dashboard(pilot: Pilot) -> None:
    await settle(pilot)


async def jobs(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("j")
    await settle(pilot)


def cursor_to(pilot: Pilot, job_id: int) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, JobsScreen)
    screen.table.move_cursor(row=screen.order.index(job_id), animate=False)


def detail(ids: dict[str, int]) -> Callable[[Pilot], Awaitable[None]]:
    async def run(pilot: Pilot) -> None:
        await jobs(pilot)
        cursor_to(pilot, ids["failed"])
        await pilot.press("enter")
        await settle(pilot)

    return run


async def workers(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("w")
    await settle(pilot)


async def schedules(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)


async def new_job_invalid(pilot: Pilot) -> None:
    await jobs(pilot)
    await pilot.press("n")
    await settle(pilot)
    await pilot.press(*"Email send")
    await pilot.press("tab", "ctrl+a", *'{"to": ', "tab", "ctrl+s")
    await settle(pilot)


async def help_screen(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("question_mark")
    await settle(pilot)


async def filter_dialog(pilot: Pilot) -> None:
    await jobs(pilot)
    await pilot.press("slash")
    await settle(pilot)
    await pilot.press(*"email")


async def bulk_confirmation(pilot: Pilot) -> None:
    await jobs(pilot)
    await pilot.press("R")
    await settle(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=dashboard)


@pytest.mark.parametrize("size", SIZES)
def test_jobs(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=jobs)


@pytest.mark.parametrize("size", SIZES)
def test_job_detail(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=detail(fixed_data))


@pytest.mark.parametrize("size", SIZES)
def test_workers(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=workers)


@pytest.mark.parametrize("size", SIZES)
def test_schedules(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=schedules)


@pytest.mark.parametrize("size", SIZES)
def test_new_job_form_with_errors(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=new_job_invalid)


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=help_screen)


@pytest.mark.parametrize("size", SIZES)
def test_filter(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=filter_dialog)


@pytest.mark.parametrize("size", SIZES)
def test_bulk_confirmation(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=bulk_confirmation)


@pytest.mark.parametrize("size", SIZES)
def test_read_only_jobs(snap_compare, make_app, fixed_data, size) -> None:
    assert snap_compare(make_app(read_only=True), terminal_size=size, run_before=jobs)
