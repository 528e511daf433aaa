"""Jobs: a keyset-paged table (pages load as the cursor nears the end), filters, actions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from haosq.db.queries.jobs import JobFilter
from haosq.models import Job
from haosq.tui.format import STATUS_STYLE, local_time, plain, shown_error
from haosq.tui.screens.base import HaosqScreen
from haosq.tui.screens.confirm import ConfirmScreen
from haosq.tui.screens.filter import FilterScreen, describe_filter

PAGE = 200
# Live refresh re-reads the rows on screen from the top; past this many, it waits for `g`.
LIVE_ROWS = 1000
# The widths of the other columns, their cell padding and the scrollbar.
FIXED_WIDTH = 1 + 7 + 16 + 10 + 3 + 4 + 14 + 8 * 2 + 4


# `s` cycles through these orders: the first two page through the whole table by id (keyset);
# the others sort the rows loaded so far.
ORDERS: tuple[tuple[str, str], ...] = (
    ("newest", "newest first"), ("oldest", "oldest first"), ("priority", "by priority (loaded rows)"),
    ("status", "by status (loaded rows)"), ("type", "by type (loaded rows)"),
    ("attempts", "by attempts (loaded rows)"),
)
STATUS_ORDER = {s: i for i, s in enumerate(
    ("processing", "pending", "scheduled", "failed", "cancelled", "completed"))}


def job_status(job: Job, now: datetime) -> str:
    return "scheduled" if job.is_scheduled(now) else str(job.status)


class JobsScreen(HaosqScreen):
    TITLE = "Jobs"
    BINDINGS = [
        Binding("enter", "open", "Detail", show=False),
        Binding("r", "retry", "Retry"),
        Binding("c", "cancel", "Cancel"),
        Binding("space", "toggle_select", "Select"),
        Binding("R", "bulk_retry", "Retry all"),
        Binding("C", "bulk_cancel", "Cancel all"),
        Binding("n", "new_job", "New"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("g", "reload", "Top", show=False),
        Binding("escape", "clear_selection", "Unselect", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.job_filter = JobFilter()
        self.oldest_first = False
        self.order_name = "newest"
        self.total: int | None = None
        self.jobs: dict[int, Job] = {}
        self.order: list[int] = []
        self.selected: set[int] = set()
        self.exhausted = False
        self.loading_more = False
        self.types: list[str] | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield from self.compose_banner()
        yield Static("", id="jobs-status")
        table: DataTable[str | Text] = DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#jobs-table", DataTable)
        table.add_column(" ", key="mark", width=1)
        table.add_column("ID", key="id", width=7)
        table.add_column("Type", key="type", width=16)
        table.add_column("Status", key="status", width=10)
        table.add_column("Pri", key="priority", width=3)
        table.add_column("Try", key="attempts", width=4)
        table.add_column("Created", key="created", width=14)
        table.add_column("Error or tags", key="info", width=max(8, self.app.size.width - FIXED_WIDTH))
        self.watch(table, "scroll_y", self._scrolled, init=False)

    def _with_types(self, then: Callable[[list[str]], None]) -> None:
        """Call `then` with the job types for completion, loaded on first use: importing the
        handler modules takes a moment that the first paint of the table should not wait for."""
        if self.types is not None:
            then(self.types)
            return

        def loaded(types: list[str]) -> None:
            self.types = types
            then(types)

        self.load(self.haosq.source.job_types, loaded, group="types")

    # -- loading -----------------------------------------------------------------------

    @property
    def table(self) -> DataTable[str | Text]:
        return self.query_one("#jobs-table", DataTable)

    def refresh_data(self) -> None:
        if self.table.cursor_row >= PAGE and len(self.order) > PAGE:
            self._show_status(paused=True)
            return
        limit = max(PAGE, min(len(self.order), LIVE_ROWS))
        job_filter, oldest_first = self.job_filter, self.oldest_first
        source = self.haosq.source

        def fetch() -> tuple[list[Job], int | None]:
            return (source.jobs(job_filter, limit=limit, oldest_first=oldest_first),
                    source.estimate(job_filter))

        def apply(result: tuple[list[Job], int | None]) -> None:
            self.total = result[1]
            self._replace(result[0], limit)

        self.load(fetch, apply)

    def _replace(self, jobs: list[Job], limit: int) -> None:
        """Show a fresh first stretch of the table, keeping the cursor on the same job."""
        fresh = [(j.id, j.status, j.attempts, j.updated_at) for j in jobs]
        current = [(self.jobs[i].id, self.jobs[i].status, self.jobs[i].attempts,
                    self.jobs[i].updated_at) for i in self.order[:limit]]
        self.exhausted = len(jobs) < limit
        if fresh == current and len(self.order) <= limit:
            self._show_status()
            return
        table = self.table
        keep = self._cursor_id()
        table.clear()
        self.jobs, self.order = {}, []
        self._append(jobs)
        self._apply_order()
        if keep is not None and keep in self.jobs:
            table.move_cursor(row=self.order.index(keep), animate=False)
        self._show_status()

    def _append(self, jobs: Sequence[Job]) -> None:
        now = self.haosq.clock.now()
        table = self.table
        for job in jobs:
            if job.id in self.jobs:
                continue
            self.jobs[job.id] = job
            self.order.append(job.id)
            table.add_row(*self._cells(job, now), key=str(job.id))

    def _cells(self, job: Job, now: datetime) -> list[str | Text]:
        status = job_status(job, now)
        info = (plain(shown_error(job.error, first_line=True), "red") if job.error
                else plain(" ".join(f"#{t}" for t in job.tags), "dim"))
        return [
            Text("●", style="bold magenta") if job.id in self.selected else Text(" "),
            plain(job.id, "bold"),
            plain(job.type),
            plain(status, STATUS_STYLE.get(status, "")),
            plain(job.priority),
            plain(f"{job.attempts}/{job.max_attempts or '-'}"),
            plain(local_time(job.created_at).removeprefix(f"{now.astimezone():%Y}-")),
            info,
        ]

    def _load_more(self) -> None:
        if self.exhausted or self.loading_more or not self.order:
            return
        self.loading_more = True
        job_filter, oldest_first, last = self.job_filter, self.oldest_first, self.order[-1]

        def apply(jobs: list[Job]) -> None:
            self.loading_more = False
            self.exhausted = len(jobs) < PAGE
            self._append(jobs)
            self._apply_order()
            self._show_status()

        self.load(lambda: self.haosq.source.jobs(job_filter, after_id=last, limit=PAGE,
                                                 oldest_first=oldest_first),
                  apply, group="more")

    def _scrolled(self, scroll_y: float) -> None:
        table = self.table
        if scroll_y + table.size.height >= table.virtual_size.height - PAGE // 4:
            self._load_more()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row >= len(self.order) - PAGE // 4:
            self._load_more()

    def _show_status(self, *, paused: bool = False) -> None:
        loaded = f"{len(self.order):,}{'' if self.exhausted else '+'} jobs loaded"
        if self.total is not None and not self.exhausted:
            loaded += f" of {self.total:,}"
        parts = [describe_filter(self.job_filter), loaded, dict(ORDERS)[self.order_name]]
        if self.selected:
            parts.append(f"{len(self.selected)} selected")
        if paused:
            parts.append("live paused (g: back to top)")
        self.query_one("#jobs-status", Static).update(plain(" · ".join(parts)))

    def _cursor_id(self) -> int | None:
        table = self.table
        if not self.order or table.cursor_row < 0 or table.cursor_row >= len(self.order):
            return None
        return self.order[table.cursor_row]

    # -- actions -----------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        from haosq.tui.screens.detail import JobDetailScreen

        job_id = self._cursor_id()
        if job_id is not None:
            self.app.push_screen(JobDetailScreen(job_id))

    def action_reload(self) -> None:
        self.table.move_cursor(row=0, animate=False)
        self.refresh_data()

    def action_sort(self) -> None:
        names = [name for name, _ in ORDERS]
        self.order_name = names[(names.index(self.order_name) + 1) % len(names)]
        if self.order_name in ("newest", "oldest"):
            self.oldest_first = self.order_name == "oldest"
            self._reset()
            return
        self._apply_order()
        self._show_status()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column header sorts by it (the id column flips newest / oldest)."""
        column = str(event.column_key.value)
        if column == "id":
            self.order_name = "oldest" if self.order_name == "newest" else "newest"
            self.oldest_first = self.order_name == "oldest"
            self._reset()
        elif column in dict(ORDERS):
            self.order_name = column
            self._apply_order()
            self._show_status()

    def _apply_order(self) -> None:
        """Sort the loaded rows for the orders that are not keyset orders."""
        name = self.order_name
        if name in ("newest", "oldest") or not self.order:
            return
        now = self.haosq.clock.now()

        def sort_key(job: Job) -> tuple[object, ...]:
            newest = -job.id
            if name == "priority":
                return (-job.priority, newest)
            if name == "status":
                return (STATUS_ORDER.get(job_status(job, now), 9), newest)
            if name == "type":
                return (job.type, newest)
            return (-job.attempts, newest)

        keep = self._cursor_id()
        self.table.sort("id", key=lambda cell: sort_key(self.jobs[int(str(cell))]))
        self.order = [int(str(row.key.value)) for row in self.table.ordered_rows]
        if keep is not None:
            self.table.move_cursor(row=self.order.index(keep), animate=False)

    def _reset(self) -> None:
        self.table.clear()
        self.jobs, self.order, self.exhausted = {}, [], False
        self.selected.clear()
        self.refresh_data()

    def action_filter(self) -> None:
        def done(job_filter: JobFilter | None) -> None:
            if job_filter is not None:
                self.job_filter = job_filter
                self._reset()

        self._with_types(lambda types: self.app.push_screen(FilterScreen(self.job_filter, types), done))

    def action_toggle_select(self) -> None:
        job_id = self._cursor_id()
        if job_id is None:
            return
        self.selected.symmetric_difference_update({job_id})
        self.table.update_cell(str(job_id), "mark",
                               Text("●", style="bold magenta") if job_id in self.selected else Text(" "))
        self.table.move_cursor(row=self.table.cursor_row + 1, animate=False)
        self._show_status()

    def action_clear_selection(self) -> None:
        for job_id in self.selected:
            if job_id in self.jobs:
                self.table.update_cell(str(job_id), "mark", Text(" "))
        self.selected.clear()
        self._show_status()

    def action_retry(self) -> None:
        job_id = self._cursor_id()
        if job_id is None:
            return
        source = self.haosq.source
        self.act(lambda: source.queue.retry(job_id), lambda _: f"Job {job_id} retried")

    def action_cancel(self) -> None:
        job_id = self._cursor_id()
        if job_id is None:
            return
        source = self.haosq.source
        self._confirm(f"Cancel job {job_id} ({self.jobs[job_id].type})?", "Cancel job",
                      lambda: self.act(lambda: source.queue.cancel(job_id),
                                       lambda job: f"Job {job_id} is {job.status}"
                                       + (" (cancellation requested)" if job.status == "processing" else "")))

    def action_bulk_retry(self) -> None:
        self._bulk("retry", "Retry", "failed")

    def action_bulk_cancel(self) -> None:
        self._bulk("cancel", "Cancel", "pending or processing")

    def _bulk(self, action: str, verb: str, eligible: str) -> None:
        source = self.haosq.source
        if self.selected:
            ids = sorted(self.selected)
            perform = source.retry if action == "retry" else source.cancel

            def run_selected() -> None:
                self.act(lambda: perform(ids), lambda n: f"{verb}: {n} of {len(ids)} selected jobs",
                         after=self.action_clear_selection)

            self._confirm(f"{verb} the {len(ids)} selected job{'s' if len(ids) != 1 else ''}? "
                          f"(only {eligible} ones are affected)", f"{verb} {len(ids)}", run_selected)
            return
        job_filter = self.job_filter
        matching = source.retry_matching if action == "retry" else source.cancel_matching

        def ask(total: int) -> None:
            if total == 0:
                self.app.notify(f"No {eligible} jobs match {describe_filter(job_filter)}", timeout=4,
                                markup=False)
                return
            self._confirm(
                f"{verb} all {total:,} {eligible} job{'s' if total != 1 else ''} matching "
                f"{describe_filter(job_filter)}?", f"{verb} {total:,}",
                lambda: self.act(lambda: matching(job_filter), lambda n: f"{verb}: {n:,} jobs"))

        self.load(lambda: source.count_actionable(job_filter, action), ask, group="count")

    def _confirm(self, question: str, label: str, then: Callable[[], None]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.app.push_screen(ConfirmScreen(question, confirm_label=label), answered)

    def action_new_job(self) -> None:
        from haosq.tui.screens.new_job import NewJobScreen

        def done(job: Job | None) -> None:
            if job is not None:
                self.app.notify(f"Enqueued job {job.id} ({job.type})", timeout=4, markup=False)
                self.action_reload()

        self._with_types(lambda types: self.app.push_screen(NewJobScreen(types), done))
