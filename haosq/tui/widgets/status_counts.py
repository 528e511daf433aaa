"""The row of counters by status at the top of the dashboard."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from haosq.tui.data import STATUSES
from haosq.tui.format import count


class StatusCard(Static):
    """One status and its count, on a band of the status colour."""

    def __init__(self, status: str) -> None:
        super().__init__("", id=f"card-{status}", classes=f"status-card -{status}")
        self.status = status
        self.show(None)

    def show(self, value: int | None) -> None:
        self.update(Text.assemble((self.status, "dim"), "\n",
                                  ("-" if value is None else count(value), "bold")))


class StatusCounts(Horizontal):
    def compose(self) -> ComposeResult:
        for status in STATUSES:
            yield StatusCard(status)

    def show(self, by_status: dict[str, int]) -> None:
        for card in self.query(StatusCard):
            card.show(by_status.get(card.status, 0))
