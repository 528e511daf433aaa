"""Where the database is, and how to reach it.

Resolution order: HAOSQ_DATABASE_URL, then DATABASE_URL, then an embedded PostgreSQL
server kept in the data directory (haosq.db.embedded).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from haosq.config import Settings
from haosq.db.embedded import EmbeddedStatus, embedded_status, start_embedded, stop_embedded
from haosq.errors import ConfigError, DatabaseUnavailable
from haosq.secrets import mask_url

# The embedded server's functions are part of this module's interface too.
__all__ = ["CONNECT_TIMEOUT_SECONDS", "Database", "EmbeddedStatus", "connect", "describe_failure",
           "embedded_status", "resolve_url", "start_embedded", "stop_embedded"]

CONNECT_TIMEOUT_SECONDS = 5


def resolve_url(settings: Settings) -> str:
    return settings.database_url or start_embedded(settings)


def describe_failure(url: str, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot connect to the database at {mask_url(url)}: {reason} "
        "(check HAOSQ_DATABASE_URL / DATABASE_URL and that the server is running)"
    )


def connect(url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    """One connection, with a clear error when the server cannot be reached."""
    try:
        return psycopg.connect(
            url, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_SECONDS, **kwargs
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(describe_failure(url, exc)) from None
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid database URL {mask_url(url)}: {exc}") from None


class Database:
    """A connection pool to the haosq database, migrated on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        url: str | None = None,
        min_size: int = 1,
        max_size: int | None = None,
        migrate: bool = True,
    ) -> None:
        self.settings = settings
        self._url = url
        self._min_size = min_size
        self._max_size = max_size or settings["pool_max_size"]
        self._migrate = migrate
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = resolve_url(self.settings)
        return self._url

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = self._open_pool()
        return self._pool

    def _connection_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        # PgBouncer in transaction mode hands each transaction to any server connection, where
        # a statement prepared on another one does not exist: prepare nothing there. Polling
        # mode (worker.listen = false) is how haosq runs behind it, so it implies this too.
        if not self.settings["prepared_statements"] or not self.settings["worker.listen"]:
            kwargs["prepare_threshold"] = None
        return kwargs

    def _open_pool(self) -> ConnectionPool:
        url = self.url
        # Fail fast with a readable message instead of a pool that retries silently.
        with connect(url, autocommit=True) as probe:
            if self._migrate:
                from haosq.db.migrate import migrate

                migrate(probe)
        pool = ConnectionPool(
            url,
            min_size=self._min_size,
            max_size=max(self._max_size, self._min_size),
            kwargs=self._connection_kwargs(),
            open=False,
            name="haosq",
        )
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS * 2)
        return pool

    @contextlib.contextmanager
    def connection(self, timeout: float | None = 30.0) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection(timeout=timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise DatabaseUnavailable(describe_failure(self.url, exc)) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
