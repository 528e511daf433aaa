"""Handler registration, lookup and discovery.

    import haosq

    @haosq.handler("my:process-data")
    def process(payload: dict, ctx: haosq.JobContext) -> dict:
        ctx.log.info("processing", rows=len(payload["rows"]))
        return {"success": True}

A handler takes the payload, and optionally a `JobContext`. Its return value (JSON) becomes
the job's result. Raise `haosq.Retry(after=...)` to retry later, `haosq.PermanentError` to
fail at once; any other exception is retried with backoff until attempts run out.

Handlers are found through the `haosq.handlers` entry-point group (each entry point names a
module to import, or a callable to call) and through `haosq worker --import MODULE`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg

from haosq.config import Settings
from haosq.db.connection import Database
from haosq.db.queries import checkpoints as checkpoint_sql
from haosq.errors import ConfigError, UnknownJobType
from haosq.models import Job

ENTRY_POINT_GROUP = "haosq.handlers"
Executor = Literal["thread", "process"]
LEVELS = ("debug", "info", "warn", "error")


class LogSink(Protocol):
    """Where job logs go; the daemon batches them into job_logs."""

    def write(self, job_id: int, attempt: int, level: str, message: str,
              metadata: dict[str, Any] | None) -> None: ...


class JobLogger:
    """A job's logger: every line lands in job_logs, tied to the job and the attempt."""

    def __init__(self, sink: LogSink, job_id: int, attempt: int) -> None:
        self._sink = sink
        self._job_id = job_id
        self._attempt = attempt

    def log(self, level: str, message: str, **metadata: Any) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        self._sink.write(self._job_id, self._attempt, level, str(message), metadata or None)

    def debug(self, message: str, **metadata: Any) -> None:
        self.log("debug", message, **metadata)

    def info(self, message: str, **metadata: Any) -> None:
        self.log("info", message, **metadata)

    def warn(self, message: str, **metadata: Any) -> None:
        self.log("warn", message, **metadata)

    warning = warn

    def error(self, message: str, **metadata: Any) -> None:
        self.log("error", message, **metadata)


@dataclass(frozen=True)
class FollowUp:
    """A job to enqueue in the same transaction that records this job's success."""

    type: str
    payload: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


class CancelEvent(threading.Event):
    """`JobContext.cancelled`: a `threading.Event` (same methods, `isinstance` holds) that is
    cheap to create. The worker makes one per job it claims, and a stock Event builds a
    Condition with its own lock and bound methods (2 µs, a noticeable share of a short
    job's overhead); this one is a flag and a lock held while the flag is down."""

    def __init__(self) -> None:  # no Condition: every method below is overridden
        self._flag = False
        self._gate = threading.Lock()
        self._gate.acquire()
        self._guard = threading.Lock()

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set

    def set(self) -> None:
        with self._guard:
            if not self._flag:
                self._flag = True
                self._gate.release()

    def clear(self) -> None:
        with self._guard:
            if self._flag:
                self._gate.acquire()
                self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        if self._gate.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            self._gate.release()  # let every other waiter through too
        return self._flag


@dataclass
class JobContext:
    """What a handler gets besides its payload.

    `settings` carries the handler configuration (`settings.sections["handlers"]`);
    `database` is the daemon's pool, for handlers that work in PostgreSQL themselves.
    """

    job: Job
    log: JobLogger
    attempt: int
    cancelled: threading.Event
    settings: Settings
    database: Database | None = None
    deadline: datetime | None = None
    followups: list[FollowUp] = field(default_factory=list)
    _checkpoints: dict[str, Any] = field(default_factory=dict, repr=False)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit, dict rows) for the handler's own queries."""
        if self.database is None:
            raise RuntimeError("this job runs without database access")
        with self.database.connection() as conn:
            yield conn

    def handler_settings(self, name: str) -> dict[str, Any]:
        """The `[handlers.NAME]` table of the config file, or {}."""
        return dict(self.settings.sections.get("handlers", {}).get(name, {}))

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def job_id(self) -> int:
        return self.job.id

    def enqueue_on_success(self, job_type: str, payload: dict[str, Any], **options: Any) -> None:
        """Add a follow-up job, enqueued atomically with this job's completion."""
        self.followups.append(FollowUp(job_type, payload, options))

    # Checkpoints: units of work this job has finished, kept across its retries (table
    # haosq.job_checkpoints), so that a retry after a crash skips them instead of doing them
    # twice. Without a database they live in memory, for the life of this context.

    def checkpoints(self) -> dict[str, Any]:
        """Every checkpoint recorded by this job so far: key -> value."""
        if self.database is None:
            return dict(self._checkpoints)
        with self.connection() as conn:
            return checkpoint_sql.load_checkpoints(conn, self.job.id)

    def checkpoint_done(self, key: str, value: Any = True) -> None:
        """Record `key` as done (durably, at once) with a JSON `value`."""
        if self.database is None:
            self._checkpoints[key] = value
            return
        with self.connection() as conn:
            checkpoint_sql.record_checkpoint(conn, self.job.id, key, value)


