"""Handlers the fault suite's worker processes load with `--import tests.faults.chaos_handlers`.

`chaos:work` records every execution in `public.fault_runs`, whose key (job, attempt) shows
a second run of the same attempt (counted in `repeats`, which must stay 0); a new attempt
after a crash is a new row (a duplicate run, allowed and counted). The `poison:*` handlers
misbehave in every way a handler can; each must end its job failed and leave the worker
running.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import haosq
from haosq.handlers.registry import JobContext

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS public.fault_runs (
    job_id     bigint      NOT NULL,
    attempt    integer     NOT NULL,
    pid        integer     NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    repeats    integer     NOT NULL DEFAULT 0,
    UNIQUE (job_id, attempt)
)
"""

RECORD = """
INSERT INTO public.fault_runs (job_id, attempt, pid) VALUES (%s, %s, %s)
ON CONFLICT (job_id, attempt) DO UPDATE SET repeats = fault_runs.repeats + 1
"""


@haosq.handler("chaos:work")
def work(payload: dict[str, Any], ctx: JobContext) -> dict[str, int]:
    with ctx.connection() as conn:
        conn.execute(RECORD, (ctx.job_id, ctx.attempt, os.getpid()))
    # A little work, so that jobs are in flight when a worker is killed.
    time.sleep(float(payload.get("seconds", 0.005)))
    return {"n": int(payload.get("n", 0))}


@haosq.handler("poison:raise", max_attempts=1)
def raises(payload: dict[str, Any]) -> None:
    raise RuntimeError("poison: the handler raised")


@haosq.handler("poison:hang", executor="process", timeout=1.0, max_attempts=1)
def hangs(payload: dict[str, Any]) -> None:
    # Ignores every cancel: only killing the child ends it.
    while True:
        time.sleep(1)


@haosq.handler("poison:thread-hang", timeout=1.0, max_attempts=1)
def thread_hangs(payload: dict[str, Any]) -> None:
    time.sleep(float(payload.get("seconds", 3.0)))


@haosq.handler("poison:exit", executor="process", max_attempts=1)
def exits(payload: dict[str, Any]) -> None:
    os._exit(int(payload.get("code", 3)))


@haosq.handler("poison:memory", executor="process", max_attempts=1)
def blows_up_memory(payload: dict[str, Any]) -> None:
    # Cap this child's address space, then ask for far more: the allocation fails in the
    # child as it would under a container's memory limit, never on the test machine.
    limit = 512 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    hoard = [bytearray(64 * 1024 * 1024) for _ in range(64)]
    raise AssertionError(f"allocated {len(hoard)} blocks past the limit")


@haosq.handler("poison:oom-kill", executor="process", max_attempts=1)
def oom_killed(payload: dict[str, Any]) -> None:
    # What the kernel's OOM killer does to a child that grew too big: SIGKILL.
    hoard = bytearray(32 * 1024 * 1024)
    os.kill(os.getpid(), 9)
    raise AssertionError(f"still alive with {len(hoard)} bytes")
