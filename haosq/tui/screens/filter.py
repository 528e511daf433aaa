"""The jobs filter: status, type or family, tag, free text (error message or id)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select, Static

from haosq.db.queries.jobs import JobFilter
from haosq.errors import InvalidJob
from haosq.queue import JobQueue
from haosq.tui.data import STATUSES
from haosq.tui.format import plain


def build_filter(status: str | None, type_text: str, tag: str, search: str) -> JobFilter:
    """A JobFilter from the form's fields; InvalidJob names what is wrong."""
    return JobQueue.filter(
        status=status or None,
        type=type_text.strip() or None,
        tag=tag.strip() or None,
        search=search.strip() or None,
    )


def describe_filter(job_filter: JobFilter) -> str:
    parts = []
    if job_filter.status:
        parts.append(f"status={job_filter.status}")
    if job_filter.type:
        parts.append(f"type={job_filter.type}")
    if job_filter.tag:
        parts.append(f"tag={job_filter.tag}")
    if job_filter.search:
        parts.append(f"text={job_filter.search!r}")
    return " ".join(parts) or "all jobs"


class FilterScreen(ModalScreen[JobFilter | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, current: JobFilter, types: list[str]) -> None:
        super().__init__()
        self.current = current
        self.types = types

    def compose(self) -> ComposeResult:
        with Vertical(id="filter-dialog", classes="dialog") as dialog:
            dialog.border_title = "Filter jobs"
            yield Label("Status")
            yield Select([(s, s) for s in STATUSES], prompt="any status", id="filter-status",
                         value=self.current.status or Select.NULL)
            yield Label("Type or family")
            yield Input(self.current.type or "", placeholder="email or email:send", id="filter-type",
                        suggester=SuggestFromList(self.types, case_sensitive=False))
            yield Label("Tag")
            yield Input(self.current.tag or "", placeholder="a tag", id="filter-tag")
            yield Label("Text (error message or job id)")
            yield Input(self.current.search or "", placeholder="timeout, 1234…", id="filter-search")
            yield Static("", id="filter-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply (enter)", id="apply", variant="primary")
                yield Button("Clear", id="clear")

    def on_mount(self) -> None:
        self.query_one("#filter-type", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "clear":
            self.dismiss(JobFilter())
        else:
            self._apply()

    def _apply(self) -> None:
        status = self.query_one("#filter-status", Select).value
        try:
            job_filter = build_filter(
                status if isinstance(status, str) else None,
                self.query_one("#filter-type", Input).value,
                self.query_one("#filter-tag", Input).value,
                self.query_one("#filter-search", Input).value,
            )
        except InvalidJob as exc:
            error = self.query_one("#filter-error", Static)
            error.update(plain(str(exc)))
            error.add_class("-visible")
            return
        self.dismiss(job_filter)
