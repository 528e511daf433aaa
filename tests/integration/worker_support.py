"""Helpers shared by the worker and daemon tests: in-process services, worker processes,
waiting on database conditions."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.worker_handlers import EXECUTIONS_TABLE

ROOT = Path(__file__).resolve().parents[2]
HANDLERS_MODULE = "tests.integration.worker_handlers"


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def job_row(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM haosq.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def wait_status(conn: psycopg.Connection, job_id: int, *statuses: str, timeout: float = 10.0) -> dict:
    def check() -> dict | None:
        row = job_row(conn, job_id)
        return row if row["status"] in statuses else None

    return wait_until(check, timeout, message=f"job {job_id} to become {'/'.join(statuses)}")


def executions(conn: psycopg.Connection, job_id: int | None = None) -> list[dict[str, Any]]:
    if job_id is None:
        return conn.execute("SELECT * FROM public.executions ORDER BY id").fetchall()
    return conn.execute("SELECT * FROM public.executions WHERE job_id = %s ORDER BY id",
                        (job_id,)).fetchall()


def create_executions(conn: psycopg.Connection) -> None:
    conn.execute(EXECUTIONS_TABLE)


class WorkerProcess:
    """A real `haosq worker` process (python -m haosq), its stderr kept in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str,
                 handlers: str = HANDLERS_MODULE, log_mode: str = "w") -> None:
        self.log_path = log_path
        self._log = log_path.open(log_mode)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "haosq", "worker", "--import", handlers, *args],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, conn: psycopg.Connection, timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            row = conn.execute("SELECT 1 FROM haosq.workers WHERE pid = %s AND status = 'active'",
                               (self.pid,)).fetchone()
            return row is not None

        wait_until(ready, timeout, message="the worker to start")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
