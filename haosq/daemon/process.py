"""The process executor: handlers marked `@handler(..., executor="process")` run in a child
process, so that CPU-heavy work neither holds the GIL against the heartbeat nor outlives its
timeout or a cancel (the child is killed).

The child is started with the `spawn` method (a fresh interpreter: forking a process that
runs threads and holds database connections is unsafe). It imports the handler's module,
builds its own `JobContext` (payload, attempt, settings, a logger whose lines travel back to
the worker, a `cancelled` event and a database handle of its own) and reports one result or
one error through a pipe, with the follow-up jobs the handler asked for. A child that
dies without reporting (`os._exit`, the OOM killer)
fails the attempt; the worker carries on.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import traceback
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from haosq.config import Settings
from haosq.daemon.execution import ChildDied, JobTimedOut, NotJsonResult, Running, encode_result
from haosq.db.connection import Database
from haosq.errors import PermanentError, Retry
from haosq.handlers.childlimits import enter_job_child
from haosq.handlers.registry import REGISTRY, CancelEvent, FollowUp, JobContext, JobLogger
from haosq.models import Job

_SPAWN = multiprocessing.get_context("spawn")
POLL_SECONDS = 0.05


class HandlerError(Exception):
    """An exception raised by a handler in the child, carried back with its traceback."""

    def __init__(self, message: str, remote_traceback: str) -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback


@dataclass(frozen=True)
class ChildTask:
    """Everything the child needs, all of it picklable."""

    module: str
    job_type: str
    job: Job
    attempt: int
    settings: Settings
    database_url: str | None


class _PipeSink:
    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe

    def write(self, job_id: int, attempt: int, level: str, message: str,
              metadata: dict[str, Any] | None) -> None:
        self._pipe.send(("log", level, message, metadata))


def _child_main(task: ChildTask, pipe: Connection) -> None:
    enter_job_child()  # handlers may now cap this process's memory (haosq.handlers.childlimits)
    try:
        importlib.import_module(task.module)
        spec = REGISTRY.get(task.job_type)
        database = (Database(task.settings, url=task.database_url, max_size=1, migrate=False)
                    if task.database_url else None)
        context = JobContext(
            job=task.job,
            log=JobLogger(_PipeSink(pipe), task.job.id, task.attempt),
            attempt=task.attempt,
            cancelled=CancelEvent(),
            settings=task.settings,
            database=database,
        )
        value = spec.call(task.job.payload, context)
        # Follow-up jobs travel back with the result: the worker enqueues them in the
        # transaction that records this job's completion.
        followups = [(f.type, f.payload, f.options) for f in context.followups]
        pipe.send(("result", encode_result(value), followups))
    except BaseException as exc:
        after = exc.after if isinstance(exc, Retry) else None
        if after is not None and not isinstance(after, int | float):
            after = after.total_seconds() if hasattr(after, "total_seconds") else after.isoformat()
        pipe.send(("error", type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)),
                   isinstance(exc, PermanentError), isinstance(exc, Retry),
                   isinstance(exc, NotJsonResult), after))
    finally:
        pipe.close()


def run_in_process(running: Running, log_line: Any, database_url: str | None) -> Any:
    """Run the attempt in a child process and return the handler's value or raise its error.

    `log_line(level, message, metadata)` receives the child's log lines. The child is killed
    as soon as the attempt's `cancelled` event is set (cancel or timeout)."""
    assert running.spec is not None
    task = ChildTask(
        module=running.spec.function.__module__,
        job_type=running.job.type,
        job=running.job,
        attempt=running.context.attempt,
        settings=running.context.settings,
        database_url=database_url,
    )
    receive, send = _SPAWN.Pipe(duplex=False)
    child = _SPAWN.Process(target=_child_main, args=(task, send), daemon=True,
                           name=f"haosq-job-{running.job.id}")
    child.start()
    send.close()
    try:
        while True:
            if running.context.cancelled.is_set():
                child.kill()
                child.join()
                raise JobTimedOut("the child process was killed (cancelled or over its time limit)")
            if receive.poll(POLL_SECONDS):
                try:
                    message = receive.recv()
                except EOFError:
                    child.join()
                    raise ChildDied(
                        f"the child process running the handler died (exit code {child.exitcode})"
                    ) from None
                if message[0] == "log":
                    log_line(*message[1:])
                    continue
                child.join()
                if message[0] == "result":
                    running.context.followups.extend(FollowUp(*f) for f in message[2])
                return _reply(message)
            if not child.is_alive() and not receive.poll(0):
                child.join()
                raise ChildDied(
                    f"the child process running the handler died (exit code {child.exitcode})"
                )
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
            child.join()


def _reply(message: tuple[Any, ...]) -> Any:
    if message[0] == "result":
        return json.loads(message[1])
    _, name, text, trace, permanent, retry, not_json, after = message
    if permanent:
        raise PermanentError(text)
    if retry:
        when = datetime.fromisoformat(after) if isinstance(after, str) else after
        raise Retry(text, after=when)
    if not_json:
        raise NotJsonResult(text)
    raise HandlerError(f"{name}: {text}", trace)
