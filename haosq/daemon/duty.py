"""The contract between the daemon's process lifecycle and the things that run beside the
claim loop (the schedule loop, maintenance, metrics, systemd notification).

Every background duty is one small object with a start/stop protocol; the service starts
them after the worker is registered and stops them in reverse order on shutdown. Observers
hear about the worker's life without being able to change it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from haosq.clock import Clock
    from haosq.config import Settings
    from haosq.db.connection import Database
    from haosq.models import Job


class Duty(Protocol):
    """A background duty of the daemon."""

    name: str

    def start(self) -> None:
        """Begin work (in its own thread if it loops); must return promptly."""

    def stop(self, timeout: float) -> None:
        """Stop and wait at most `timeout` seconds; must be safe to call twice."""


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """The live state of one daemon, cheap to take at any time."""

    worker_id: str
    concurrency: int
    busy: int
    processed: int
    succeeded: int
    failed: int
    ready: bool
    stopping: bool
    last_heartbeat_ok: datetime | None
    loop_alive_at: datetime | None


class WorkerObserver(Protocol):
    """Hears the worker's lifecycle events. Called from daemon threads: keep it quick and
    never raise (a failing observer is logged and ignored)."""

    def on_ready(self, snapshot: WorkerSnapshot) -> None: ...

    def on_heartbeat(self, snapshot: WorkerSnapshot) -> None: ...

    def on_job_claimed(self, job: Job) -> None: ...

    def on_job_finished(self, job: Job, outcome: str, duration_seconds: float) -> None:
        """outcome: completed, failed, retried, cancelled or released."""

    def on_database_error(self, error: BaseException) -> None: ...

    def on_stopping(self, snapshot: WorkerSnapshot) -> None: ...


@dataclass(frozen=True)
class DutyContext:
    """What a duty factory gets from the service that runs it.

    `snapshot()` is the worker's live state; `wake()` tells the claim loop that jobs may be
    waiting (for a duty that enqueues jobs on a connection without NOTIFY);
    `stopping` is set when shutdown begins."""

    settings: Settings
    database: Database
    clock: Clock
    worker_id: str
    token: str
    snapshot: Callable[[], WorkerSnapshot]
    wake: Callable[[], None]
    stopping: Callable[[], bool] = field(default=lambda: False)


DutyFactory = Callable[[DutyContext], Duty]
ObserverFactory = Callable[[DutyContext], WorkerObserver]

# What `haosq worker` runs besides the claim loop. A module that provides a duty or an
# observer appends its factory here at import, and its name to PLUGIN_MODULES so that the
# `haosq worker` command imports it.
DEFAULT_DUTY_FACTORIES: list[DutyFactory] = []
DEFAULT_OBSERVER_FACTORIES: list[ObserverFactory] = []
PLUGIN_MODULES: list[str] = ["haosq.daemon.notify", "haosq.daemon.scheduler",
                             "haosq.daemon.maintenance", "haosq.daemon.webhook_routes"]


def register_duty(factory: DutyFactory) -> DutyFactory:
    """Add a duty factory to every `haosq worker` (usable as a decorator)."""
    DEFAULT_DUTY_FACTORIES.append(factory)
    return factory


def register_observer(factory: ObserverFactory) -> ObserverFactory:
    """Add an observer factory to every `haosq worker` (usable as a decorator)."""
    DEFAULT_OBSERVER_FACTORIES.append(factory)
    return factory


_log = logging.getLogger("haosq.daemon")


def notify_observers(observers: Iterable[object], event: str, *args: object) -> None:
    """Call `event` on every observer that has it; one that raises is logged and ignored."""
    for observer in observers:
        method = getattr(observer, event, None)
        if method is None:
            continue
        try:
            method(*args)
        except Exception:
            _log.exception("observer %s.%s raised; ignored", type(observer).__name__, event)