@dataclass(frozen=True)
class HandlerSpec:
    type: str
    function: Callable[..., Any]
    executor: Executor = "thread"
    timeout: float | None = None
    max_attempts: int | None = None
    wants_context: bool = False
    description: str = ""

    def call(self, payload: dict[str, Any], context: JobContext) -> Any:
        if self.wants_context:
            return self.function(payload, context)
        return self.function(payload)


def _wants_context(function: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


class Registry:
    """Job type -> handler. One per process (`REGISTRY`), others for tests."""

    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}
        self._lock = threading.Lock()

    def register(
        self,
        job_type: str,
        function: Callable[..., Any],
        *,
        executor: Executor = "thread",
        timeout: float | None = None,
        max_attempts: int | None = None,
        replace: bool = False,
    ) -> HandlerSpec:
        from haosq.queue import validate_type  # the one definition of a valid type

        validate_type(job_type)
        if executor not in ("thread", "process"):
            raise ConfigError(f"unknown executor {executor!r} for {job_type}: use thread or process")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout for {job_type} must be positive")
        spec = HandlerSpec(
            type=job_type,
            function=function,
            executor=executor,
            timeout=timeout,
            max_attempts=max_attempts,
            wants_context=_wants_context(function),
            description=(inspect.getdoc(function) or "").split("\n", 1)[0],
        )
        with self._lock:
            existing = self._handlers.get(job_type)
            if existing and existing.function is not function and not replace:
                raise ConfigError(
                    f"two handlers for {job_type}: {_name(existing.function)} and {_name(function)}"
                )
            self._handlers[job_type] = spec
        return spec

    def handler(
        self,
        job_type: str,
        *,
        executor: Executor = "thread",
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
            self.register(job_type, function, executor=executor, timeout=timeout,
                          max_attempts=max_attempts)
            return function

        return decorate

    def get(self, job_type: str) -> HandlerSpec:
        spec = self._handlers.get(job_type)
        if spec is None:
            raise UnknownJobType(
                f"no handler is registered for job type {job_type!r} in this worker "
                "(register one with @haosq.handler, or load its module with --import)"
            )
        return spec

    def find(self, job_type: str) -> HandlerSpec | None:
        return self._handlers.get(job_type)

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def matching(self, selectors: Iterable[str]) -> list[str]:
        """Registered types selected by families (`email`) and exact types (`file:virus-scan`)."""
        wanted = list(selectors)
        return [t for t in self.types() if not wanted or type_selected(t, wanted)]


def type_selected(job_type: str, selectors: Iterable[str]) -> bool:
    family = job_type.split(":", 1)[0]
    return any(s in (job_type, family) for s in selectors)


def _name(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}"


REGISTRY = Registry()
handler = REGISTRY.handler

BUILTIN_MODULES: tuple[str, ...] = (
    "haosq.handlers.demo",
    "haosq.handlers.email",
    "haosq.handlers.files",
    "haosq.handlers.matrix",
    "haosq.handlers.notifications",
    "haosq.handlers.cleanup",
)


# The types the modules above register, known without importing them (importing every family
# takes a quarter of a second): `haosq add` warns about a type it cannot find here. A test
# keeps the list equal to what the modules register.
BUILTIN_TYPES: frozenset[str] = frozenset({
    "cleanup:audit-logs", "cleanup:expired-invites", "cleanup:job-logs", "cleanup:old-files",
    "demo:echo", "demo:fail", "demo:sleep",
    "email:batch", "email:digest", "email:send",
    "file:compress-media", "file:generate-thumbnails", "file:process-upload", "file:virus-scan",
    "matrix:room-cleanup", "matrix:sync-profile", "matrix:user-export",
    "notification:batch", "notification:digest", "notification:push",
})


def load_builtin_handlers() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def load_entry_points() -> list[str]:
    """Import every `haosq.handlers` entry point; returns their names."""
    loaded = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = entry.load()
        except Exception as exc:
            raise ConfigError(
                f"cannot load handler entry point {entry.name!r} ({entry.value}): {exc}"
            ) from None
        if callable(target) and not inspect.ismodule(target):
            target()
        loaded.append(entry.name)
    return loaded


def import_modules(names: Iterable[str]) -> None:
    """`--import MODULE`: import modules that register handlers.

    The current directory comes first on the import path, as with `python -m` and
    `celery -A`: a worker started in a project directory finds the project's modules (the
    console script alone would put only its own bin directory there). Process-executor
    children inherit the path."""
    names = list(names)
    if names:
        _put_current_directory_on_path()
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
                raise ConfigError(
                    f"cannot import handler module {name!r}: No module named {exc.name!r} "
                    f"(looked in {Path.cwd()} and the installed packages)"
                ) from None
            raise ConfigError(_failed_import(name, exc)) from None
        except Exception as exc:  # anything the module raises while it is imported
            raise ConfigError(_failed_import(name, exc)) from None


def _put_current_directory_on_path() -> None:
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _failed_import(name: str, exc: BaseException) -> str:
    """One line: the module, the inner error, and where in the project it was raised."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    elif frames:
        inner = [f for f in frames if "importlib" not in f.filename] or frames
        where = f" ({inner[-1].filename}, line {inner[-1].lineno})"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"handler module {name!r} failed to import: {detail}{where}"
