"""Fixtures for the file job tests: file roots, a job context, a real clamd.

Loaded as a pytest plugin by the test modules that need it (`pytest_plugins`).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from haosq.config import Settings
from haosq.db.queries.jobs import add_logs
from haosq.handlers.clamd import ClamdClient, ClamdUnavailable
from haosq.handlers.registry import JobContext, JobLogger
from haosq.queue import JobQueue
from tests.handlers.file_samples import EICAR, HAOSQ_MARKER, HAOSQ_SIGNATURE


class DatabaseLogSink:
    """Writes job logs straight to job_logs, as the daemon does (unbatched here)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def write(self, job_id: int, attempt: int, level: str, message: str,
              metadata: dict[str, Any] | None) -> None:
        with self.lock:
            add_logs(self.conn, [(job_id, attempt, level, message, metadata)])


@dataclass
class FileArea:
    root: Path
    output: Path
    quarantine: Path

    def table(self, **extra: Any) -> dict[str, Any]:
        return {"roots": [str(self.root)], "output_root": str(self.output),
                "quarantine_dir": str(self.quarantine), **extra}


@pytest.fixture
def file_area(tmp_path: Path) -> FileArea:
    area = FileArea(tmp_path / "uploads", tmp_path / "derived", tmp_path / "quarantine")
    area.root.mkdir()
    return area


@pytest.fixture
def job_context(queue: JobQueue, conn: psycopg.Connection[Any], settings: Settings
                ) -> Callable[..., JobContext]:
    """Build the context a worker would pass: a real job row, logs into job_logs."""
    sink = DatabaseLogSink(conn)

    def make(job_type: str, payload: dict[str, Any], handlers: dict[str, Any] | None = None,
             attempt: int = 1) -> JobContext:
        job = queue.add(job_type, payload)
        sections = {**settings.sections, "handlers": handlers or {}}
        ctx_settings = Settings(settings.values, settings.sources, sections, settings.config_file)
        return JobContext(job=job, log=JobLogger(sink, job.id, attempt), attempt=attempt,
                          cancelled=threading.Event(), settings=ctx_settings, database=queue.db)

    return make


# -- clamd ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clamd:
    socket: Path
    config: Path
    max_file_size: int
    client: ClamdClient
    tcp_address: str


CLAMD_LIMITS = {"MaxFileSize": "5M", "MaxScanSize": "20M", "StreamMaxLength": "300M",
                "MaxFiles": "50", "MaxRecursion": "4"}


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """A real clamd (Debian's clamav-daemon) with a signature database written here."""
    binary = shutil.which("clamd") or next(
        (p for p in ("/usr/sbin/clamd", "/usr/bin/clamd") if Path(p).exists()), None)
    if binary is None:
        pytest.skip("clamd is not installed (Debian package clamav-daemon; .ci/system-deps installs it)")
    home = tmp_path_factory.mktemp("clamd")
    database = home / "db"
    database.mkdir()
    # An empty database is fatal to clamd: one hash signature and one body signature.
    (database / "haosq.hdb").write_text(
        f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Eicar-Test-Signature\n")
    (database / "haosq.ndb").write_text(f"{HAOSQ_SIGNATURE}:0:*:{HAOSQ_MARKER.hex()}\n")
    socket_path = home / "clamd.sock"
    with socket.socket() as probe:  # a free TCP port for clamd's second listener
        probe.bind(("127.0.0.1", 0))
        tcp_port = probe.getsockname()[1]
    config = home / "clamd.conf"
    config.write_text("\n".join([
        f"LocalSocket {socket_path}",
        "TCPAddr 127.0.0.1",
        f"TCPSocket {tcp_port}",
        "Foreground yes",
        f"DatabaseDirectory {database}",
        f"LogFile {home / 'clamd.log'}",
        f"TemporaryDirectory {home}",
        "MaxThreads 4",
        *(f"{key} {value}" for key, value in CLAMD_LIMITS.items()),
        "",
    ]))
    process = subprocess.Popen([binary, "--config-file", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = ClamdClient(str(socket_path), timeout=30)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            log = (home / "clamd.log").read_text() if (home / "clamd.log").exists() else ""
            raise RuntimeError(f"clamd exited: {process.stderr.read().decode()} {log}")
        try:
            if client.ping():
                break
        except ClamdUnavailable:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("clamd did not answer PING within 60 s")
        time.sleep(0.05)
    yield Clamd(socket_path, config, 5 * 1024**2, client, f"127.0.0.1:{tcp_port}")
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


