"""What every command shares: settings and queue from the global options, output helpers."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from haosq.config import Settings, load_settings
from haosq.durations import parse_duration
from haosq.errors import ConfigError
from haosq.queue import JobQueue

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
        return self._settings

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = JobQueue(settings=self.settings)
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
        return value.total_seconds()
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False) + "\n")


def duration_option(text: str | None, name: str) -> timedelta | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def local_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
