"""The wake-up line: LISTEN on a dedicated connection.

`haosq_jobs` carries the types of newly inserted runnable jobs (comma-separated, or `*`);
`haosq_events` carries operator events (`cancel:<id>`). A notification is only a hint (any
role can send one, and they are lost while the connection is down), so the claim loop also
polls; after a reconnect the listener wakes the loop once in case something was missed.

The connection is health-checked when it has been quiet for a while and reopened with a
growing delay when it breaks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

JOBS_CHANNEL = "haosq_jobs"
EVENTS_CHANNEL = "haosq_events"
HEALTH_CHECK_SECONDS = 5.0
NOTIFY_WAIT_SECONDS = 0.25
RECONNECT_MAX_SECONDS = 5.0

log = logging.getLogger("haosq.worker")


class Listener:
    """A thread that turns notifications into calls: `on_jobs(types)` with the set of types
    (None for `*`), `on_cancel(job_id)`; `on_error(exc)` when the connection breaks."""

    def __init__(
        self,
        url: str,
        *,
        on_jobs: Callable[[set[str] | None], None],
        on_cancel: Callable[[int], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._url = url
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="haosq-listener", daemon=True)
        self._conn: psycopg.Connection[Any] | None = None
        self.connected = threading.Event()
        self.reconnects = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def backend_pid(self) -> int | None:
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                               application_name="haosq-listen")
        conn.execute(f"LISTEN {JOBS_CHANNEL}")
        conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        return conn

    def _run(self) -> None:
        delay = 0.1
        first = True
        while not self._stop.is_set():
            try:
                self._conn = self._connect()
            except psycopg.Error as exc:
                self._on_error(exc)
                log.warning("listen connection failed (%s); retrying in %.1fs",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            delay = 0.1
            self.connected.set()
            if not first:
                self.reconnects += 1
                log.info("listen connection restored")
                self._on_jobs(None)  # notifications may have been missed meanwhile
            first = False
            try:
                self._listen(self._conn)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                self.connected.clear()
                self._on_error(exc)
                log.warning("listen connection lost: %s", str(exc).strip().splitlines()[0]
                            if str(exc).strip() else type(exc).__name__)
            finally:
                self._conn.close()
        self.connected.clear()

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        last_traffic = time.monotonic()
        while not self._stop.is_set():
            for notify in conn.notifies(timeout=NOTIFY_WAIT_SECONDS):
                last_traffic = time.monotonic()
                self._dispatch(notify.channel, notify.payload)
            if time.monotonic() - last_traffic > HEALTH_CHECK_SECONDS:
                conn.execute("SELECT 1")
                last_traffic = time.monotonic()

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            self._on_jobs(None if payload in ("", "*") else set(payload.split(",")))
        elif channel == EVENTS_CHANNEL and payload.startswith("cancel:"):
            try:
                job_id = int(payload.removeprefix("cancel:"))
            except ValueError:
                return
            self._on_cancel(job_id)
