"""JobWorker: the claim loop, the worker threads and the batched acknowledgements.

One loop thread does all the database work of the hot path; worker threads only run
handlers. Each turn of the loop:

1. writes buffered job logs and acknowledges every attempt that ended since the last turn,
   in one statement for all of them (guarded by status, owner token and attempt);
2. fails attempts that ran past their time limit;
3. when slots are free and there may be work (a notification for one of its types, the
   poll interval elapsed, or the last claim filled every slot), claims up to that many jobs
   in one `FOR UPDATE SKIP LOCKED` statement and hands them to the threads.

Claims start where this worker's last claim ended (`ClaimPosition`), not at the head of the
queue: the index entries of claimed jobs linger until vacuum removes them (indefinitely while
some transaction holds back the xmin horizon), and a claim from the head walks all of them.
A claim from the head still runs regularly, for jobs that land behind the position: at
most a twentieth of the loop's time goes to it, so it runs on almost every turn when it is
cheap and rarely when the lingering entries make it dear.

No transaction is open while a handler runs: the claim commits before the handler starts,
the acknowledgement is a separate statement after it returns.

Extension points: subclass and override the hooks (they run in the worker thread, around the
handler; an exception in a hook is logged and ignored)::

    class AuditedWorker(JobWorker):
        def on_job_start(self, job):
            metrics.gauge("jobs.running").inc()

        def on_job_complete(self, job, result):
            audit.record(job.id, "done", result)

        def on_job_failed(self, job, error):
            audit.record(job.id, "failed", repr(error))

    WorkerService(settings, worker_class=AuditedWorker).run()
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from haosq.clock import Clock, SystemClock
from haosq.config import Settings
from haosq.daemon.duty import notify_observers
from haosq.daemon.execution import (
    JobTimedOut,
    Outcome,
    RetryPolicy,
    Running,
    decide,
    invoke,
)
from haosq.db.connection import Database
from haosq.db.queries import claims
from haosq.db.queries.claims import Ack, ClaimPosition, TypeFilter
from haosq.db.queries.jobs import add_logs
from haosq.errors import UnknownJobType
from haosq.handlers.registry import REGISTRY, CancelEvent, JobContext, JobLogger, Registry
from haosq.models import Job

if TYPE_CHECKING:
    from haosq.daemon.duty import WorkerObserver

log = logging.getLogger("haosq.worker")

DB_RETRY_MAX_SECONDS = 2.0

# A claim from the head of the queue is next allowed this many times its own duration after
# it ended: claims from the head take at most 1/20 of the loop's time.
HEAD_CLAIM_SPACING = 20


@dataclass(frozen=True)
class Identity:
    """Who this worker process is in the workers table."""

    worker_id: str
    token: str
    pid: int


class _LogBuffer:
    """Job log lines from every thread, written in batches by the loop."""

    def __init__(self) -> None:
        self._lines: list[tuple[int, int | None, str, str, dict[str, Any] | None]] = []
        self._lock = threading.Lock()

    def write(self, job_id: int, attempt: int, level: str, message: str,
              metadata: dict[str, Any] | None) -> None:
        # Whatever a handler passes, the batch insert must not fail on it (text cannot hold
        # NUL in PostgreSQL, metadata must be JSON).
        message = message.replace("\x00", "\\x00")
        if metadata:
            text = json.dumps(metadata, default=str).replace("\\u0000", "\\\\x00")
            metadata = json.loads(text)
        with self._lock:
            self._lines.append((job_id, attempt, level, message, metadata))

    def take(self) -> list[tuple[int, int | None, str, str, dict[str, Any] | None]]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines

    def put_back(self, lines: list[tuple[int, int | None, str, str, dict[str, Any] | None]]) -> None:
        with self._lock:
            self._lines[:0] = lines


class JobWorker:
    """Claims and runs jobs. Started and stopped by `WorkerService`, which owns registration,
    heartbeats and signals; usable on its own in tests through `start()` / `stop()`."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        identity: Identity,
        *,
        registry: Registry = REGISTRY,
        clock: Clock | None = None,
        policy: RetryPolicy | None = None,
        observers: Sequence[WorkerObserver] = (),
        selectors: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.identity = identity
        self.registry = registry
        self.clock = clock or SystemClock()
        # Only a test clock is sent to the database; production compares with now() there.
        self._db_clock = None if isinstance(self.clock, SystemClock) else self.clock
        self.policy = policy or RetryPolicy(
            settings["worker.backoff_base_seconds"],
            settings["worker.backoff_cap_seconds"],
            settings["worker.max_attempts"],
        )
        self.observers = list(observers)
        self.concurrency: int = settings["worker.concurrency"]
        self.poll_seconds: float = settings["worker.poll_interval_ms"] / 1000
        chosen = tuple(settings["worker.types"]) if selectors is None else tuple(selectors)
        # Asked for nothing in particular: run the types this process has handlers for, and
        # leave other types to the workers that have theirs.
        self.selectors: tuple[str, ...] = chosen or tuple(registry.types())
        self.type_filter = TypeFilter.from_selectors(self.selectors)

        self._tasks: queue.SimpleQueue[Running | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, Running] = {}
        self._finished: list[Outcome] = []
        self._finished_lock = threading.Lock()
        self._logs = _LogBuffer()
        self._event = threading.Event()
        self._want_claim = True
        self._wake_generation = 0
        self._claiming = True
        self._stop_loop = False
        self._loop: threading.Thread | None = None
        self._db_trouble = False
        self._abandoned = 0
        # When the earliest retry this worker scheduled falls due (monotonic), so that a short
        # backoff does not wait for the next poll.
        self._retry_due: float | None = None
        # Where the last claim ended, when the next claim from the head is allowed
        # (monotonic), and whether one is wanted then (a claim from the position came back
        # short: jobs may be waiting behind it).
        self._position: ClaimPosition | None = None
        self._head_claim_ended = 0.0
        self._head_claim_took = 0.0
        self._head_claim_wanted = False
        self.head_claim_spacing: float = HEAD_CLAIM_SPACING

        self.processed = 0
        self.succeeded = 0
        self.failed = 0
        self.refused_acks = 0
        self.loop_alive_at: datetime | None = None
        # Turns of the claim loop since start (a loop that spins shows here).
        self.loop_turns = 0
        # Set once the first claim round trip succeeded: the service reports READY=1 after it.
        self.first_cycle = threading.Event()
        self._queue: Any = None
        # Hooks a subclass did not override are not called (twice per job on the hot path).
        self._start_hook = type(self).on_job_start is not JobWorker.on_job_start
        self._complete_hook = type(self).on_job_complete is not JobWorker.on_job_complete

    # -- hooks ----------------------------------------------------------------------------

    def on_job_start(self, job: Job) -> None:
        """Called in the worker thread just before the handler runs."""

    def on_job_complete(self, job: Job, result: Any) -> None:
        """Called in the worker thread after the handler returned a JSON result."""

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        """Called in the worker thread after the attempt failed (retried or not)."""

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._start_thread()
        self._loop = threading.Thread(target=self._run_loop, name="haosq-claim", daemon=True)
        self._loop.start()

    def wake(self, types: set[str] | None = None) -> None:
        """A hint that jobs may be waiting (None: any type)."""
        if types is not None and not any(self.type_filter.selects(t) for t in types):
            return
        self._wake_generation += 1
        self._want_claim = True
        self._event.set()

    def request_cancel(self, job_id: int) -> bool:
        running = self._running.get(job_id)
        if running is None:
            return False
        if not running.cancel_requested:
            log.info("job %s (%s): cancel requested", job_id, running.job.type)
        running.cancel_requested = True
        running.context.cancelled.set()
        self._event.set()
        return True

    def stop_claiming(self) -> None:
        self._claiming = False
        self._event.set()

    @property
    def busy(self) -> int:
        return len(self._running)

    def running_ids(self) -> list[int]:
        return list(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no attempt is running and every outcome is acknowledged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._running and not self._finished:
                return True
            time.sleep(0.02)
        return not self._running and not self._finished

    def release_running(self) -> list[int]:
        """Shutdown: give every unfinished attempt back to pending, its attempt uncounted.
        Handlers still running are told to stop (process children are killed); whatever
        they return later is discarded."""
        released: list[Running] = []
        for running in list(self._running.values()):
            if running.settle():
                running.context.cancelled.set()
                released.append(running)
        if not released:
            return []
        held = [(r.job.id, r.job.attempts) for r in released]
        ids: list[int] = []
        for pause in (0.0, 0.2, 0.5, 1.0):
            time.sleep(pause)
            try:
                with self.database.connection() as conn:
                    ids = claims.release_jobs(conn, self.identity.token, held)
                break
            except psycopg.Error as exc:
                self._database_error(exc, "releasing jobs")
        for running in released:
            self._running.pop(running.job.id, None)
            self._notify("on_job_finished", running.job, "released",
                         time.monotonic() - running.started)
        log.info("released %d unfinished job(s) back to pending: %s", len(ids),
                 ",".join(map(str, ids)) or "-")
        return ids

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (after a final flush) and the threads."""
        self._claiming = False
        self._stop_loop = True
        self._event.set()
        if self._loop is not None:
            self._loop.join(timeout)
        for _ in self._threads:
            self._tasks.put(None)

    # -- the loop -------------------------------------------------------------------------

    def _run_loop(self) -> None:
        last_poll = 0.0
        pause = 0.0
        while True:
            self._event.clear()
            self.loop_alive_at = datetime.now(UTC)
            self.loop_turns += 1
            if pause:
                time.sleep(pause)
            try:
                self._enforce_deadlines()
                now = time.monotonic()
                if now - last_poll >= self.poll_seconds:
                    self._want_claim = True
                    last_poll = now
                if self._retry_due is not None and now >= self._retry_due:
                    self._want_claim = True
                    self._retry_due = None
                if self._head_claim_wanted and now >= self._head_claim_at():
                    self._want_claim = True
                self._cycle()
                self.first_cycle.set()
                pause = 0.0
            except psycopg.Error as exc:
                self._database_error(exc, "claim loop")
                pause = min(max(pause * 2, 0.05), DB_RETRY_MAX_SECONDS)
                self._db_trouble = True
                continue
            except Exception:
                # The loop must outlive any surprise; the unacknowledged work stays queued.
                log.exception("unexpected error in the claim loop")
                pause = min(max(pause * 2, 0.05), DB_RETRY_MAX_SECONDS)
                continue
            if self._stop_loop:
                if not self._finished:
                    break
                continue
            if self._want_claim and self._claiming and len(self._running) < self.concurrency:
                continue
            if self._finished:
                continue
            wait = self.poll_seconds - (time.monotonic() - last_poll)
            deadline = self._next_deadline()
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            if self._retry_due is not None:
                wait = min(wait, self._retry_due - time.monotonic())
            if self._head_claim_wanted:
                # Once due, the claim waits for a free slot (whose job's end wakes the loop).
                head_claim_in = self._head_claim_at() - time.monotonic()
                if head_claim_in > 0:
                    wait = min(wait, head_claim_in)
            self._event.wait(max(wait, 0.001))

    def _cycle(self) -> None:
        """One round trip's worth of work, in one transaction (one commit): write buffered
        job logs, acknowledge finished attempts, and claim jobs for the slots they free."""
        lines = self._logs.take()
        with self._finished_lock:
            outcomes, self._finished = self._finished, []
        free = self.concurrency - (len(self._running) - len(outcomes))
        claim = free if self._claiming and free > 0 and self._want_claim else 0
        if not lines and not outcomes and not claim:
            return
        generation = self._wake_generation
        accepted: set[int] = set()
        rows: list[Job] = []
        started = time.monotonic()
        after = self._position if started < self._head_claim_at() else None
        try:
            with self.database.connection() as conn:
                followups = any(o.running.context.followups for o in outcomes)
                if self._db_trouble or followups:
                    after = None
                    accepted, rows = self._careful_cycle(conn, lines, outcomes, claim)
                else:
                    accepted, rows = claims.ack_and_claim(
                        conn, self.identity.token, [o.ack for o in outcomes], self.type_filter,
                        claim, worker_id=self.identity.worker_id, pid=self.identity.pid,
                        now=self._db_clock.now() if self._db_clock else None, after=after,
                        before=(lambda c: add_logs(c, lines)) if lines else None,
                    )
        except BaseException:
            self._logs.put_back(lines)
            with self._finished_lock:
                self._finished[:0] = outcomes
            raise
        self._db_trouble = False
        for outcome in outcomes:
            self._settle_outcome(outcome, outcome.running.job.id in accepted)
        if claim:
            self._claimed(rows, claim, after, started)
            if len(rows) < claim and self._wake_generation == generation:
                self._want_claim = False
            if rows:
                log.info("claimed %d job(s)", len(rows))
            for job in rows:
                self._dispatch(job)

    def _claimed(self, rows: list[Job], asked: int, after: ClaimPosition | None,
                 started: float) -> None:
        """Move the claim position past these rows, and plan the next claim from the head."""
        self._position = ClaimPosition.after(rows) or self._position
        if after is None:
            self._head_claim_ended = time.monotonic()
            self._head_claim_took = self._head_claim_ended - started
            self._head_claim_wanted = False
        elif len(rows) < asked:
            self._head_claim_wanted = True

    def _head_claim_at(self) -> float:
        """When the next claim from the head is allowed (monotonic)."""
        return self._head_claim_ended + self.head_claim_spacing * self._head_claim_took

    def _dispatch(self, job: Job) -> None:
        spec = self.registry.find(job.type)
        timeout = job.timeout_seconds or (spec.timeout if spec else None)
        started = time.monotonic()
        context = JobContext(
            job=job,
            log=JobLogger(self._logs, job.id, job.attempts),
            attempt=job.attempts,
            cancelled=CancelEvent(),
            settings=self.settings,
            database=self.database,
            deadline=None,
        )
        running = Running(job, spec, context, started, started + timeout if timeout else None)
        self._running[job.id] = running
        self._notify("on_job_claimed", job)
        if spec is None:
            error = UnknownJobType(
                f"no handler for job type {job.type!r} in worker {self.identity.worker_id} "
                f"(it runs {', '.join(self.selectors) or 'no types'}); load the module that "
                "registers it with --import"
            )
            running.settle()
            self._finish(decide(running, error=error, policy=self.policy, now=self.clock.now()))
            return
        self._tasks.put(running)

    def _finish(self, outcome: Outcome) -> None:
        if outcome.status != "completed":
            # The job's own log says why the attempt ended (the full traceback is in `error`).
            job = outcome.running.job
            summary = str(outcome.ack.error or outcome.status).split("\n", 1)[0]
            level = "warn" if outcome.status in ("retried", "cancelled") else "error"
            message = f"attempt {job.attempts} {outcome.status}: {summary}"
            self._logs.write(job.id, job.attempts, level, message, None)
        with self._finished_lock:
            self._finished.append(outcome)
        # Once per job: skip the condition's lock when the loop has been woken already. No
        # wake-up is lost: the loop clears the event before it takes the finished list.
        if not self._event.is_set():
            self._event.set()

    def _careful_cycle(
        self, conn: psycopg.Connection[Any], lines: list[Any], outcomes: list[Outcome], claim: int
    ) -> tuple[set[int], list[Job]]:
        """The same work as the pipelined round trip, one statement at a time: after a
        database error, and when follow-up jobs depend on which acknowledgements held."""
        rows: list[Job] = []
        with conn.transaction():
            claims.pin_plans(conn)
            if self._db_trouble:
                # A claim may have committed while its answer was lost: take back any job
                # held under our token that we are not running.
                lost = claims.release_unknown_jobs(conn, self.identity.token, list(self._running))
                if lost:
                    log.warning("released %d job(s) whose claim was interrupted: %s",
                                len(lost), ",".join(map(str, lost)))
            if lines:
                add_logs(conn, lines)
            accepted = self._acknowledge(conn, outcomes) if outcomes else set()
            if claim:
                rows = claims.claim_jobs(
                    conn, self.type_filter, claim, worker_id=self.identity.worker_id,
                    pid=self.identity.pid, token=self.identity.token,
                    now=self._db_clock.now() if self._db_clock else None,
                )
        return accepted, rows

    def _acknowledge(self, conn: psycopg.Connection[Any], outcomes: list[Outcome]) -> set[int]:
        acks: list[Ack] = [o.ack for o in outcomes]
        accepted = claims.ack_jobs(conn, self.identity.token, acks)
        applied_before: set[int] = set()
        if self._db_trouble and len(accepted) < len(acks):
            # Sent again after a lost connection: an ack refused because its first sending
            # committed is this worker's own, not a late one.
            applied_before = claims.already_acknowledged(
                conn, self.identity.token, [a for a in acks if a.job_id not in accepted])
            if applied_before:
                log.info("%d acknowledgement(s) had committed before the connection was lost: %s",
                         len(applied_before), ",".join(map(str, sorted(applied_before))))
        # Follow-up jobs commit with the completion that asked for them (same transaction);
        # those of an ack applied before were enqueued with it then.
        for outcome in outcomes:
            if outcome.status == "completed" and outcome.running.context.followups \
                    and outcome.running.job.id in accepted:
                for followup in outcome.running.context.followups:
                    self._producer().add(followup.type, followup.payload, conn=conn,
                                         **followup.options)
        return accepted | applied_before

    def _producer(self) -> Any:
        if self._queue is None:
            from haosq.queue import JobQueue

            self._queue = JobQueue(settings=self.settings, database=self.database, clock=self.clock)
        return self._queue

    def _settle_outcome(self, outcome: Outcome, accepted: bool) -> None:
        job = outcome.running.job
        self._running.pop(job.id, None)
        if not accepted:
            self.refused_acks += 1
            log.warning("job %s (%s): late %s refused (the job was rescued or changed meanwhile)",
                        job.id, job.type, outcome.status)
            return
        self.processed += 1
        if outcome.status == "completed":
            self.succeeded += 1
            log.info("job %s (%s) completed in %.3fs", job.id, job.type, outcome.duration)
        elif outcome.status == "cancelled":
            log.info("job %s (%s) cancelled after %.3fs", job.id, job.type, outcome.duration)
        else:
            self.failed += 1
            summary = str(outcome.ack.error or "").split("\n", 1)[0]
            if outcome.status == "retried":
                self._note_retry(outcome.ack.due_at)
                log.info("job %s (%s) failed attempt %s in %.3fs, retry at %s: %s", job.id, job.type,
                         job.attempts, outcome.duration,
                         outcome.ack.due_at.isoformat() if outcome.ack.due_at else "now", summary)
            else:
                log.info("job %s (%s) failed for good on attempt %s in %.3fs: %s", job.id, job.type,
                         job.attempts, outcome.duration, summary)
        self._notify("on_job_finished", job, outcome.status, outcome.duration)

    def _note_retry(self, due: datetime | None) -> None:
        if due is None or self._db_clock is not None:
            return
        seconds = (due - self.clock.now()).total_seconds()
        if seconds < self.poll_seconds:
            at = time.monotonic() + max(seconds, 0) + 0.005
            self._retry_due = at if self._retry_due is None else min(self._retry_due, at)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for running in list(self._running.values()):
            if running.deadline is None or now < running.deadline or running.settled:
                continue
            threaded = running.spec is not None and running.spec.executor == "thread"
            if not running.settle(abandon=threaded):
                continue
            running.context.cancelled.set()
            limit = running.deadline - running.started
            error = JobTimedOut(f"the job ran past its time limit of {limit:g}s")
            log.warning("job %s (%s) timed out after %gs", running.job.id, running.job.type, limit)
            if threaded:
                # The thread cannot be stopped: let it finish on its own, detached, and put a
                # fresh thread in its place.
                self._abandoned += 1
                self._start_thread()
            self._finish(decide(running, error=error, policy=self.policy, now=self.clock.now()))

    def _next_deadline(self) -> float | None:
        deadlines = [r.deadline for r in self._running.values() if r.deadline and not r.settled]
        return min(deadlines) if deadlines else None

    # -- worker threads ---------------------------------------------------------------------

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._serve, name=f"haosq-job-{len(self._threads)}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while True:
            running = self._tasks.get()
            if running is None:
                return
            self._run(running)
            if running.abandoned:
                return  # a fresh thread took this one's place when the attempt timed out

    def _run(self, running: Running) -> None:
        job = running.job
        if self._start_hook:
            self._hook(self.on_job_start, job)
        result: Any = None
        error: BaseException | None = None
        try:
            if running.spec is not None and running.spec.executor == "process":
                from haosq.daemon.process import run_in_process

                result = run_in_process(
                    running,
                    lambda level, message, metadata: self._logs.write(job.id, job.attempts, level,
                                                                      message, metadata),
                    self.database.url,
                )
            else:
                result = invoke(running)
        except BaseException as exc:
            error = exc
        if not running.settle():
            return  # timed out or released meanwhile: this result is discarded
        outcome = decide(running, result=result, error=error, policy=self.policy, now=self.clock.now())
        if outcome.status == "completed":
            if self._complete_hook:
                self._hook(self.on_job_complete, job, outcome.result)
        elif outcome.status in ("failed", "retried"):
            self._hook(self.on_job_failed, job, outcome.error)
        self._finish(outcome)

    # -- helpers --------------------------------------------------------------------------

    def _hook(self, hook: Any, *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("hook %s raised; ignored", getattr(hook, "__name__", hook))

    def _notify(self, event: str, *args: Any) -> None:
        if self.observers:  # twice per job on the hot path: skip the call when nobody listens
            notify_observers(self.observers, event, *args)

    def _database_error(self, exc: BaseException, where: str) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("database error in %s: %s", where, first)
        self._notify("on_database_error", exc)


def default_worker_id() -> str:
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"
