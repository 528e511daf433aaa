"""`haosq worker`: the daemon systemd runs (`haosq-worker@email` -> `haosq worker --types email`)."""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from typing import Annotated

import typer

from haosq.cli.common import state
from haosq.config import Settings
from haosq.errors import ConfigError
from haosq.secrets import MaskingFilter
from haosq.tui.format import visible

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "warn": logging.WARNING, "error": logging.ERROR}


class VisibleFormatter(logging.Formatter):
    """Log lines whose control characters are shown as escapes: a job's data in a message
    never drives the terminal that follows the journal."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


def setup_logging(level_name: str) -> None:
    """One line per event on stderr (journald adds its own timestamps, but a terminal does not).

    `DEBUG=jobs:*` (or `DEBUG=haosq*`) turns on debug output, like the seed's convention."""
    debug_env = os.environ.get("DEBUG", "")
    if any(part.strip() in ("jobs:*", "haosq", "haosq*", "haosq:*", "*")
           for part in debug_env.split(",")):
        level_name = "debug"
    level = LEVELS.get(level_name.lower())
    if level is None:
        raise ConfigError(f"--log-level {level_name!r}: use debug, info, warning or error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(VisibleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskingFilter())  # no passwords or tokens in the journal
    root = logging.getLogger("haosq")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def load_handlers(modules: list[str]) -> None:
    """Built-in handlers, then `haosq.handlers` entry points, then `--import` modules."""
    from haosq.handlers.registry import import_modules, load_builtin_handlers, load_entry_points

    load_builtin_handlers()
    load_entry_points()
    import_modules(modules)


def load_plugins() -> None:
    """Import the modules that add duties and observers to every worker."""
    from haosq.daemon.duty import PLUGIN_MODULES

    for name in list(PLUGIN_MODULES):
        importlib.import_module(name)


FAMILY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def check_selectors(selectors: tuple[str, ...]) -> None:
    """--types: families (`email`) and exact types (`file:virus-scan`), nothing else."""
    from haosq.errors import InvalidJob
    from haosq.queue import validate_type

    for selector in selectors:
        if ":" in selector:
            try:
                validate_type(selector)
            except InvalidJob as exc:
                raise ConfigError(f"--types: {exc}") from None
        elif not FAMILY.match(selector):
            raise ConfigError(
                f"--types: {selector!r} is neither a family (lowercase letters, digits, '-', '_', "
                "'.') nor a family:action type"
            )


def worker_settings(
    settings: Settings, *, concurrency: int | None, types: str | None, worker_id: str | None,
    poll_interval: int | None, heartbeat_interval: int | None, shutdown_timeout: float | None,
    no_listen: bool, log_level: str | None,
) -> Settings:
    return settings.with_overrides(**{
        "worker.concurrency": concurrency,
        "worker.types": types,
        "worker.id": worker_id,
        "worker.poll_interval_ms": poll_interval,
        "worker.heartbeat_interval_ms": heartbeat_interval,
        "worker.shutdown_timeout_seconds": shutdown_timeout,
        "worker.listen": False if no_listen else None,
        "log_level": log_level,
    })


def worker(
    ctx: typer.Context,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", "-c", help="worker threads (default HAOSQ_CONCURRENCY, 1); "
        "the pool holds concurrency + 3 connections", show_default=False)] = None,
    types: Annotated[str | None, typer.Option(
        "--types", help="families (email) and exact types (file:virus-scan), comma-separated; "
        "default: every type with a handler here", show_default=False)] = None,
    worker_id: Annotated[str | None, typer.Option(
        "--worker-id", help="name among live workers (default hostname-pid)",
        show_default=False)] = None,
    poll_interval: Annotated[int | None, typer.Option(
        "--poll-interval", help="fallback polling period in ms (default 1000)",
        show_default=False)] = None,
    heartbeat_interval: Annotated[int | None, typer.Option(
        "--heartbeat-interval", help="heartbeat period in ms (default 30000)",
        show_default=False)] = None,
    shutdown_timeout: Annotated[float | None, typer.Option(
        "--shutdown-timeout", help="seconds running jobs get to finish on SIGTERM (default 30)",
        show_default=False)] = None,
    no_listen: Annotated[bool, typer.Option(
        "--no-listen", help="poll only, no LISTEN (PgBouncer transaction pooling)")] = False,
    imports: Annotated[list[str] | None, typer.Option(
        "--import", help="module that registers handlers (repeatable)", show_default=False)] = None,
    log_level: Annotated[str | None, typer.Option(
        "--log-level", help="debug, info, warning, error (DEBUG=jobs:* also enables debug)",
        show_default=False)] = None,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", envvar="HAOSQ_METRICS_PORT", min=0, max=65535,
        help="serve Prometheus /metrics and /healthz on this port (e.g. 9464)",
        show_default=False)] = None,
) -> None:
    """Run jobs until SIGTERM or SIGINT (graceful), or a second signal (at once)."""
    from haosq.daemon.duty import DEFAULT_DUTY_FACTORIES, DEFAULT_OBSERVER_FACTORIES
    from haosq.daemon.service import WorkerService

    settings = worker_settings(
        state(ctx).settings, concurrency=concurrency, types=types, worker_id=worker_id,
        poll_interval=poll_interval, heartbeat_interval=heartbeat_interval,
        shutdown_timeout=shutdown_timeout, no_listen=no_listen, log_level=log_level,
    )
    check_selectors(settings["worker.types"])
    setup_logging(settings["log_level"])
    load_handlers(list(imports or []))
    load_plugins()
    duties, observers = list(DEFAULT_DUTY_FACTORIES), list(DEFAULT_OBSERVER_FACTORIES)
    if metrics_port is not None:
        from haosq.daemon.metrics import metrics_factories

        metrics_duty, metrics_observer = metrics_factories(metrics_port)
        duties.append(metrics_duty)
        observers.append(metrics_observer)
    service = WorkerService(settings, duties=duties, observer_factories=observers)
    raise typer.Exit(service.run())


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
