"""What every command shares: settings and queue from the global options, output helpers."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from haosq.config import Settings, load_settings
from haosq.db.lenient import install_lenient_loaders
from haosq.durations import parse_duration
from haosq.errors import ConfigError
from haosq.secrets import remember_conninfo
from haosq.tui.format import jsonable_float, local_time, safe_json, visible

if TYPE_CHECKING:
    from haosq.queue import JobQueue

__all__ = ["CliState", "console", "duration_option", "error_console", "local_time", "out",
           "print_json", "state", "to_jsonable", "warn"]

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


@dataclass
class CliState:
    database_url: str | None = None
    config_file: Path | None = None
    _settings: Settings | None = None
    _queue: JobQueue | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            loaded = load_settings(config_file=self.config_file)
            self._settings = loaded.with_overrides(database_url=self.database_url)
            # A driver's error may quote the password alone: mask it in every message.
            remember_conninfo(self._settings.database_url)
        return self._settings

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            # Imported here for start-up time: `haosq --help` never loads the database driver.
            from haosq.cli.database import CommandDatabase
            from haosq.queue import JobQueue

            install_lenient_loaders()  # the CLI shows any row PostgreSQL can store
            self._queue = JobQueue(settings=self.settings, database=CommandDatabase(self.settings))
        return self._queue

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return jsonable_float(value.total_seconds())
    if isinstance(value, float):
        return jsonable_float(value)
    if isinstance(value, str):
        return str(value)  # a RawJson document is its text
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(safe_json(to_jsonable(value)) + "\n")


def duration_option(text: str | None, name: str) -> timedelta | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def warn(message: str) -> None:
    """One warning line on stderr: the command goes on."""
    sys.stderr.write(visible(f"haosq: warning: {message}", one_line=True) + "\n")


def out(*parts: str | Text, end: str = "\n") -> None:
    """Print on stdout; the parts are data (Text or plain strings, never markup)."""
    console.print(Text.assemble(*(visible(p) if isinstance(p, str) else p for p in parts)), end=end,
                  soft_wrap=True)
