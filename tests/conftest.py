"""Shared fixtures: a real PostgreSQL server and a fresh database per test.

HAOSQ_TEST_DATABASE_URL points at a server to use (any database on it; tests create their
own); without it, the tests start haosq's embedded PostgreSQL in a temporary directory.
Every test gets its own database, cloned from a template migrated once per session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from haosq.config import Settings, load_settings
from haosq.db.connection import start_embedded, stop_embedded
from haosq.db.migrate import migrate
from haosq.queue import JobQueue


def _settings(env: dict[str, str], tmp: Path) -> Settings:
    empty = tmp / "haosq-test.toml"
    if not empty.exists():
        empty.write_text("")
    return load_settings(env={"HAOSQ_CONFIG": str(empty), **env})


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An admin URL for the server the tests use."""
    configured = os.environ.get("HAOSQ_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    data_dir = embedded_data_dir()
    settings = _settings({"HAOSQ_DATA_DIR": str(data_dir)}, data_dir)
    url = start_embedded(settings)
    yield url
    stop_embedded(settings)
    shutil.rmtree(data_dir, ignore_errors=True)


def embedded_data_dir() -> Path:
    """A directory for an embedded server's data. Not under pytest's temporary tree: pytest
    keeps that private to the user running it (mode 0700, reset by every pytest start),
    and as root the server runs as its own system user, which must reach its data."""
    path = Path(tempfile.mkdtemp(prefix="haosq-embedded-"))
    path.chmod(0o755)
    return path


class ThrowawayServer:
    """A PostgreSQL server of one test's own (the embedded server in a directory of its own),
    for tests that stop or restart the server; never the shared one."""

    def __init__(self) -> None:
        self.data_dir = embedded_data_dir()
        self.settings = _settings({"HAOSQ_DATA_DIR": str(self.data_dir)}, self.data_dir)
        self.url = start_embedded(self.settings)

    def stop(self) -> None:
        stop_embedded(self.settings)

    def start(self) -> None:
        self.url = start_embedded(self.settings)

    def close(self) -> None:
        stop_embedded(self.settings)
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def throwaway_server() -> Iterator[ThrowawayServer]:
    server = ThrowawayServer()
    yield server
    server.close()


def url_for(server: str, dbname: str) -> str:
    return make_conninfo(server, dbname=dbname)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    name = f"haosq_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(url_for(server_url, name), autocommit=True) as conn:
        migrate(conn)
    yield name
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_database(server: str, template: str | None = None) -> str:
    name = f"haosq_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        if template:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    name = create_database(server_url, template_db)
    yield url_for(server_url, name)
    drop_database(server_url, name)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with no haosq schema yet."""
    name = create_database(server_url)
    yield url_for(server_url, name)
    drop_database(server_url, name)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return _settings({"HAOSQ_DATABASE_URL": database_url}, tmp_path)


@pytest.fixture
def make_settings(tmp_path: Path):
    def make(**env: str) -> Settings:
        return _settings(env, tmp_path)

    return make


@pytest.fixture
def queue(settings: Settings) -> Iterator[JobQueue]:
    with JobQueue(settings=settings) as job_queue:
        yield job_queue


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """A direct connection to the test database (autocommit, dict rows)."""
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def haosq_env(database_url: str, tmp: Path) -> dict[str, str]:
    """This process's environment without haosq settings, pointed at `database_url`, with an
    empty config file: what a `haosq` subprocess in a test runs with."""
    empty = tmp / "haosq-subprocess.toml"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAOSQ_", "JOB_QUEUE_"))}
    env.pop("DATABASE_URL", None)
    env.update({"HAOSQ_DATABASE_URL": database_url, "HAOSQ_CONFIG": str(empty)})
    return env


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the `haosq` command against the test database."""
    return haosq_env(database_url, tmp_path)


def dbname_of(url: str) -> str:
    return conninfo_to_dict(url)["dbname"]
