"""How the matrix client treats 429, 5xx and unreachable homeservers, against a scripted HTTP peer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from haosq.errors import PermanentError, Retry
from haosq.handlers.matrix import user_export
from haosq.handlers.matrix_api import JobCancelled, MatrixApiError, MatrixClient

pytest_plugins = ["tests.handlers.peers_files"]


class ScriptedHomeserver:
    """Answers each request with the next scripted (status, body, headers); records arrival times."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict, dict]] = []
        self.requests: list[tuple[float, str, str]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                peer.requests.append((time.monotonic(), self.command, self.path))
                status, body, headers = peer.script.pop(0) if peer.script else (200, {}, {})
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer() -> Iterator[ScriptedHomeserver]:
    server = ScriptedHomeserver()
    yield server
    server.close()


def test_429_waits_retry_after_ms_then_succeeds(peer):
    peer.script = [(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 300}, {}),
                   (200, {"ok": 1}, {})]
    with MatrixClient(peer.url, "token") as client:
        assert client.get("/x") == {"ok": 1}
    (first, _, _), (second, _, _) = peer.requests
    assert second - first >= 0.3


def test_long_429_reschedules_the_job_with_the_servers_delay(peer):
    peer.script = [(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 45_000}, {})]
    with MatrixClient(peer.url, "token", max_inline_wait=10) as client, \
            pytest.raises(Retry, match="rate limited") as raised:
        client.get("/x")
    assert raised.value.after == 45.0
    assert len(peer.requests) == 1


def test_429_without_a_body_uses_retry_after_header(peer):
    peer.script = [(429, {}, {"Retry-After": "120"})]
    with MatrixClient(peer.url, "token") as client, pytest.raises(Retry) as raised:
        client.get("/x")
    assert raised.value.after == 120.0


def test_5xx_is_retried_with_backoff_then_rescheduled(peer):
    peer.script = [(502, {}, {}), (503, {}, {}), (200, {"fine": True}, {})]
    with MatrixClient(peer.url, "token", backoff=0.05) as client:
        assert client.get("/x") == {"fine": True}
    assert len(peer.requests) == 3

    peer.requests.clear()
    peer.script = [(500, {}, {})] * 4
    with MatrixClient(peer.url, "token", backoff=0.01) as client, pytest.raises(Retry, match="HTTP 500"):
        client.get("/x")
    assert len(peer.requests) == 4


@pytest.mark.parametrize(("status", "errcode"), [(401, "M_UNKNOWN_TOKEN"), (403, "M_FORBIDDEN"),
                                                 (404, "M_NOT_FOUND"), (400, "M_BAD_JSON")])
def test_client_errors_are_permanent_at_once(peer, status, errcode):
    peer.script = [(status, {"errcode": errcode, "error": "nope"}, {})]
    with MatrixClient(peer.url, "token") as client, pytest.raises(MatrixApiError) as raised:
        client.get("/x")
    assert isinstance(raised.value, PermanentError)
    assert (raised.value.status, raised.value.errcode) == (status, errcode)
    assert f"HTTP {status} {errcode} nope" in str(raised.value)
    assert len(peer.requests) == 1


def test_unreachable_homeserver_is_rescheduled(peer):
    url = peer.url
    peer.close()
    with MatrixClient(url, "token", backoff=0.01) as client, pytest.raises(Retry, match="unreachable"):
        client.get("/x")


def test_cancelling_interrupts_a_wait(peer):
    peer.script = [(429, {"retry_after_ms": 5000}, {})]
    cancelled = threading.Event()
    threading.Timer(0.1, cancelled.set).start()
    started = time.monotonic()
    with MatrixClient(peer.url, "token", cancelled=cancelled) as client, pytest.raises(JobCancelled):
        client.get("/x")
    assert time.monotonic() - started < 2


def test_a_handler_without_a_homeserver_configured_fails_clearly(job_context, monkeypatch):
    monkeypatch.delenv("HAOSQ_MATRIX_URL", raising=False)
    monkeypatch.delenv("HAOSQ_MATRIX_TOKEN", raising=False)
    payload = {"userId": "@a:localhost"}
    ctx = job_context("matrix:user-export", payload, {"matrix": {"export_root": "/tmp"}})
    with pytest.raises(PermanentError, match="no homeserver is configured"):
        user_export(payload, ctx)


def test_the_environment_configures_the_homeserver(peer, job_context, monkeypatch, tmp_path):
    peer.script = [(403, {"errcode": "M_FORBIDDEN", "error": "You are not a server admin"}, {})]
    monkeypatch.setenv("HAOSQ_MATRIX_URL", peer.url)
    monkeypatch.setenv("HAOSQ_MATRIX_TOKEN", "from-env")
    monkeypatch.setenv("HAOSQ_MATRIX_EXPORT_ROOT", str(tmp_path))
    payload = {"userId": "@a:localhost"}
    with pytest.raises(PermanentError, match="server admin"):
        user_export(payload, job_context("matrix:user-export", payload, {}))
    assert peer.requests[0][2] == "/_synapse/admin/v2/users/%40a%3Alocalhost"
