"""Job detail: every field, payload and result as JSON, the error, attempts, live logs."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Header, RichLog, Static

from haosq.db.lenient import OutOfRangeTime
from haosq.durations import format_duration
from haosq.models import Job, JobLog, JobStatus
from haosq.secrets import mask_text, mask_value
from haosq.tui.format import (
    LEVEL_STYLE,
    STATUS_STYLE,
    age,
    json_view,
    local_time,
    plain,
    shown_error,
    visible,
)
from haosq.tui.screens.base import HaosqScreen
from haosq.tui.screens.confirm import ConfirmScreen
from haosq.tui.screens.jobs import job_status

LOG_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class DetailData:
    job: Job
    logs: list[JobLog]


def attempt_history(job: Job, logs: list[JobLog]) -> Table:
    """One line per attempt, from its logs: when it started and ended and how."""
    table = Table(box=None, expand=True, show_edge=False, header_style="bold")
    for column in ("#", "First log", "Last log", "Lines", "Outcome"):
        table.add_column(column, no_wrap=column != "Outcome")
    attempts = [entry for entry in logs if entry.attempt is not None]
    for number, group in groupby(sorted(attempts, key=lambda e: (e.attempt or 0, e.id)),
                                 key=lambda e: e.attempt):
        entries = list(group)
        last_error = next((e for e in reversed(entries) if e.level == "error"), None)
        outcome = (plain(shown_error(last_error.message, first_line=True), "red") if last_error
                   else Text("running", style="yellow")
                   if number == job.attempts and job.status is JobStatus.PROCESSING
                   else Text("ok", style="green")
                   if number == job.attempts and job.status is JobStatus.COMPLETED else Text("-"))
        table.add_row(str(number), local_time(entries[0].created_at, with_date=False),
                      local_time(entries[-1].created_at, with_date=False), str(len(entries)), outcome)
    if not attempts:
        table.add_row("-", "-", "-", "0", Text(f"{job.attempts} attempt(s), no logs", style="dim"))
    return table


class JobDetailScreen(HaosqScreen):
    TITLE = "Job"
    BINDINGS = [
        Binding("escape,backspace", "back", "Back"),
        Binding("r", "retry", "Retry"),
        Binding("c", "cancel", "Cancel"),
        Binding("f", "follow", "Follow logs"),
    ]

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.job: Job | None = None
        self.last_log_id: int | None = None
        self.logs: list[JobLog] = []
        self.follow = True

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield from self.compose_banner()
        with VerticalScroll(id="detail-body"):
            yield Static("Loading…", id="detail-fields", classes="panel")
            with Horizontal(id="detail-json"):
                yield Static("", id="detail-payload", classes="panel")
                yield Static("", id="detail-result", classes="panel")
            yield Static("", id="detail-error", classes="panel")
            yield Static("", id="detail-attempts", classes="panel")
            log = RichLog(id="detail-logs", classes="panel", wrap=True, markup=False, auto_scroll=True)
            log.border_title = "Logs"
            yield log
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.title = f"Job {self.job_id}"
        self.query_one("#detail-payload", Static).border_title = "Payload"
        self.query_one("#detail-result", Static).border_title = "Result"
        self.query_one("#detail-error", Static).border_title = "Error"
        self.query_one("#detail-attempts", Static).border_title = "Attempts"
        # Logs of a running job stream in: poll them each second while it runs (workers write
        # logs without a notification), on top of the app's event-driven refresh.
        self.set_interval(LOG_POLL_SECONDS, self._poll_running)

    def _poll_running(self) -> None:
        if self.job is not None and self.job.status is JobStatus.PROCESSING and self.is_current:
            self.refresh_data()

    def refresh_data(self) -> None:
        source, job_id, after = self.haosq.source, self.job_id, self.last_log_id
        self.load(lambda: DetailData(source.job(job_id), source.logs(job_id, after_id=after)), self.show)

    def show(self, data: DetailData) -> None:
        self.job = data.job
        fresh = [entry for entry in data.logs if self.last_log_id is None or entry.id > self.last_log_id]
        if fresh:
            self.last_log_id = fresh[-1].id
            self.logs.extend(fresh)
        job, now = data.job, self.haosq.clock.now()
        status = job_status(job, now)
        self.title = f"Job {job.id}"
        self.sub_title = visible(f"{job.type} · {status}", one_line=True)
        self.query_one("#detail-fields", Static).update(self._fields(job, status))
        self.query_one("#detail-payload", Static).update(json_view(job.payload))
        self.query_one("#detail-result", Static).update(json_view(job.result))
        error = self.query_one("#detail-error", Static)
        error.update(Text(shown_error(job.error), style="red") if job.error else Text("none", style="dim"))
        error.set_class(bool(job.error), "-has-error")
        self.query_one("#detail-attempts", Static).update(attempt_history(job, self.logs))
        log = self.query_one("#detail-logs", RichLog)
        log.auto_scroll = self.follow
        for entry in fresh:
            log.write(self._log_line(entry))
        if not self.logs and not fresh:
            log.clear()
            log.write(Text("no log lines yet", style="dim"))

    def _fields(self, job: Job, status: str) -> Group:
        now = self.haosq.clock.now()
        grid = Table.grid(padding=(0, 2), expand=True)
        for _ in range(2):
            grid.add_column(style="dim", no_wrap=True)
            grid.add_column(no_wrap=False, ratio=1)
        duration = (format_duration((job.completed_at - job.started_at).total_seconds())
                    if job.completed_at and job.started_at
                    and not isinstance(job.completed_at, OutOfRangeTime)
                    and not isinstance(job.started_at, OutOfRangeTime) else "-")
        pairs = [
            ("id", plain(job.id, "bold")), ("type", plain(job.type, "bold")),
            ("status", plain(status, STATUS_STYLE.get(status, ""))), ("priority", plain(job.priority)),
            ("attempts", plain(f"{job.attempts} of {job.max_attempts or 'default'}")),
            ("tags", plain(" ".join(job.tags) or "-")),
            ("created", plain(local_time(job.created_at))), ("created by", plain(job.created_by)),
            ("scheduled", plain(local_time(job.scheduled_at))), ("due", plain(local_time(job.due_at))),
            ("started", plain(local_time(job.started_at))), ("finished", plain(local_time(job.completed_at))),
            ("duration", plain(duration)),
            ("updated", plain(f"{local_time(job.updated_at)} ({age(now, job.updated_at, ago=' ago')})")),
            ("retry at", plain(local_time(job.retry_at))),
            ("timeout", plain(format_duration(job.timeout_seconds) if job.timeout_seconds else "default")),
            ("worker", plain(f"{job.worker_id or '-'}"
                             + (f" pid {job.worker_pid}" if job.worker_pid else ""))),
            ("cancel requested", plain(local_time(job.cancel_requested_at))),
        ]
        for index in range(0, len(pairs), 2):
            (k1, v1), (k2, v2) = pairs[index], pairs[index + 1]
            grid.add_row(k1, v1, k2, v2)
        return Group(grid)

    @staticmethod
    def _log_line(entry: JobLog) -> Text:
        line = Text.assemble(
            (local_time(entry.created_at, with_date=False), "dim"), " ",
            (f"{entry.level:<5}", LEVEL_STYLE.get(entry.level, "")), " ",
            (f"[{entry.attempt}] " if entry.attempt is not None else "", "dim"),
            visible(mask_text(entry.message)),
        )
        if entry.metadata:
            shown = mask_value(entry.metadata)
            pairs = shown.items() if isinstance(shown, dict) else [("metadata", shown)]
            line.append(visible(" " + " ".join(f"{k}={v}" for k, v in pairs)), style="dim")
        return line

    # -- actions -----------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_follow(self) -> None:
        self.follow = not self.follow
        self.query_one("#detail-logs", RichLog).auto_scroll = self.follow
        self.app.notify("Following logs" if self.follow else "Stopped following logs", timeout=2)

    def action_retry(self) -> None:
        source, job_id = self.haosq.source, self.job_id
        self.act(lambda: source.queue.retry(job_id), lambda _: f"Job {job_id} retried")

    def action_cancel(self) -> None:
        source, job_id = self.haosq.source, self.job_id

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(lambda: source.queue.cancel(job_id), lambda job: f"Job {job_id} is {job.status}")

        self.app.push_screen(ConfirmScreen(f"Cancel job {job_id}?", confirm_label="Cancel job"), answered)
