"""The row of counters by status at the top of the dashboard."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from haosq.tui.data import STATUSES
from haosq.tui.format import count


class StatusCard(Static):
    """One status and its count; the border title names the status."""

    def __init__(self, status: str) -> None:
        super().__init__("-", id=f"card-{status}", classes=f"status-card -{status}")
        self.border_title = status
        self.status = status

    def show(self, value: int | None) -> None:
        self.update("-" if value is None else count(value))


class StatusCounts(Horizontal):
    def compose(self) -> ComposeResult:
        for status in STATUSES:
            yield StatusCard(status)

    def show(self, by_status: dict[str, int]) -> None:
        for card in self.query(StatusCard):
            card.show(by_status.get(card.status, 0))
