"""Worker processes and waiting, for the fault suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.faults.chaos_handlers"
RESULTS_DIR = ROOT / "bench" / "results"


def wait_until(condition: Callable[[], Any], timeout: float, message: str,
               interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def worker_env(database_url: str, tmp: Path) -> dict[str, str]:
    config = tmp / "worker.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAOSQ_", "JOB_QUEUE_"))}
    env.pop("DATABASE_URL", None)
    env.update({"HAOSQ_DATABASE_URL": database_url, "HAOSQ_CONFIG": str(config)})
    return env


class Worker:
    """One `python -m haosq worker` process; stderr goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "haosq", "worker", "--import", HANDLERS, *args],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

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

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

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
