"""What the peer runners share (stdlib only: they run in the peers' virtualenv).

A run is one configuration: the runner installs the peer's schema in a scratch database,
enqueues the jobs (timed: the peer's bulk enqueue), starts worker processes that report
"ready" and wait for "go" on stdin, then times the drain until the queue is empty. Pickup
latency: one idle worker, jobs enqueued one at a time; the handler prints its start time
and the runner subtracts the time the enqueue committed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def pickup_latencies(worker_output: str, committed: dict[str, float]) -> dict[str, float]:
    """Pickup latency in ms from the worker's "pick INDEX STARTED" lines and each job's
    enqueue commit time: count, p50, p95, p99."""
    pickup = []
    for line in worker_output.splitlines():
        if line.startswith("pick "):
            _, index, started = line.split()
            pickup.append((float(started) - committed[index]) * 1000)
    return {"n": len(pickup), "p50": percentile(pickup, 0.5),
            "p95": percentile(pickup, 0.95), "p99": percentile(pickup, 0.99)}


def spawn_workers(script: str, args: list[str], count: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen([sys.executable, script, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
        for _ in range(count)
    ]
    for proc in procs:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"peer worker failed to start: {line!r}")
    return procs


def go(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def wait_ready_then_go() -> None:
    """Worker side: announce readiness, block until the runner says go."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()


def timed_drain(procs: list[subprocess.Popen[str]], remaining: Callable[[], int],
                total: int, timeout: float) -> dict[str, float]:
    """Start the workers and time until `remaining()` reaches 0. CPU of the workers comes
    from their rusage once they have exited."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    go(procs)
    deadline = started + timeout
    while remaining() > 0:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"drain did not finish in {timeout}s")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    for proc in procs:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": elapsed, "jobs_per_s": total / elapsed,
            "worker_cpu_s_per_1000": cpu / total * 1000}


def emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def stop_on_stdin_eof(callback: Callable[[], None]) -> None:
    """Worker side: call `callback` when the runner closes our stdin (in a thread)."""
    import threading

    def watch() -> None:
        sys.stdin.read()
        callback()

    threading.Thread(target=watch, daemon=True).start()


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
