"""Dashboard: counts by status, throughput over the last hour, per-type table, workers."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Sparkline, Static

from haosq.durations import format_duration
from haosq.tui.data import Activity, Dashboard, type_rows
from haosq.tui.format import count, percent, plain
from haosq.tui.screens.base import HaosqScreen
from haosq.tui.widgets.status_counts import StatusCounts

TYPE_COLUMNS = ("Type", "Pending", "Running", "Done", "Failed", "Success", "Mean", "p95")


class DashboardScreen(HaosqScreen):
    TITLE = "Dashboard"

    def __init__(self) -> None:
        super().__init__()
        self.counts: Dashboard | None = None
        self.activity: Activity | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield from self.compose_banner()
        yield StatusCounts(id="status-counts")
        with Horizontal(id="dash-middle"):
            with Vertical(id="throughput", classes="panel") as throughput:
                throughput.border_title = "Throughput · last hour"
                yield Static("", id="throughput-completed-label")
                yield Sparkline([0] * 60, id="spark-completed")
                yield Static("", id="throughput-failed-label")
                yield Sparkline([0] * 60, id="spark-failed")
            with Vertical(id="workers-summary", classes="panel") as workers:
                workers.border_title = "Workers"
                yield Static("", id="workers-text")
        table: DataTable[str | Text] = DataTable(id="types-table", cursor_type="row", zebra_stripes=True)
        table.border_title = "Job types · success, mean and p95 over the last hour"
        yield table
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self._show_types()

    def refresh_data(self) -> None:
        # Two loads: the counters answer in milliseconds whatever the history; the last hour's
        # activity takes longer on a busy queue and fills in when it arrives.
        source = self.haosq.source
        self.load(source.dashboard, self.show, group="counts")
        self.load(source.activity, self.show_activity, group="activity")

    def show(self, data: Dashboard) -> None:
        self.counts = data
        self.query_one(StatusCounts).show(data.by_status)
        oldest = data.oldest_pending_seconds
        workers = Text.assemble(
            ("alive  ", "dim"), (f"{data.workers_alive:<4}", "bold green"),
            ("dead  ", "dim"), (str(data.workers_dead), "bold red" if data.workers_dead else "bold"),
            "\n",
            ("busy   ", "dim"), (f"{data.busy}", "bold yellow"), (f" of {data.slots} slots", "dim"),
            "\n",
            ("oldest pending  ", "dim"),
            (format_duration(oldest) if oldest is not None else "none",
             "bold red" if oldest is not None and oldest > 300 else "bold"),
        )
        self.query_one("#workers-text", Static).update(workers)
        self._show_types()

    def show_activity(self, data: Activity) -> None:
        self.activity = data
        self.query_one("#spark-completed", Sparkline).data = [float(v) for v in data.completed_per_minute]
        self.query_one("#spark-failed", Sparkline).data = [float(v) for v in data.failed_per_minute]
        peak_done = max(data.completed_per_minute)
        peak_failed = max(data.failed_per_minute)
        self.query_one("#throughput-completed-label", Static).update(Text.assemble(
            ("completed ", "green"), (count(data.completed_last_hour), "bold"),
            (f"   peak {count(peak_done)}/min", "dim"),
        ))
        self.query_one("#throughput-failed-label", Static).update(Text.assemble(
            ("failed    ", "red"), (count(data.failed_last_hour), "bold"),
            (f"   peak {count(peak_failed)}/min", "dim"),
        ))
        self._show_types()

    def _show_types(self) -> None:
        table = self.query_one("#types-table", DataTable)
        cursor = table.cursor_row
        rows = []
        for row in type_rows(self.counts, self.activity):
            rate = row.success_rate
            rate_style = ("" if rate is None else "green" if rate >= 0.99
                          else "yellow" if rate >= 0.9 else "red")
            rows.append((row.type, (
                plain(row.type),
                Text(count(row.counts.get("pending", 0))),
                Text(count(row.counts.get("processing", 0))),
                Text(count(row.counts.get("completed", 0))),
                Text(count(row.counts.get("failed", 0)), style="red" if row.counts.get("failed") else ""),
                Text(percent(rate), style=rate_style),
                Text(format_duration(row.mean_seconds)),
                Text(format_duration(row.p95_seconds)),
            )))
        # Columns get explicit widths from their content: the table is refilled by two loads
        # that may land in the same frame, and auto widths would then depend on that timing.
        table.clear(columns=True)
        for index, label in enumerate(TYPE_COLUMNS):
            width = max([len(label), *(cells[index].cell_len for _, cells in rows)])
            table.add_column(label, key=label, width=width)
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)
