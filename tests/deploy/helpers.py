"""Shared pieces of the deployment tests: a fake systemd notify socket, snapshots, jobs."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

from haosq.daemon.duty import WorkerSnapshot
from haosq.models import Job


class NotifySocket:
    """A real UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []
        self._event = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            with self._event:
                self.messages.append(data.decode())
                self._event.notify_all()

    def fields(self) -> list[str]:
        with self._event:
            return [field for message in self.messages for field in message.split("\n")]

    def wait_for(self, predicate, timeout: float = 20.0) -> list[str]:
        """Wait until some field satisfies predicate; return all fields so far."""
        with self._event:
            ok = self._event.wait_for(
                lambda: any(predicate(f) for m in self.messages for f in m.split("\n")), timeout)
        fields = self.fields()
        assert ok, f"no matching notify message within {timeout}s; got {fields}"
        return fields

    def close(self) -> None:
        self.sock.close()


def snapshot(**changes) -> WorkerSnapshot:
    now = datetime.now(UTC)
    values = dict(worker_id="test-1", concurrency=16, busy=12, processed=3201, succeeded=3190,
                  failed=11, ready=True, stopping=False, last_heartbeat_ok=now, loop_alive_at=now)
    values.update(changes)
    return WorkerSnapshot(**values)


def job(job_type: str = "email:send", job_id: int = 1) -> Job:
    now = datetime.now(UTC)
    return Job(id=job_id, type=job_type, status="processing", priority=0, payload={},
               scheduled_at=now, created_at=now, updated_at=now)
