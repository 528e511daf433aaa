"""WorkerService: the life of one daemon process.

    start:  open the pool, register in `workers` (fresh owner token), start the worker
            threads, the claim loop, the LISTEN connection, the heartbeat, then the duties;
            observers hear `on_ready`.
    run:    heartbeats every interval (counters, cancel checks, stale-worker rescue, counter
            compaction); SIGTERM / SIGINT begin shutdown, a second one stops at once.
    stop:   stop claiming (status `stopping`), let running jobs finish within the shutdown
            timeout, release the rest to `pending` without counting the attempt, stop the
            duties in reverse order, deregister (status `stopped`).

SIGHUP does not reload the configuration (settings shape the pool, the threads and the
claim filter, which cannot change under running jobs): it is logged and ignored; restart
the worker to apply new settings (`systemctl restart haosq-worker@NAME`).

Connections: the pool holds up to `concurrency + 3` connections (one per worker thread for
handlers that use `ctx.connection()`, one for the claim loop, one for the heartbeat, one for
duties), plus one dedicated LISTEN connection outside the pool.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import psycopg

from haosq.clock import Clock, SystemClock
from haosq.config import Settings
from haosq.daemon.duty import (
    Duty,
    DutyContext,
    DutyFactory,
    ObserverFactory,
    WorkerObserver,
    WorkerSnapshot,
    notify_observers,
)
from haosq.daemon.execution import RetryPolicy
from haosq.daemon.listener import Listener
from haosq.daemon.worker import Identity, JobWorker, default_worker_id
from haosq.db.connection import Database
from haosq.db.queries import claims
from haosq.db.queries.workers import mark_dead_workers, rescue_orphaned_jobs
from haosq.errors import WorkerIdInUse
from haosq.handlers.registry import REGISTRY, Registry

log = logging.getLogger("haosq.worker")

COMPACT_EVERY_SECONDS = 5.0
FIRST_CLAIM_WAIT_SECONDS = 10.0


# Allocations between two young-generation collections in the daemon (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """For the daemon process, once started. It allocates a few dozen short-lived objects per
    job and keeps almost none, and almost none of them are in reference cycles; at the default
    threshold the collector ran every ~20 jobs and rescanned the survivors of every module and
    handler each time (a fifth of the worker's CPU on short jobs). Freezing moves everything
    alive after start-up (modules, handlers, pool, threads) out of the collector's sight, and
    a higher threshold makes young collections rarer; cycles are still collected."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
    log.info("garbage collector: %d start-up objects frozen, young generation collected every "
             "%d allocations", gc.get_freeze_count(), GC_YOUNG_THRESHOLD)


class WorkerService:
    """One daemon: a JobWorker plus registration, heartbeats, signals, duties, observers."""

    def __init__(
        self,
        settings: Settings,
        *,
        database: Database | None = None,
        registry: Registry = REGISTRY,
        clock: Clock | None = None,
        worker_class: type[JobWorker] = JobWorker,
        duties: Sequence[DutyFactory] = (),
        observers: Sequence[WorkerObserver] = (),
        observer_factories: Sequence[ObserverFactory] = (),
        policy: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.concurrency: int = settings["worker.concurrency"]
        self._own_database = database is None
        self.database = database or Database(settings, min_size=2, max_size=self.concurrency + 3)
        self.registry = registry
        self.clock = clock or SystemClock()
        self.identity = Identity(
            worker_id=settings["worker.id"] or default_worker_id(),
            token=str(uuid.uuid4()),
            pid=os.getpid(),
        )
        self.heartbeat_seconds: float = settings["worker.heartbeat_interval_ms"] / 1000
        self.stale_after = timedelta(
            seconds=self.heartbeat_seconds * settings["worker.stale_after_heartbeats"])
        self.observers: list[WorkerObserver] = list(observers)
        self._observer_factories = list(observer_factories)
        self._duty_factories = list(duties)
        self.duties: list[Duty] = []
        self.worker = worker_class(
            settings, self.database, self.identity, registry=registry, clock=self.clock,
            policy=policy, observers=self.observers,
        )
        self.listener: Listener | None = None
        self._stop_requested = threading.Event()
        self._stop_now = threading.Event()
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._ready = False
        self._stopping = False
        self._stopped = False
        self._last_heartbeat_ok: datetime | None = None
        self._last_compact = 0.0
        self._signals = 0

    # -- public --------------------------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return self.identity.worker_id

    @property
    def token(self) -> str:
        return self.identity.token

    def snapshot(self) -> WorkerSnapshot:
        w = self.worker
        return WorkerSnapshot(
            worker_id=self.identity.worker_id,
            concurrency=self.concurrency,
            busy=w.busy,
            processed=w.processed,
            succeeded=w.succeeded,
            failed=w.failed,
            ready=self._ready,
            stopping=self._stopping,
            last_heartbeat_ok=self._last_heartbeat_ok,
            loop_alive_at=w.loop_alive_at,
        )

    def context(self) -> DutyContext:
        return DutyContext(
            settings=self.settings, database=self.database, clock=self.clock,
            worker_id=self.identity.worker_id, token=self.identity.token,
            snapshot=self.snapshot, wake=self.worker.wake, stopping=lambda: self._stopping,
        )

    def start(self) -> None:
        """Register and start everything; returns once the worker is claiming."""
        self._register()
        try:
            self._start_registered()
        except BaseException:
            # A duty that refuses its configuration (say, an invalid [[schedules]] entry) must
            # not leave this worker registered as active with jobs it claimed meanwhile.
            self.request_stop(at_once=True)
            self.stop(timeout=0)
            raise

    def _start_registered(self) -> None:
        log.info("worker %s started (pid %s, %d thread(s), types: %s, listen: %s)",
                 self.identity.worker_id, self.identity.pid, self.concurrency,
                 ",".join(self.worker.selectors) or "none", self.settings["worker.listen"])
        context = self.context()
        # Observers first, so that they hear about the jobs of the very first claim.
        for factory in self._observer_factories:
            self.observers.append(factory(context))
        self.worker.observers = self.observers
        self.worker.start()
        if self.settings["worker.listen"]:
            self.listener = Listener(
                self.database.url, on_jobs=self.worker.wake, on_cancel=self.worker.request_cancel,
                on_error=self._database_error,
            )
            self.listener.start()
            self.listener.connected.wait(5.0)
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop,
                                                  name="haosq-heartbeat", daemon=True)
        self._heartbeat_thread.start()
        for factory in self._duty_factories:
            duty = factory(context)
            duty.start()
            self.duties.append(duty)
            log.info("duty %s started", getattr(duty, "name", type(duty).__name__))
        # Ready means claiming: wait for the first claim round trip (bounded, so that a slow
        # database delays READY=1 a little instead of failing the start).
        if not self.worker.first_cycle.wait(FIRST_CLAIM_WAIT_SECONDS):
            log.warning("no claim round trip within %gs; reporting ready anyway",
                        FIRST_CLAIM_WAIT_SECONDS)
        self._ready = True
        self._notify("on_ready", self.snapshot())

    def request_stop(self, *, at_once: bool = False) -> None:
        """Begin a graceful shutdown (or skip the wait for running jobs)."""
        self._stop_requested.set()
        if at_once:
            self._stop_now.set()

    def wait(self) -> None:
        """Block until a stop is requested (signals are only seen in the main thread)."""
        while not self._stop_requested.wait(0.5):
            pass

    def run(self, *, install_signals: bool = True) -> int:
        """start(), wait for SIGTERM/SIGINT, stop(); returns the exit code (0)."""
        if install_signals and threading.current_thread() is threading.main_thread():
            self._install_signals()
        self.start()
        tune_garbage_collector()
        try:
            self.wait()
        finally:
            self.stop()
        return 0

    def stop(self, timeout: float | None = None) -> list[int]:
        """Graceful shutdown; returns the ids of jobs released back to pending."""
        if self._stopped:
            return []
        self._stopping = True
        grace = self.settings["worker.shutdown_timeout_seconds"] if timeout is None else timeout
        log.info("worker %s stopping: %d job(s) running, waiting up to %gs", self.identity.worker_id,
                 self.worker.busy, 0 if self._stop_now.is_set() else grace)
        self._notify("on_stopping", self.snapshot())
        self.worker.stop_claiming()
        self._set_status("stopping")
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not self._stop_now.is_set():
            if self.worker.wait_idle(min(0.1, max(deadline - time.monotonic(), 0))):
                break
        released = self.worker.release_running()
        self.worker.stop()
        for duty in reversed(self.duties):
            try:
                duty.stop(5.0)
            except Exception:
                log.exception("duty %s failed to stop", getattr(duty, "name", duty))
        if self.listener is not None:
            self.listener.stop()
        self._heartbeat_stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(5.0)
        self._set_status("stopped")
        if self._own_database:
            self.database.close()
        self._stopped = True
        log.info("worker %s stopped: %d processed, %d succeeded, %d failed, %d released",
                 self.identity.worker_id, self.worker.processed, self.worker.succeeded,
                 self.worker.failed, len(released))
        return released

    # -- registration and heartbeats ---------------------------------------------------------

    def _register(self) -> None:
        with self.database.connection() as conn:
            holder = claims.register_worker(
                conn, token=self.identity.token, worker_id=self.identity.worker_id,
                pid=self.identity.pid, hostname=socket.gethostname(),
                concurrency=self.concurrency, job_types=list(self.worker.selectors),
                stale_after=self.stale_after,
            )
        if holder is not None:
            raise WorkerIdInUse(
                f"worker id {self.identity.worker_id!r} is in use by a live worker "
                f"(pid {holder['pid']} on {holder['hostname']}); choose another --worker-id "
                "or stop that worker"
            )
        self._last_heartbeat_ok = datetime.now(UTC)

    def _set_status(self, status: str) -> None:
        w = self.worker
        try:
            with self.database.connection(timeout=5.0) as conn:
                claims.set_worker_status(conn, self.identity.token, status, processed=w.processed,
                                         succeeded=w.succeeded, failed=w.failed)
        except (psycopg.Error, Exception) as exc:  # shutdown must go on
            self._database_error(exc)

    def heartbeat(self) -> None:
        """One heartbeat: prove liveness, check cancels, rescue the jobs of dead workers."""
        w = self.worker
        with self.database.connection(timeout=self.heartbeat_seconds * 2 + 1) as conn:
            status = claims.heartbeat(conn, self.identity.token, processed=w.processed,
                                      succeeded=w.succeeded, failed=w.failed)
            if status is None:
                log.error("this worker's row in haosq.workers is gone; its jobs may be rescued")
            self._last_heartbeat_ok = datetime.now(UTC)
            for job_id in claims.cancel_requested(conn, self.identity.token, w.running_ids()):
                w.request_cancel(job_id)
            dead = mark_dead_workers(conn, self.stale_after)
            if dead:
                log.warning("marked silent worker(s) dead: %s", ", ".join(dead))
            rescued = rescue_orphaned_jobs(conn, self.stale_after, self.settings["worker.max_attempts"])
            if rescued:
                log.warning("rescued %d job(s) of dead workers: %s", len(rescued),
                            ", ".join(f"{r['id']}->{r['status']}" for r in rescued))
                w.wake()
            if time.monotonic() - self._last_compact >= COMPACT_EVERY_SECONDS:
                claims.compact_job_counts(conn)
                self._last_compact = time.monotonic()
        log.debug("heartbeat ok (%d busy)", w.busy)
        self._notify("on_heartbeat", self.snapshot())

    def _heartbeat_loop(self) -> None:
        while not self._heartbeat_stop.wait(self.heartbeat_seconds):
            try:
                self.heartbeat()
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("heartbeat failed: %s", first)
                self._database_error(exc)

    # -- signals and observers ------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_sighup)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("%s received: finishing running jobs (again to stop at once)", name)
            self.request_stop()
        else:
            log.info("%s received again: stopping at once", name)
            self.request_stop(at_once=True)

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        log.warning("SIGHUP received: configuration reload is not supported; restart the worker "
                    "to apply new settings")

    def _notify(self, event: str, *args: Any) -> None:
        notify_observers(self.observers, event, *args)

    def _database_error(self, exc: BaseException) -> None:
        self._notify("on_database_error", exc)
