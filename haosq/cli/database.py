"""The database of one CLI command: one connection, opened (and migrated) on first use.

A command mostly runs one statement at a time on one thread and ends in a moment: the pool
that `Database` keeps for long-lived processes (a second connection, worker threads) costs it
more than its own work. Whoever needs a connection while that one is in use (a worker that
`haosq demo` runs in the same process, a nested use) gets one from the pool, opened then.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from haosq.db.connection import Database, connect
from haosq.db.migrate import migrate


class CommandDatabase(Database):
    """`Database` for a CLI command: the same URL, settings and first-use migration, with a
    connection of its own for one user at a time before any pool is opened."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._single: psycopg.Connection[Any] | None = None
        self._single_in_use = False
        self._single_lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self, timeout: float | None = 30.0) -> Iterator[psycopg.Connection[Any]]:
        with self._single_lock:
            mine = not self._single_in_use
            self._single_in_use = True
        if not mine:
            with super().connection(timeout) as conn:
                yield conn
            return
        try:
            if self._single is None:
                options = {k: v for k, v in self._connection_kwargs().items() if k != "row_factory"}
                self._single = connect(self.url, **options)
                if self._migrate:
                    migrate(self._single)
            yield self._single
        finally:
            with self._single_lock:
                self._single_in_use = False

    def close(self) -> None:
        if self._single is not None:
            self._single.close()
            self._single = None
        super().close()
