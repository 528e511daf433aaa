"""Completion webhooks through a real worker to a real local HTTP server: signed with
HMAC-SHA256, retried with backoff, refused for hosts off the allow-list and internal addresses."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from haosq import webhooks
from haosq.errors import ConfigError
from tests.deploy.test_daemon_deploy import Daemon

SECRET = b"0123456789abcdef-test-secret"


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 500 to the first `fail_first` requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.requests.append((self.path, dict(self.headers), body))
                    failing = len(receiver.requests) <= receiver.fail_first
                    receiver.arrived.notify_all()
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 20.0) -> list[tuple[str, dict[str, str], bytes]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, timeout), self.requests
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver(fail_first=1)
    yield server
    server.close()


def write_config(tmp_path, body: str) -> str:
    secret = tmp_path / "webhook-secret"
    secret.write_bytes(SECRET + b"\n")
    config = tmp_path / "haosq.toml"
    config.write_text(f'[webhooks]\nsecret_file = "{secret}"\n{body}')
    return str(config)


def wait_job(queue, job_id: int, *statuses: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        job = queue.get(job_id)
        if job.status.value in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} is {job.status.value}"
        time.sleep(0.05)


def webhook_jobs(queue):
    return [j for j in queue.list(type="haosq:webhook", limit=100)]


def test_signed_delivery_with_retry_and_per_job_url(receiver, queue, cli_env, tmp_path):
    base = f"http://127.0.0.1:{receiver.port}"
    config = write_config(tmp_path, f"""allow_hosts = ["127.0.0.1"]
allow_private = ["127.0.0.1/32"]
allow_http = true
[webhooks.routes]
"demo:echo" = "{base}/echo-done"
""")
    env = {**cli_env, "HAOSQ_CONFIG": config, "HAOSQ_BACKOFF_BASE": "0.05"}
    echo = queue.add("demo:echo", {"value": {"token": "abc123", "ok": 1}})
    failing = webhooks.add_with_webhook(
        queue, "demo:fail", {"permanent": True, "message": "db postgresql://u:pw123@db/x down"},
        f"{base}/per-job")
    daemon = Daemon(env, tmp_path / "worker.log", "--types", "demo,haosq", "--poll-interval", "50",
                    "--concurrency", "2")
    try:
        requests = receiver.wait(3)
        deliveries = [wait_job(queue, j.id, "completed") for j in webhook_jobs(queue)]
    finally:
        assert daemon.stop() == 0, daemon.output()

    assert len(deliveries) == 2
    by_path: dict[str, list] = {}
    for path, headers, body in requests:
        by_path.setdefault(path, []).append((headers, body))
        # Every request carries a valid signature over its timestamp and body.
        assert webhooks.verify(SECRET, headers, body)
        assert not webhooks.verify(b"another secret of 16+ bytes", headers, body)
        assert not webhooks.verify(SECRET, headers, body + b" ")
    # The first request failed with 500 and was retried by the queue.
    assert sum(len(v) for v in by_path.values()) == 3
    echo_body = json.loads(by_path["/echo-done"][-1][1])
    assert echo_body["job"]["id"] == echo.id and echo_body["job"]["status"] == "completed"
    assert echo_body["job"]["result"] == {"token": "***", "ok": 1}
    failed_body = json.loads(by_path["/per-job"][-1][1])
    assert failed_body["job"]["id"] == failing.id and failed_body["job"]["status"] == "failed"
    assert "pw123" not in failed_body["job"]["error"] and "***" in failed_body["job"]["error"]
    assert max(d.attempts for d in deliveries) == 2
    # The webhook body (an export) is masked; the stored error keeps what the handler raised.
    assert "postgresql://u:***@db/x" in failed_body["job"]["error"]
    assert queue.get(failing.id).error.startswith("PermanentError: db postgresql://u:pw123@db/x down")


def test_internal_addresses_and_unlisted_hosts_are_refused(receiver, queue, cli_env, tmp_path):
    # The host is listed but 127.0.0.1 is internal: without allow_private it is refused (no SSRF).
    config = write_config(tmp_path, f"""allow_hosts = ["127.0.0.1"]
allow_http = true
[webhooks.routes]
"demo:echo" = "http://127.0.0.1:{receiver.port}/internal"
"demo:sleep" = "http://localhost:{receiver.port}/unlisted"
""")
    env = {**cli_env, "HAOSQ_CONFIG": config}
    queue.add("demo:echo", {})
    queue.add("demo:sleep", {"seconds": 0})
    daemon = Daemon(env, tmp_path / "worker.log", "--types", "demo,haosq", "--poll-interval", "50")
    try:
        deadline = time.monotonic() + 20
        while len([j for j in webhook_jobs(queue) if j.status.value == "failed"]) < 2:
            assert time.monotonic() < deadline, [(j.status, j.error) for j in webhook_jobs(queue)]
            time.sleep(0.05)
    finally:
        assert daemon.stop() == 0, daemon.output()
    errors = sorted(j.error or "" for j in webhook_jobs(queue))
    assert any("private, loopback" in e for e in errors), errors
    assert any("allow_hosts" in e for e in errors), errors
    assert all(j.attempts == 1 for j in webhook_jobs(queue))  # refused at once, not retried
    assert receiver.requests == []


def test_no_routes_no_webhook_jobs(queue, conn):
    job = queue.add("demo:echo", {})
    conn.execute("UPDATE haosq.jobs SET status = 'cancelled' WHERE id = %s", (job.id,))
    assert webhook_jobs(queue) == []
    conn.execute("INSERT INTO haosq.webhook_routes (type, url) VALUES ('demo', 'https://h.example/x')")
    other = queue.add("demo:echo", {})
    conn.execute("UPDATE haosq.jobs SET status = 'cancelled' WHERE id = %s", (other.id,))
    created = webhook_jobs(queue)
    assert len(created) == 1 and created[0].payload["job_id"] == other.id
    assert created[0].payload["url"] == "https://h.example/x"


def test_config_errors_name_the_key(make_settings, tmp_path):
    from haosq.webhooks import load_webhook_config

    cases = {
        'allow_hosts = "x"': "allow_hosts",
        'bogus = 1': "'bogus'",
        '[webhooks.routes]\n"Email" = "https://h/x"': "'Email'",
        '[webhooks.routes]\n"email" = "https://u:p@h/x"': "credentials",
        '[webhooks.routes]\n"email" = "ftp://h/x"': "http(s)",
    }
    for body, expected in cases.items():
        path = tmp_path / "c.toml"
        path.write_text(f"[webhooks]\n{body}\n")
        settings = make_settings(HAOSQ_CONFIG=str(path))
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            load_webhook_config(settings)
