"""Loading what PostgreSQL can store but Python cannot hold, for the views that show rows.

PostgreSQL keeps timestamps from 4713 BC to 294276 AD and `infinity`; Python's datetime holds
the years 1 to 9999, so psycopg refuses the rest (`timestamp too large (after year 10K)`) and
one such row would break a whole listing. jsonb keeps numbers of any size; Python refuses to
parse integers of more than 4,300 digits. The CLI and the TUI read rows through the loaders
below, which never fail: a timestamp out of Python's range loads as `OutOfRangeTime` (the
datetime at that end of the range, carrying PostgreSQL's own text), a jsonb document Python
cannot parse as `RawJson` (its text). Everything else loads exactly as psycopg loads it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any


class OutOfRangeTime(datetime):
    """A timestamp beyond Python's range: `datetime.max` or `datetime.min` (UTC) in
    comparisons, PostgreSQL's text (`infinity`, `10000-01-01 00:00:00+00`) when shown."""

    text: str

    def __new__(cls, text: str) -> OutOfRangeTime:
        late = not text.startswith("-") and not text.endswith(" BC")
        edge = datetime.max if late else datetime.min
        moment = super().__new__(cls, edge.year, edge.month, edge.day, edge.hour, edge.minute,
                                 edge.second, edge.microsecond, tzinfo=UTC)
        moment.text = text
        return moment

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"OutOfRangeTime({self.text!r})"

    def __reduce_ex__(self, protocol: object) -> tuple[type[OutOfRangeTime], tuple[str]]:
        return OutOfRangeTime, (self.text,)


class RawJson(str):
    """A JSON document Python cannot parse (an integer of thousands of digits): its text."""


_installed = False
_lock = threading.Lock()


def install_lenient_loaders() -> None:
    """Make every psycopg connection opened from now on in this process load rows that way
    (psycopg's global adapters are the template of new connections). For the processes that
    show rows (the CLI, the TUI); idempotent."""
    global _installed
    with _lock:
        if not _installed:
            _register()
            _installed = True


def _register() -> None:
    # Imported here for start-up time: the display code imports the value types above
    # without paying for psycopg.
    import psycopg
    from psycopg.types.datetime import TimestampLoader, TimestamptzLoader
    from psycopg.types.json import JsonbLoader, JsonLoader

    def text(data: Any) -> str:
        return bytes(data).decode("utf-8", "replace")

    def lenient(loader: type[Any], fallback: Any, errors: tuple[type[BaseException], ...]) -> type[Any]:
        class Lenient(loader):  # type: ignore[valid-type, misc]
            def load(self, data: Any) -> Any:
                try:
                    return super().load(data)
                except errors:
                    return fallback(text(data))

        Lenient.__name__ = f"Lenient{loader.__name__}"
        return Lenient

    adapters = psycopg.adapters
    for name, loader in (("timestamptz", TimestamptzLoader), ("timestamp", TimestampLoader)):
        adapters.register_loader(name, lenient(loader, OutOfRangeTime, (psycopg.DataError,)))
    for name, loader in (("jsonb", JsonbLoader), ("json", JsonLoader)):
        adapters.register_loader(name, lenient(loader, RawJson, (ValueError, RecursionError)))
