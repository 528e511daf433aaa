"""New job form: every field validated inline; nothing is enqueued until all are valid."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Footer, Header, Input, Label, Static, TextArea

from haosq.durations import parse_duration
from haosq.errors import InvalidJob
from haosq.models import Job
from haosq.queue import (
    serialise_payload,
    validate_max_attempts,
    validate_priority,
    validate_tags,
    validate_type,
)
from haosq.tui.data import NewJobRequest
from haosq.tui.format import plain, shown_exception

if TYPE_CHECKING:
    from haosq.tui.app import HaosqApp

FIELDS = ("type", "payload", "priority", "max_attempts", "tags", "run_at")


def parse_run_at(text: str, now: datetime) -> datetime | None:
    """Empty: now. A duration ("10m", "1h30m"): from now. Otherwise a local date and time."""
    text = text.strip()
    if not text:
        return None
    try:
        return now + parse_duration(text.removeprefix("+").removeprefix("in "))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidJob(f"invalid run at {text!r}: use a delay (10m, 2h) or a local time "
                         "(2026-01-31 09:00)") from None
    return when.astimezone(UTC) if when.tzinfo is None else when


def validate_form(values: dict[str, str], now: datetime,
                  max_payload_bytes: int) -> tuple[NewJobRequest | None, dict[str, str]]:
    """The request the form describes, or the error of each invalid field."""
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}

    def check(name: str, parse: Any) -> None:
        try:
            parsed[name] = parse()
        except InvalidJob as exc:
            errors[name] = str(exc)

    check("type", lambda: validate_type(values["type"].strip()))

    def payload() -> dict[str, Any]:
        text = values["payload"].strip() or "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidJob(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        serialise_payload(value, max_payload_bytes)
        return cast("dict[str, Any]", value)

    check("payload", payload)

    def integer(name: str, text: str) -> int:
        try:
            return int(text.strip())
        except ValueError:
            raise InvalidJob(f"invalid {name} {text.strip()!r}: expected a whole number") from None

    check("priority", lambda: validate_priority(integer("priority", values["priority"] or "0")))
    check("max_attempts", lambda: validate_max_attempts(
        integer("max attempts", values["max_attempts"]) if values["max_attempts"].strip() else None))
    check("tags", lambda: validate_tags([t.strip() for t in values["tags"].split(",") if t.strip()]))
    check("run_at", lambda: parse_run_at(values["run_at"], now))
    if errors:
        return None, errors
    return NewJobRequest(
        type=parsed["type"], payload=parsed["payload"], priority=parsed["priority"],
        max_attempts=parsed["max_attempts"], tags=tuple(parsed["tags"]), scheduled_at=parsed["run_at"],
    ), {}


class NewJobScreen(Screen[Job | None]):
    TITLE = "New job"
    BINDINGS = [
        Binding("ctrl+s", "submit", "Enqueue", priority=True),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self, types: list[str]) -> None:
        super().__init__()
        self.types = types

    @property
    def haosq(self) -> HaosqApp:
        return cast("HaosqApp", self.app)

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        with VerticalScroll(id="new-job-form"):
            yield Label("Type", classes="field-label")
            yield Input(placeholder="family:action, e.g. email:send", id="field-type",
                        suggester=SuggestFromList(self.types, case_sensitive=False))
            yield Static("", id="error-type", classes="field-error")
            yield Static("", id="type-hint", classes="field-hint")
            yield Label("Payload (JSON object)", classes="field-label")
            yield TextArea("{\n  \n}", id="field-payload", show_line_numbers=True, tab_behavior="indent")
            yield Static("", id="error-payload", classes="field-error")
            with Horizontal(classes="field-row"):
                with VerticalScroll(classes="field-cell"):
                    yield Label("Priority", classes="field-label")
                    yield Input("0", id="field-priority", placeholder="-1000 … 1000")
                    yield Static("", id="error-priority", classes="field-error")
                with VerticalScroll(classes="field-cell"):
                    yield Label("Max attempts", classes="field-label")
                    yield Input("", id="field-max_attempts", placeholder="worker default")
                    yield Static("", id="error-max_attempts", classes="field-error")
            with Horizontal(classes="field-row"):
                with VerticalScroll(classes="field-cell"):
                    yield Label("Tags", classes="field-label")
                    yield Input("", id="field-tags", placeholder="comma, separated")
                    yield Static("", id="error-tags", classes="field-error")
                with VerticalScroll(classes="field-cell"):
                    yield Label("Run at", classes="field-label")
                    yield Input("", id="field-run_at", placeholder="now, 10m, 2026-01-31 09:00")
                    yield Static("", id="error-run_at", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Enqueue (ctrl+s)", id="submit", variant="success")
                yield Button("Cancel (esc)", id="close")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#field-type", Input).focus()

    def values(self) -> dict[str, str]:
        values = {name: self.query_one(f"#field-{name}", Input).value
                  for name in FIELDS if name != "payload"}
        values["payload"] = self.query_one("#field-payload", TextArea).text
        return values

    def validate(self) -> NewJobRequest | None:
        request, errors = validate_form(self.values(), self.haosq.clock.now(),
                                        self.haosq.source.settings["max_payload_bytes"])
        for name in FIELDS:
            error = self.query_one(f"#error-{name}", Static)
            error.update(plain(errors.get(name, "")))
            error.set_class(name in errors, "-visible")
            widget = self.query_one(f"#field-{name}")
            widget.set_class(name in errors, "-invalid")
        return request

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "field-type":
            text = event.value.strip()
            hint = self.query_one("#type-hint", Static)
            unknown = bool(text) and ":" in text and text not in self.types
            hint.update(plain(f"no handler for {text} is registered here; a worker elsewhere may run it"
                              if unknown else ""))
            hint.set_class(unknown, "-visible")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.action_submit()
        else:
            self.action_close()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        request = self.validate()
        if request is None:
            self.app.bell()
            return
        source, app = self.haosq.source, self.haosq

        def run() -> None:
            try:
                job = source.add(request)
            except Exception as exc:
                app.call_from_thread(app.notify, shown_exception(exc), title="Not enqueued",
                                     severity="error", markup=False)
                return
            app.call_from_thread(self.dismiss, job)

        self.run_worker(run, thread=True, group="submit", exit_on_error=False)
