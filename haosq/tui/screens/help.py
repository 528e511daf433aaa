"""Help: every key of every screen (actions hidden in read-only mode are left out)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from haosq.tui.screens.base import WRITE_ACTIONS


def key_label(key: str) -> str:
    names = {"slash": "/", "question_mark": "?", "space": "space", "escape": "esc", "enter": "enter"}
    return " ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def bindings_table(sections: list[tuple[str, list[BindingType]]], read_only: bool) -> Table:
    table = Table(box=None, show_header=False, expand=True, padding=(0, 1))
    table.add_column("key", style="bold cyan", no_wrap=True, width=14)
    table.add_column("action", ratio=1)
    for title, bindings in sections:
        table.add_row(Text(title, style="bold underline"), "")
        for binding in bindings:
            if not isinstance(binding, Binding):
                continue
            if read_only and binding.action.split("(")[0] in WRITE_ACTIONS:
                continue
            table.add_row(key_label(binding.key), binding.tooltip or binding.description or binding.action)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "Close")]

    def __init__(self, sections: list[tuple[str, list[BindingType]]], read_only: bool) -> None:
        super().__init__()
        self.sections = sections
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog") as dialog:
            dialog.border_title = "Keys" + (" · read-only" if self.read_only else "")
            dialog.border_subtitle = "esc to close · ctrl+p: command palette"
            yield Static(bindings_table(self.sections, self.read_only))
