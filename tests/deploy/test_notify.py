"""sd_notify messages through a real UNIX datagram socket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from haosq.clock import FrozenClock
from haosq.daemon.notify import NotifyObserver, SystemdNotifier, status_line
from tests.deploy.helpers import NotifySocket, snapshot


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


def test_status_line_reads_like_systemctl_status():
    assert status_line(snapshot()) == "12/16 busy, 3,201 done, 11 failed"
    assert status_line(snapshot(failed=0, busy=0, processed=0)) == "0/16 busy, 0 done"
    assert status_line(snapshot(stopping=True)).startswith("stopping: 12/16 busy")


def test_ready_status_watchdog_and_stopping(notify_socket):
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    observer = NotifyObserver(notifier, loop_stale_after=30, clock=clock)
    alive = snapshot(loop_alive_at=clock.now(), last_heartbeat_ok=clock.now())

    observer.on_ready(alive)
    fields = notify_socket.wait_for(lambda f: f == "READY=1")
    assert "STATUS=12/16 busy, 3,201 done, 11 failed" in fields

    observer.on_heartbeat(alive)
    notify_socket.wait_for(lambda f: f == "WATCHDOG=1")

    observer.on_stopping(snapshot(stopping=True))
    fields = notify_socket.wait_for(lambda f: f == "STOPPING=1")
    notifier.close()


def test_stuck_loop_starves_the_watchdog(notify_socket):
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    observer = NotifyObserver(notifier, loop_stale_after=30, clock=clock)
    stale = snapshot(loop_alive_at=clock.now() - timedelta(seconds=31), busy=3)
    observer.on_heartbeat(stale)
    fields = notify_socket.wait_for(lambda f: f.startswith("STATUS=3/16"))
    assert "WATCHDOG=1" not in fields


def test_database_error_status_masks_passwords(notify_socket):
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    NotifyObserver(notifier).on_database_error(
        OSError("connection to postgresql://haosq:s3cret@db/haosq failed"))
    fields = notify_socket.wait_for(lambda f: f.startswith("STATUS=database error"))
    assert not any("s3cret" in f for f in fields)


def test_abstract_socket_address_and_no_socket():
    assert SystemdNotifier({"NOTIFY_SOCKET": "@/org/test"}).address == "\0/org/test"
    quiet = SystemdNotifier({})
    assert not quiet.enabled
    assert quiet.send("READY=1") is False


def test_watchdog_interval_only_for_our_pid():
    import os

    assert SystemdNotifier({"WATCHDOG_USEC": "120000000"}).watchdog_seconds == 120
    other = SystemdNotifier({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_seconds is None


def test_status_follows_live_counts_between_heartbeats(notify_socket):
    current = {"snapshot": snapshot(busy=1, processed=10, failed=0)}
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    observer = NotifyObserver(notifier, snapshot=lambda: current["snapshot"], status_interval=0.05)
    observer.on_ready(current["snapshot"])
    notify_socket.wait_for(lambda f: f == "STATUS=1/16 busy, 10 done")
    current["snapshot"] = snapshot(busy=7, processed=3201, failed=0)
    notify_socket.wait_for(lambda f: f == "STATUS=7/16 busy, 3,201 done")
    observer.on_stopping(snapshot(stopping=True, busy=0, processed=3201, failed=0))
    fields = notify_socket.wait_for(lambda f: f == "STOPPING=1")
    assert "WATCHDOG=1" not in fields  # only heartbeats feed the watchdog
    notifier.close()


def test_draining_on_shutdown_still_feeds_the_watchdog(notify_socket, caplog):
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    observer = NotifyObserver(notifier, loop_stale_after=30, clock=clock)
    draining = snapshot(loop_alive_at=clock.now() - timedelta(seconds=60), stopping=True, busy=2)
    observer.on_heartbeat(draining)
    fields = notify_socket.wait_for(lambda f: f == "WATCHDOG=1")
    assert any(f.startswith("STATUS=stopping: 2/16 busy") for f in fields)
    assert "silent" not in caplog.text
    notifier.close()
