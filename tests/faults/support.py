"""Worker processes and waiting, for the fault suite."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import haosq_env
from tests.integration.worker_support import WorkerProcess
from tests.integration.worker_support import wait_until as shared_wait_until

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.faults.chaos_handlers"
RESULTS_DIR = ROOT / "bench" / "results"


def wait_until(condition: Callable[[], Any], timeout: float, message: str,
               interval: float = 0.05) -> Any:
    return shared_wait_until(condition, timeout, interval=interval, message=message)


def worker_env(database_url: str, tmp: Path) -> dict[str, str]:
    return haosq_env(database_url, tmp)


class Worker(WorkerProcess):
    """One `python -m haosq worker` process running the chaos handlers; stderr appended to a
    log file across restarts."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        super().__init__(env, log_path, *args, handlers=HANDLERS, log_mode="a")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_registered(self, url: str, timeout: float = 30.0) -> None:
        """Until this process has registered in haosq.workers (it claims right after)."""
        def registered() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                with psycopg.connect(url, connect_timeout=2) as conn:
                    row = conn.execute("SELECT 1 FROM haosq.workers WHERE pid = %s AND status = 'active'",
                                       (self.pid,)).fetchone()
                    return row is not None
            except psycopg.OperationalError:
                return False

        wait_until(registered, timeout, f"worker pid {self.pid} to register", interval=0.1)

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()
