"""systemd notification (sd_notify) for `Type=notify` units.

READY=1 once the daemon is ready (migrations applied, pool open, first claim done),
STATUS= with live counts ("12/16 busy, 3,201 done, 4 failed") on every heartbeat,
WATCHDOG=1 from the heartbeat only while the claim loop is alive (a stuck loop stops
feeding the watchdog and systemd restarts the unit), STOPPING=1 on shutdown.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op. The protocol is one datagram
per message on a UNIX socket; a leading "@" names an abstract socket.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from haosq.clock import Clock, SystemClock
from haosq.daemon.duty import DutyContext, WorkerSnapshot, register_observer
from haosq.models import Job
from haosq.secrets import mask_text

log = logging.getLogger("haosq.notify")

# How often STATUS= follows the live counts between heartbeats (only when they changed).
STATUS_INTERVAL_SECONDS = 2.0


def status_line(snapshot: WorkerSnapshot) -> str:
    """What `systemctl status` shows: "12/16 busy, 3,201 done, 4 failed"."""
    line = f"{snapshot.busy}/{snapshot.concurrency} busy, {snapshot.processed:,} done"
    if snapshot.failed:
        line += f", {snapshot.failed:,} failed"
    if snapshot.stopping:
        line = f"stopping: {line}"
    return line


class SystemdNotifier:
    """Sends datagrams to NOTIFY_SOCKET; silent when there is none."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        watchdog = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for; ignore it elsewhere.
        self.watchdog_seconds: float | None = None
        if watchdog.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            self.watchdog_seconds = int(watchdog) / 1_000_000
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one message of KEY=value fields; False when not under systemd or on error."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(message, self.address)
            except OSError as exc:
                log.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), exc)
                return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


class NotifyObserver:
    """A WorkerObserver that keeps systemd informed.

    `loop_stale_after` is how old the claim loop's last sign of life may be for the watchdog
    to still be fed; the daemon passes a few poll intervals.
    """

    def __init__(
        self,
        notifier: SystemdNotifier | None = None,
        *,
        loop_stale_after: float = 60.0,
        clock: Clock | None = None,
        snapshot: Callable[[], WorkerSnapshot] | None = None,
        status_interval: float = STATUS_INTERVAL_SECONDS,
    ) -> None:
        self.notifier = notifier or SystemdNotifier()
        self.loop_stale_after = loop_stale_after
        self.clock = clock or SystemClock()
        self._ready_sent = False
        # Between heartbeats, STATUS= follows the live counts from `snapshot` (if given).
        self._snapshot = snapshot
        self._status_interval = status_interval
        self._last_status: str | None = None
        self._ticker_stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def _send_status(self, snapshot: WorkerSnapshot, *extra: str) -> None:
        line = status_line(snapshot)
        self._last_status = line
        self.notifier.send(*extra, f"STATUS={line}")

    def _tick(self) -> None:
        assert self._snapshot is not None
        while not self._ticker_stop.wait(self._status_interval):
            try:
                line = status_line(self._snapshot())
            except Exception:  # the status line is a courtesy; never let it break anything
                log.debug("no snapshot for the status line", exc_info=True)
                continue
            if line != self._last_status:
                self._last_status = line
                self.notifier.send(f"STATUS={line}")

    def _loop_alive(self, snapshot: WorkerSnapshot) -> bool:
        alive_at: datetime | None = snapshot.loop_alive_at
        if alive_at is None:
            return False
        return (self.clock.now() - alive_at).total_seconds() <= self.loop_stale_after

    def on_ready(self, snapshot: WorkerSnapshot) -> None:
        self._ready_sent = self.notifier.enabled
        self._send_status(snapshot, "READY=1", f"MAINPID={os.getpid()}")
        if self.notifier.enabled and self._snapshot is not None and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="haosq-sd-status", daemon=True)
            self._ticker.start()

    def on_heartbeat(self, snapshot: WorkerSnapshot) -> None:
        if self._loop_alive(snapshot) or snapshot.stopping:
            # While draining on shutdown the claim loop is quiet on purpose; the stop timeout,
            # not the watchdog, bounds that phase.
            self._send_status(snapshot, "WATCHDOG=1")
        else:
            log.warning("claim loop silent for more than %.0fs: not feeding the systemd watchdog",
                        self.loop_stale_after)
            self._send_status(snapshot)

    def on_job_claimed(self, job: Job) -> None:
        return None

    def on_job_finished(self, job: Job, outcome: str, duration_seconds: float) -> None:
        return None

    def on_database_error(self, error: BaseException) -> None:
        reason = mask_text(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        self.notifier.send(f"STATUS=database error: {reason[:200]}")

    def on_stopping(self, snapshot: WorkerSnapshot) -> None:
        self._ticker_stop.set()
        self._send_status(snapshot, "STOPPING=1")


def notify_observer(context: DutyContext) -> NotifyObserver:
    """The observer every `haosq worker` gets (silent outside systemd). The claim loop counts
    as stuck after two heartbeats without a sign of life, or ten poll periods if longer."""
    settings = context.settings
    stale = max(2 * settings["worker.heartbeat_interval_ms"], 10 * settings["worker.poll_interval_ms"])
    return NotifyObserver(loop_stale_after=stale / 1000, clock=context.clock, snapshot=context.snapshot)


# Listed in PLUGIN_MODULES, so that `haosq worker` imports this module and registers it.
register_observer(notify_observer)
