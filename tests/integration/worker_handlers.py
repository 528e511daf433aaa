"""Handlers of the `test:*` family used by the worker and daemon tests.

Worker processes load them with `--import tests.integration.worker_handlers`. Handlers that
prove how often they ran write to `public.executions`, whose unique key (job, attempt)
refuses a second run of the same attempt.
"""

from __future__ import annotations

import os
import time
from typing import Any

import haosq
from haosq.handlers.registry import JobContext

EXECUTIONS_TABLE = """
CREATE TABLE IF NOT EXISTS public.executions (
    id         bigserial PRIMARY KEY,
    job_id     bigint      NOT NULL,
    attempt    integer     NOT NULL,
    pid        integer     NOT NULL,
    n          integer,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (job_id, attempt)
)
"""


def record(ctx: JobContext, n: int | None = None) -> None:
    with ctx.connection() as conn:
        conn.execute(
            "INSERT INTO public.executions (job_id, attempt, pid, n) VALUES (%s, %s, %s, %s)",
            (ctx.job_id, ctx.attempt, os.getpid(), n),
        )


@haosq.handler("test:record")
def record_run(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    record(ctx, payload.get("n"))
    return {"n": payload.get("n")}


@haosq.handler("test:slow")
def slow(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Records its start, then waits (waking early on cancel)."""
    record(ctx, payload.get("n"))
    seconds = float(payload.get("seconds", 1.0))
    if ctx.attempt > 1 and "retry_seconds" in payload:
        seconds = float(payload["retry_seconds"])
    interrupted = ctx.cancelled.wait(seconds)
    return {"interrupted": interrupted}


@haosq.handler("test:hang")
def hang(payload: dict[str, Any], ctx: JobContext) -> str:
    """Ignores cancellation."""
    time.sleep(float(payload.get("seconds", 2.0)))
    return "finished late"


@haosq.handler("test:not-json")
def not_json(payload: dict[str, Any]) -> Any:
    return {"when": object()}


@haosq.handler("test:raise")
def raise_error(payload: dict[str, Any]) -> None:
    if payload.get("permanent"):
        raise haosq.PermanentError("bad input, do not retry")
    if "retry_after" in payload:
        raise haosq.Retry("come back later", after=float(payload["retry_after"]))
    raise ValueError("boom")


@haosq.handler("tfam:one")
def family_one(payload: dict[str, Any], ctx: JobContext) -> str:
    record(ctx)
    return "one"


@haosq.handler("tfam:two")
def family_two(payload: dict[str, Any], ctx: JobContext) -> str:
    record(ctx)
    return "two"


@haosq.handler("other:thing")
def other_thing(payload: dict[str, Any], ctx: JobContext) -> str:
    record(ctx)
    return "done"


@haosq.handler("test:proc-echo", executor="process")
def proc_echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    ctx.log.info("in the child", pid=os.getpid())
    return {"pid": os.getpid(), "value": payload.get("value")}


@haosq.handler("test:proc-spin", executor="process", timeout=1.0)
def proc_spin(payload: dict[str, Any], ctx: JobContext) -> None:
    """CPU-bound and deaf to cancellation: only killing the child ends it."""
    record(ctx)
    while True:
        pass


@haosq.handler("test:proc-die", executor="process")
def proc_die(payload: dict[str, Any]) -> None:
    os._exit(int(payload.get("code", 3)))


@haosq.handler("test:nul")
def nul(payload: dict[str, Any], ctx: JobContext) -> Any:
    """NUL characters, which PostgreSQL text and jsonb refuse, in a log line and an error."""
    ctx.log.info("a\x00b", detail="c\x00d")
    if payload.get("result"):
        return {"text": "e\x00f"}
    raise ValueError("g\x00h")
