"""Completion webhooks in the daemon: the `haosq:webhook` handler is registered, and the
`[webhooks.routes]` of the configuration are written to the database before the first claim,
so that the finishing statement (migration 0005) knows which jobs to announce."""

from __future__ import annotations

import logging

import haosq.handlers.webhooks  # noqa: F401  (registers the haosq:webhook job type)
from haosq.daemon.duty import DutyContext, WorkerSnapshot, register_observer
from haosq.models import Job
from haosq.webhooks import load_webhook_config, sync_routes

log = logging.getLogger("haosq.webhooks")


class _Quiet:
    """Routes are written once at start; nothing to hear afterwards."""

    def on_ready(self, snapshot: WorkerSnapshot) -> None: ...

    def on_heartbeat(self, snapshot: WorkerSnapshot) -> None: ...

    def on_job_claimed(self, job: Job) -> None: ...

    def on_job_finished(self, job: Job, outcome: str, duration_seconds: float) -> None: ...

    def on_database_error(self, error: BaseException) -> None: ...

    def on_stopping(self, snapshot: WorkerSnapshot) -> None: ...


def webhook_routes(context: DutyContext) -> _Quiet:
    settings = context.settings
    if "webhooks" in settings.sections:
        config = load_webhook_config(settings)
        with context.database.connection() as conn:
            sync_routes(conn, config)
        log.info("webhook routes: %s", ", ".join(sorted(config.routes)) or "none")
    return _Quiet()


# Listed in PLUGIN_MODULES, so that `haosq worker` imports this module and registers it.
register_observer(webhook_routes)
