"""A real `haosq worker` process under a fake systemd: READY/STATUS/WATCHDOG on NOTIFY_SOCKET,
the metrics port scraped while it drains jobs, /healthz failing when its database stops."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.helpers import NotifySocket

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def wait_for(condition, timeout: float = 20.0, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == labels):
                return sample.value
    return None


class Daemon:
    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "haosq", "worker", *args], env=env,
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._out)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


def test_daemon_speaks_sd_notify_and_serves_metrics(cli_env, notify_socket, queue, tmp_path, conn):
    for n in range(5):
        queue.add("demo:echo", {"n": n, "password": "hunter2"})
    port = free_port()
    env = {**cli_env, "NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "10000000"}
    daemon = Daemon(env, tmp_path / "worker.log", "--concurrency", "4", "--types", "demo",
                    "--heartbeat-interval", "200", "--poll-interval", "100",
                    "--metrics-port", str(port))
    try:
        fields = notify_socket.wait_for(lambda f: f == "READY=1")
        # READY=1 comes after the first claim: some of the waiting jobs are taken already.
        claimed = conn.execute("SELECT count(*) AS n FROM haosq.jobs WHERE attempts > 0").fetchone()["n"]
        assert claimed >= 1
        ready_at = fields.index("READY=1")
        assert any(f.startswith("STATUS=") and "/4 busy" in f for f in fields[ready_at:])
        notify_socket.wait_for(lambda f: f == "WATCHDOG=1")
        # Live counts reach `systemctl status` through STATUS= on heartbeats.
        notify_socket.wait_for(lambda f: f == "STATUS=0/4 busy, 5 done")

        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert metric_value(body, "haosq_jobs_claimed_total", {"type": "demo:echo"}) == 5
        assert metric_value(body, "haosq_jobs_completed_total", {"type": "demo:echo"}) == 5
        assert metric_value(body, "haosq_job_duration_seconds_count",
                            {"type": "demo:echo", "outcome": "completed"}) == 5
        assert metric_value(body, "haosq_concurrency") == 4
        assert metric_value(body, "haosq_ready") == 1
        assert metric_value(body, "haosq_heartbeat_age_seconds") < 5
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        assert "hunter2" not in daemon.output()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert "STOPPING=1" in notify_socket.fields()


def test_healthz_fails_when_the_database_stops(cli_env, throwaway_server, tmp_path, notify_socket):
    url, stop_database = throwaway_server.url, throwaway_server.stop
    port = free_port()
    env = {**cli_env, "HAOSQ_DATABASE_URL": url, "NOTIFY_SOCKET": str(notify_socket.path)}
    daemon = Daemon(env, tmp_path / "worker.log", "--types", "demo", "--heartbeat-interval", "200",
                    "--poll-interval", "100", "--metrics-port", str(port))
    try:
        notify_socket.wait_for(lambda f: f == "READY=1")
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        stop_database()
        _status, body = wait_for(
            lambda: (r := get(f"http://127.0.0.1:{port}/healthz"))[0] == 503 and r, 20,
            "healthz to fail")
        assert body.startswith("database unreachable"), body
        notify_socket.wait_for(lambda f: f.startswith("STATUS=database error"))
        scraped = get(f"http://127.0.0.1:{port}/metrics")[1]
        assert metric_value(scraped, "haosq_database_errors_total") >= 1
    finally:
        # Its database is gone: a graceful stop has nothing left to save.
        daemon.proc.kill()
        daemon.proc.wait(10)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2).close()
    assert (throwaway_server.data_dir / "pg" / "PG_VERSION").exists()  # stopped, not destroyed


def test_daemon_in_the_units_environment(cli_env, notify_socket, queue, tmp_path, conn):
    """What systemd gives haosq-worker@demo: HAOSQ_GROUP from the instance name, the database
    URL only as a credential file, NOTIFY_SOCKET; no URL in the environment or on the command line."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "database-url").write_text(cli_env["HAOSQ_DATABASE_URL"] + "\n")
    env = {k: v for k, v in cli_env.items() if k != "HAOSQ_DATABASE_URL"}
    env.update({"HAOSQ_GROUP": "demo", "CREDENTIALS_DIRECTORY": str(credentials),
                "NOTIFY_SOCKET": str(notify_socket.path), "HAOSQ_POLL_INTERVAL": "100"})
    demo = queue.add("demo:echo", {"x": 1})
    other = queue.add("email:send", {"to": "a@example.com", "subject": "s", "text": "t"})
    daemon = Daemon(env, tmp_path / "worker.log")
    try:
        notify_socket.wait_for(lambda f: f == "READY=1")
        wait_for(lambda: queue.get(demo.id).status.value == "completed", 20, "the demo job")
    finally:
        assert daemon.stop() == 0, daemon.output()
    assert queue.get(other.id).status.value == "pending"  # not this group's type
    worker = conn.execute("SELECT job_types FROM haosq.workers").fetchone()
    assert worker["job_types"] == ["demo"]
