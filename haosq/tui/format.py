"""How values look on screen, in the TUI and the CLI alike: local times, ages, counts, masked
secrets, JSON, and data that can never act as markup or drive the terminal.

Everything a job, a producer or a handler wrote is data: it reaches Rich and Textual as `Text`
(never as a markup string, where `[/]` is an error and `[link=...]` a link), with its control
characters shown as escapes (`\\x1b[31m`, not a colour change).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from rich.highlighter import JSONHighlighter
from rich.text import Text

from haosq.db.lenient import OutOfRangeTime
from haosq.durations import format_duration
from haosq.secrets import mask_text, mask_value

STATUS_STYLE = {
    "pending": "cyan",
    "scheduled": "blue",
    "processing": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "bright_black",
}
LEVEL_STYLE = {"debug": "bright_black", "info": "", "warn": "yellow", "error": "bold red"}

# C0 controls but tab and newline, DEL, C1 controls (0x9b is a CSI of its own), and the
# bidirectional marks, embeddings, overrides and isolates that reorder what is shown.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{_CONTROLS}]")
_CONTROL_OR_NEWLINE = re.compile(f"[{_CONTROLS}\n\t]")
# The characters JSON leaves as they are (with ensure_ascii off) that a terminal acts on.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_JSON_HIGHLIGHTER = JSONHighlighter()


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with its control characters shown as escapes; with `one_line`, newlines and
    tabs too."""
    pattern = _CONTROL_OR_NEWLINE if one_line else _CONTROL
    return pattern.sub(_escape, text)


def plain(value: object, style: str = "", *, one_line: bool = True) -> Text:
    """Any value as text that is shown exactly as it is: no markup, no control characters."""
    return Text(visible("-" if value is None else str(value), one_line=one_line), style=style)


def shown_error(error: str | None, *, first_line: bool = False, limit: int | None = None) -> str:
    """A stored error for display: secrets masked, controls visible, optionally its first line."""
    if not error:
        return ""
    masked = mask_text(error)
    if first_line:
        masked = (masked.splitlines() or [""])[0]
    if limit is not None:
        masked = masked[:limit]
    return visible(masked, one_line=first_line)


def shown_exception(exc: BaseException) -> str:
    """An exception's message for a notification: masked, controls visible, never empty."""
    return visible(mask_text(str(exc).strip())) or type(exc).__name__


def jsonable_float(value: float) -> float | str:
    """NaN and infinities, which JSON cannot hold, as the strings PostgreSQL prints."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def safe_json(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """JSON text that a terminal shows literally: C1 and bidirectional controls, which JSON
    may leave raw, escaped as \\uXXXX (JSON escapes the C0 ones itself)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=sort_keys, default=str)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def local_time(value: datetime | None, *, with_date: bool = True, seconds: bool = True) -> str:
    if value is None:
        return "-"
    clock = "%H:%M:%S" if seconds else "%H:%M"
    if isinstance(value, OutOfRangeTime):
        return value.text
    try:
        return value.astimezone().strftime(f"%Y-%m-%d {clock}" if with_date else clock)
    except OverflowError:  # the first or last day Python holds, shifted out of range
        return value.isoformat(" ", "seconds")


def age(now: datetime, then: datetime | None, *, ago: str = "") -> str:
    """How long ago (`12s`, with `ago` appended) or how far ahead (`in 4m05s`) `then` is."""
    if then is None:
        return "-"
    if isinstance(then, OutOfRangeTime):
        return then.text
    seconds = (now - then).total_seconds()
    if seconds < 0:
        return "in " + format_duration(-seconds)
    return format_duration(seconds) + ago


def count(value: int) -> str:
    return f"{value:,}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def status_text(status: str) -> Text:
    return plain(status, STATUS_STYLE.get(status, ""))


def json_view(value: Any, *, mask: bool = True) -> Text:
    if value is None:
        return Text("-", style="dim")
    shown = mask_value(value) if mask else value
    if isinstance(shown, str):  # a document Python could not parse: its text
        return plain(shown, one_line=False)
    return _JSON_HIGHLIGHTER(Text(safe_json(shown, sort_keys=True)))
