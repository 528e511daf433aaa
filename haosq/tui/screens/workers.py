"""Workers: every daemon process, its slots, counters and heartbeat; clean up dead ones."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from haosq.durations import format_duration
from haosq.tui.data import WorkersView
from haosq.tui.format import age, count, plain
from haosq.tui.screens.base import HaosqScreen
from haosq.tui.screens.confirm import ConfirmScreen

# The most telling columns first, so that 80 columns show them.
COLUMNS = (("Worker", 12), ("Status", 7), ("Heartbeat", 9), ("Slots", 5), ("Current jobs", 14),
           ("Host", 16), ("PID", 7), ("Types", 14), ("Processed", 9), ("OK", 9), ("Failed", 7))
STATUS_STYLE = {"active": "green", "stopping": "yellow", "stopped": "bright_black", "dead": "red"}


class WorkersScreen(HaosqScreen):
    TITLE = "Workers"
    BINDINGS = [Binding("x", "cleanup_workers", "Clean up dead")]

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield from self.compose_banner()
        yield Static("", id="workers-status")
        yield DataTable(id="workers-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#workers-table", DataTable)
        for label, width in COLUMNS:
            table.add_column(label, key=label, width=width)

    def refresh_data(self) -> None:
        self.load(self.haosq.source.workers, self.show)

    def show(self, view: WorkersView) -> None:
        table = self.query_one("#workers-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        stale_count = 0
        for worker in view.workers:
            stale = view.is_stale(worker)
            stale_count += stale
            status = "stale" if stale else worker.status
            jobs = view.current_jobs.get(worker.token, [])
            heartbeat = age(view.now, worker.last_heartbeat)
            table.add_row(
                plain(worker.worker_id, "bold" if worker.status == "active" else "dim"),
                plain(status, "bold red" if stale else STATUS_STYLE.get(worker.status, "")),
                plain(heartbeat, "bold red reverse" if stale else ""),
                plain(f"{len(jobs)}/{worker.concurrency}"),
                plain(" ".join(str(j) for j in jobs) or "-"),
                plain(worker.hostname),
                plain(worker.pid),
                plain(",".join(worker.job_types) or "all"),
                plain(count(worker.jobs_processed)),
                plain(count(worker.jobs_succeeded)),
                plain(count(worker.jobs_failed), "red" if worker.jobs_failed else ""),
                key=worker.token,
            )
        if table.row_count:
            table.move_cursor(row=min(max(cursor, 0), table.row_count - 1), animate=False)
        alive = sum(1 for w in view.workers if w.status in ("active", "stopping") and not view.is_stale(w))
        self.query_one("#workers-status", Static).update(plain(
            f"{alive} alive · {stale_count} stale · {len(view.workers)} listed · "
            f"stale after {format_duration(view.stale_after.total_seconds())} without a heartbeat"
        ))

    def action_cleanup_workers(self) -> None:
        source = self.haosq.source

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(source.cleanup_dead_workers,
                         lambda result: f"{len(result[0])} worker(s) marked dead, "
                                        f"{result[1]} job(s) rescued")

        self.app.push_screen(ConfirmScreen(
            "Mark workers silent for longer than "
            f"{format_duration(source.stale_after.total_seconds())} dead and send their jobs back "
            "to the queue?", confirm_label="Clean up"), answered)
