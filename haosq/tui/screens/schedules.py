"""Schedules: recurring jobs with their trigger, next and last run; enable, disable, run now."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from haosq.tui.format import STATUS_STYLE, age, local_time, plain
from haosq.tui.screens.base import HaosqScreen
from haosq.tui.screens.confirm import ConfirmScreen

COLUMNS = (("Name", 18), ("Type", 14), ("Trigger", 13), ("On", 3), ("Next run", 11), ("In", 7),
           ("Last run", 11), ("Last job", 14))


class SchedulesScreen(HaosqScreen):
    TITLE = "Schedules"
    BINDINGS = [
        Binding("e", "toggle_schedule", "Enable/disable"),
        Binding("x", "run_schedule", "Run now"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.schedules: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield from self.compose_banner()
        yield Static("", id="schedules-status")
        yield DataTable(id="schedules-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#schedules-table", DataTable)
        for label, width in COLUMNS:
            table.add_column(label, key=label, width=width)

    def refresh_data(self) -> None:
        self.load(self.haosq.source.schedules, self.show)

    def show(self, schedules: list[Any]) -> None:
        self.schedules = schedules
        now = self.haosq.clock.now()
        year = f"{now.astimezone():%Y}-"

        def short(value: Any) -> str:
            return local_time(value, seconds=False).removeprefix(year)

        table = self.query_one("#schedules-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for item in schedules:
            outcome = item.last_outcome or "-"
            last_job = f"{item.last_job_id} " if item.last_job_id else ""
            table.add_row(
                plain(item.name, "bold" if item.enabled else "dim"),
                plain(item.type),
                plain(item.every),
                Text("yes", style="green") if item.enabled else Text("no", style="bright_black"),
                plain(short(item.next_due_at)) if item.enabled else Text("disabled", style="dim"),
                plain(age(now, item.next_due_at).removeprefix("in ") if item.enabled else "-"),
                plain(short(item.last_due_at)),
                plain(f"{last_job}{outcome}", STATUS_STYLE.get(outcome, "")),
                key=item.name,
            )
        if table.row_count:
            table.move_cursor(row=min(max(cursor, 0), table.row_count - 1), animate=False)
        enabled = sum(1 for s in schedules if s.enabled)
        self.query_one("#schedules-status", Static).update(plain(
            f"{len(schedules)} schedules · {enabled} enabled · times in local time"))

    def _current(self) -> Any | None:
        table = self.query_one("#schedules-table", DataTable)
        if not self.schedules or not 0 <= table.cursor_row < len(self.schedules):
            return None
        return self.schedules[table.cursor_row]

    def action_toggle_schedule(self) -> None:
        current = self._current()
        if current is None:
            return
        source, name, enable = self.haosq.source, current.name, not current.enabled

        def perform() -> Any:
            return source.queue.set_schedule_enabled(name, enable)

        if enable:
            self.act(perform, lambda _: f"Schedule {name} enabled")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(perform, lambda _: f"Schedule {name} disabled")

        self.app.push_screen(ConfirmScreen(
            f"Disable schedule {name}? It enqueues nothing until enabled again.",
            confirm_label="Disable"), answered)

    def action_run_schedule(self) -> None:
        current = self._current()
        if current is None:
            return
        source, name = self.haosq.source, current.name

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(lambda: source.queue.run_schedule_now(name),
                         lambda job: f"Schedule {name}: enqueued job {job.id}")

        self.app.push_screen(ConfirmScreen(
            f"Run schedule {name} now ({current.type})? Its timetable stays as it is.",
            confirm_label="Run now", danger=False), answered)
