"""Prometheus metrics and the /healthz endpoint of one daemon (`haosq worker --metrics-port`).

One object is both a Duty (it serves HTTP in its own thread) and a WorkerObserver (it counts
what the worker reports). Queue depth and the oldest pending age are read from the database
at scrape time, cached for a few seconds so that several scrapers cost one query.

/healthz answers 200 only while the claim loop is alive (its last sign of life is recent) and
the database answers a `SELECT 1` on the endpoint's own connection; otherwise 503 with the
reason, so that a load balancer or a monitoring check sees a daemon cut off from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from psycopg.rows import dict_row

from haosq.clock import Clock, SystemClock
from haosq.daemon.duty import DutyContext, DutyFactory, ObserverFactory, WorkerSnapshot
from haosq.db.queries import metrics as queries
from haosq.errors import ConfigError
from haosq.models import Job
from haosq.secrets import mask_text

log = logging.getLogger("haosq.metrics")

DEFAULT_PORT = 9464
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
                    1800, 3600)
OUTCOMES = ("completed", "failed", "retried", "cancelled", "released")


class DatabaseProbe:
    """One connection of its own, used by /healthz and the queue collector; reconnects on
    failure with a short timeout so that a scrape never hangs on a dead server."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.url, autocommit=True, row_factory=dict_row,
                connect_timeout=max(1, int(self.timeout)),
                options=f"-c statement_timeout={int(self.timeout * 1000)}",
                application_name="haosq-metrics",
                prepare_threshold=None,  # safe behind PgBouncer transaction pooling
            )
        return self._conn

    def run(self, query: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._lock:
            try:
                return query(self._connection())
            except psycopg.Error:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class _QueueCollector(Collector):
    """Queue depth, scheduled count and oldest runnable age by type, read at scrape time."""

    def __init__(self, probe: DatabaseProbe, cache_seconds: float) -> None:
        self.probe = probe
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, list[dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    def _rows(self) -> list[dict[str, Any]] | None:
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            try:
                rows = self.probe.run(queries.pending_by_type)
            except psycopg.Error as exc:
                log.warning("queue metrics unavailable: %s", mask_text(str(exc).strip()))
                return None
            self._cached = (now, rows)
            return rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = self._rows()
        depth = GaugeMetricFamily("haosq_queue_depth", "Runnable pending jobs by type", labels=["type"])
        scheduled = GaugeMetricFamily("haosq_queue_scheduled", "Pending jobs due in the future by type",
                                      labels=["type"])
        oldest = GaugeMetricFamily("haosq_queue_oldest_pending_age_seconds",
                                   "Age of the oldest runnable job by type", labels=["type"])
        for row in rows or ():
            depth.add_metric([row["type"]], row["runnable"])
            scheduled.add_metric([row["type"]], row["scheduled"])
            oldest.add_metric([row["type"]], row["oldest_age"] or 0.0)
        up = GaugeMetricFamily("haosq_queue_metrics_up", "1 when the queue query succeeded")
        up.add_metric([], 0 if rows is None else 1)
        yield from (depth, scheduled, oldest, up)


class MetricsServer:
    """Duty + WorkerObserver: Prometheus metrics at /metrics, health at /healthz."""

    name = "metrics"

    def __init__(
        self,
        database_url: str,
        *,
        port: int = DEFAULT_PORT,
        host: str = "0.0.0.0",
        loop_stale_after: float = 60.0,
        queue_cache_seconds: float = 5.0,
        clock: Clock | None = None,
        snapshot_source: Callable[[], WorkerSnapshot] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.loop_stale_after = loop_stale_after
        self.clock = clock or SystemClock()
        self.snapshot_source = snapshot_source
        self.probe = DatabaseProbe(database_url)
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot: WorkerSnapshot | None = None
        self._busy = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

        r = self.registry
        self.claimed = Counter("haosq_jobs_claimed", "Jobs claimed by this worker", ["type"], registry=r)
        self.finished = {
            outcome: Counter(f"haosq_jobs_{outcome}", f"Jobs {outcome} by this worker", ["type"], registry=r)
            for outcome in OUTCOMES
        }
        self.duration = Histogram("haosq_job_duration_seconds", "Time one attempt ran, by type and outcome",
                                  ["type", "outcome"], buckets=DURATION_BUCKETS, registry=r)
        self.database_errors = Counter("haosq_database_errors", "Database errors the worker met",
                                       registry=r)
        self.busy_slots = Gauge("haosq_busy_slots", "Worker slots running a job", registry=r)
        self.busy_slots.set_function(self._busy_now)
        self.concurrency = Gauge("haosq_concurrency", "Worker slots", registry=r)
        self.concurrency.set_function(lambda: self._latest_attr("concurrency"))
        self.processed = Gauge("haosq_worker_processed_jobs", "Jobs this worker finished since start",
                               registry=r)
        self.processed.set_function(lambda: self._latest_attr("processed"))
        self.heartbeat_age = Gauge("haosq_heartbeat_age_seconds",
                                   "Seconds since the last successful heartbeat", registry=r)
        self.heartbeat_age.set_function(lambda: self._age("last_heartbeat_ok"))
        self.loop_age = Gauge("haosq_loop_age_seconds", "Seconds since the claim loop last ran",
                              registry=r)
        self.loop_age.set_function(lambda: self._age("loop_alive_at"))
        self.ready = Gauge("haosq_ready", "1 once the worker is ready, 0 while starting or stopping",
                           registry=r)
        self.ready.set_function(self._ready_now)
        r.register(_QueueCollector(self.probe, queue_cache_seconds))

    # -- snapshot access --------------------------------------------------------------------
    def _latest(self) -> WorkerSnapshot | None:
        if self.snapshot_source is not None:
            try:
                return self.snapshot_source()
            except Exception:  # a broken source must not break a scrape
                log.exception("worker snapshot unavailable")
        with self._lock:
            return self._snapshot

    def _latest_attr(self, name: str) -> float:
        snapshot = self._latest()
        return float(getattr(snapshot, name)) if snapshot else 0.0

    def _busy_now(self) -> float:
        if self.snapshot_source is not None:
            return self._latest_attr("busy")
        with self._lock:
            return float(self._busy)

    def _ready_now(self) -> float:
        snapshot = self._latest()
        return 1.0 if snapshot and snapshot.ready and not snapshot.stopping else 0.0

    def _age(self, name: str) -> float:
        snapshot = self._latest()
        moment: datetime | None = getattr(snapshot, name) if snapshot else None
        if moment is None:
            return float("nan")
        return max(0.0, (self.clock.now() - moment).total_seconds())

    # -- health -----------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """(healthy, reason): the claim loop is alive and the database answers."""
        snapshot = self._latest()
        if snapshot is None or not snapshot.ready:
            return False, "starting"
        if snapshot.stopping:
            return False, "stopping"
        # The database first: when it is away the claim loop backs off too, and the
        # database is the cause worth reporting.
        try:
            self.probe.run(queries.ping)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return False, f"database unreachable: {mask_text(reason)}"
        loop_age = self._age("loop_alive_at")
        if not loop_age <= self.loop_stale_after:
            return False, f"claim loop silent for {loop_age:.0f}s"
        return True, "ok"

    # -- WorkerObserver ---------------------------------------------------------------------
    def _remember(self, snapshot: WorkerSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._busy = snapshot.busy

    def on_ready(self, snapshot: WorkerSnapshot) -> None:
        self._remember(snapshot)

    def on_heartbeat(self, snapshot: WorkerSnapshot) -> None:
        self._remember(snapshot)

    def on_stopping(self, snapshot: WorkerSnapshot) -> None:
        self._remember(snapshot)

    def on_job_claimed(self, job: Job) -> None:
        self.claimed.labels(job.type).inc()
        with self._lock:
            self._busy += 1

    def on_job_finished(self, job: Job, outcome: str, duration_seconds: float) -> None:
        counter = self.finished.get(outcome)
        if counter is not None:
            counter.labels(job.type).inc()
        self.duration.labels(job.type, outcome).observe(max(0.0, duration_seconds))
        with self._lock:
            self._busy = max(0, self._busy - 1)

    def on_database_error(self, error: BaseException) -> None:
        self.database_errors.inc()

    # -- Duty -------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        except OSError as exc:
            raise ConfigError(f"metrics port {self.host}:{self.port}: {exc.strerror}") from None
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="haosq-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", self.host, self.port)

    def stop(self, timeout: float) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.probe.close()


def _handler_for(metrics: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "haosq-metrics"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                healthy, reason = metrics.health()
                self._reply(200 if healthy else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            return None

    return Handler


def metrics_factories(port: int, host: str | None = None) -> tuple[DutyFactory, ObserverFactory]:
    """A duty factory and an observer factory that share one MetricsServer per worker
    (`haosq worker --metrics-port`). The bind address defaults to every interface, as
    Prometheus exporters do; `[metrics] host` in the config file narrows it."""
    servers: dict[str, MetricsServer] = {}

    def server_for(context: DutyContext) -> MetricsServer:
        if context.token not in servers:
            section = context.settings.sections.get("metrics") or {}
            settings = context.settings
            stale = max(2 * settings["worker.heartbeat_interval_ms"],
                        10 * settings["worker.poll_interval_ms"]) / 1000
            servers[context.token] = MetricsServer(
                context.database.url, port=port, host=host or str(section.get("host", "0.0.0.0")),
                loop_stale_after=stale, clock=context.clock, snapshot_source=context.snapshot)
        return servers[context.token]

    return server_for, server_for
