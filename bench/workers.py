"""haosq worker processes for the benchmarks (`python -m haosq worker`, as systemd runs it)."""

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

ROOT = Path(__file__).resolve().parents[1]

# Two worker processes with 200 threads each (claims of up to 200 jobs): the best configuration
# of the drain sweep (bench/README.md).
DEFAULT_PROCESSES = 2
DEFAULT_CONCURRENCY = 200


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (from /proc; 0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_PROBES: dict[str, psycopg.Connection[Any]] = {}


def probe(url: str) -> psycopg.Connection[Any]:
    """One connection per database for polling, kept open: a connection per poll would load
    the server under measurement."""
    conn = _PROBES.get(url)
    if conn is None or conn.closed:
        conn = _PROBES[url] = psycopg.connect(url, autocommit=True)
    return conn


def close_probe(url: str) -> None:
    conn = _PROBES.pop(url, None)
    if conn is not None:
        conn.close()


# Is anything left to run? Two probes of the partial indexes of live jobs, which shrink as a
# drain goes on. Counting the completed rows instead walks an index that grows with every job:
# polled every 10 ms, that cost the server under measurement a fifth of its work.
UNFINISHED = """
SELECT EXISTS (SELECT 1 FROM haosq.jobs WHERE status = 'pending')
    OR EXISTS (SELECT 1 FROM haosq.jobs WHERE status = 'processing')
"""


def unfinished(url: str) -> bool:
    row = probe(url).execute(UNFINISHED).fetchone()
    return bool(row and row[0])


def server_clock(url: str) -> float:
    row = probe(url).execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    return float(row[0]) if row else 0.0


def last_completion(url: str) -> float:
    row = probe(url).execute("SELECT extract(epoch FROM max(completed_at))::float8 FROM haosq.jobs"
                             ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def completed(url: str, after_id: int = 0) -> int:
    """Completed jobs with an id above `after_id` (a range of the primary key: cheap to count
    on top of millions of finished jobs)."""
    row = probe(url).execute("SELECT count(*) FROM haosq.jobs WHERE id > %s AND status = 'completed'",
                             (after_id,)).fetchone()
    return int(row[0]) if row else 0


def last_id(url: str) -> int:
    row = probe(url).execute("SELECT coalesce(max(id), 0) FROM haosq.jobs").fetchone()
    return int(row[0]) if row else 0


def timed_drain(url: str, workers: BenchWorkers, add: Callable[[], None], jobs: int,
                timeout: float = 600.0) -> tuple[float, float, float]:
    """Workers registered and idle; `add()` commits `jobs` new jobs. Times from that commit to
    the last completion, both on the server's clock (so the probe may be infrequent). Returns
    jobs/s and the CPU seconds per 1,000 jobs of the workers and of their backends."""
    first = last_id(url)
    worker_cpu, server_cpu = workers.cpu_seconds(), workers.server_cpu_seconds()
    add()
    started = server_clock(url)
    deadline = time.monotonic() + timeout
    while unfinished(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the drain did not finish in {timeout:g}s")
        time.sleep(0.05)
    elapsed = last_completion(url) - started
    worker_used = workers.cpu_seconds() - worker_cpu
    server_used = sum(process_cpu_seconds(pid) - used for pid, used in server_cpu.items())
    done = completed(url, first)
    if done != jobs:
        raise RuntimeError(f"{done} of {jobs} jobs completed")
    return jobs / elapsed, worker_used / jobs * 1000, server_used / jobs * 1000


class BenchWorkers:
    """N worker processes running `bench:noop`, started and registered before timing."""

    def __init__(self, url: str, processes: int = DEFAULT_PROCESSES,
                 concurrency: int = DEFAULT_CONCURRENCY, *extra: str,
                 log_dir: Path | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HAOSQ_", "JOB_QUEUE_"))}
        env.pop("DATABASE_URL", None)
        env.update({"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": "/dev/null"})
        self.url = url
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "haosq", "worker", "--import", "bench.handlers",
                 "--types", "bench", "--concurrency", str(concurrency), "--log-level", "warning",
                 "--worker-id", f"bench-{i}", *extra],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                stderr=(log_dir / f"worker-{i}.log").open("w") if log_dir else subprocess.DEVNULL,
            )
            for i in range(processes)
        ]

    def wait_registered(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pids = [p.pid for p in self.procs]
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("a benchmark worker exited at start")
            with psycopg.connect(self.url) as conn:
                row = conn.execute("SELECT count(*) FROM haosq.workers WHERE pid = ANY(%s) "
                                   "AND status = 'active'", (pids,)).fetchone()
            if row and row[0] == len(pids):
                return
            time.sleep(0.1)
        raise RuntimeError("benchmark workers did not register")

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker processes so far (from /proc)."""
        return sum(process_cpu_seconds(proc.pid) for proc in self.procs)

    def server_cpu_seconds(self) -> dict[int, float]:
        """CPU so far of each PostgreSQL backend serving this database (same machine only;
        the server's shared processes, WAL writer and checkpointer, are not counted)."""
        with psycopg.connect(self.url) as conn:
            pids = [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()").fetchall()]
        return {pid: process_cpu_seconds(pid) for pid in pids}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> BenchWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
