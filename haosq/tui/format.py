"""How values look on screen: local times, ages, counts, masked secrets, highlighted JSON."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.json import JSON
from rich.text import Text

from haosq.durations import format_duration
from haosq.secrets import mask_value

STATUS_STYLE = {
    "pending": "cyan",
    "scheduled": "blue",
    "processing": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "bright_black",
}
LEVEL_STYLE = {"debug": "bright_black", "info": "", "warn": "yellow", "error": "bold red"}


def local_time(value: datetime | None, *, with_date: bool = True, seconds: bool = True) -> str:
    if value is None:
        return "-"
    clock = "%H:%M:%S" if seconds else "%H:%M"
    return value.astimezone().strftime(f"%Y-%m-%d {clock}" if with_date else clock)


def age(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "-"
    seconds = (now - then).total_seconds()
    if seconds < 0:
        return "in " + format_duration(-seconds)
    return format_duration(seconds)


def count(value: int) -> str:
    return f"{value:,}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def json_view(value: Any, *, mask: bool = True) -> JSON | Text:
    if value is None:
        return Text("-", style="dim")
    shown = mask_value(value) if mask else value
    return JSON(json.dumps(shown, ensure_ascii=False, default=str), indent=2, sort_keys=True)
