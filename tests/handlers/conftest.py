"""Fixtures for the built-in handler tests: a job context on a real job row, and real peers.

- `run_handler(type, payload, handlers={...})` runs a registered handler on a real job in the
  test database, with a JobContext whose logs land in job_logs; returns (result, job id).
- `smtp_server` starts aiosmtpd on 127.0.0.1 (`smtp_server(tls=True, auth=True)` for STARTTLS
  and AUTH with a certificate from a throwaway CA); the returned peer records every accepted
  message and can refuse recipients (550/450) or drop the connection in the middle of a batch.
- `tls_ca`: a trustme CA for local HTTPS peers.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from haosq.config import Settings
from haosq.db.queries import jobs as job_sql
from haosq.handlers.registry import REGISTRY, JobContext, JobLogger, load_builtin_handlers
from haosq.queue import JobQueue


class DatabaseLogSink:
    """Writes job logs straight into job_logs (the daemon batches them; tests need no batching)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def write(self, job_id: int, attempt: int, level: str, message: str,
              metadata: dict[str, Any] | None) -> None:
        with self.queue.db.connection() as conn:
            job_sql.add_logs(conn, [(job_id, attempt, level, message, metadata)])


def settings_with_handlers(settings: Settings, handlers: dict[str, Any]) -> Settings:
    sections = {**settings.sections, "handlers": handlers}
    return dataclasses.replace(settings, sections=sections)


@dataclass
class HandlerRun:
    queue: JobQueue
    settings: Settings

    def context(self, job_id: int, *, attempt: int = 1, handlers: dict[str, Any] | None = None,
                cancelled: threading.Event | None = None) -> JobContext:
        job = self.queue.get(job_id)
        return JobContext(
            job=job,
            log=JobLogger(DatabaseLogSink(self.queue), job.id, attempt),
            attempt=attempt,
            cancelled=cancelled or threading.Event(),
            settings=settings_with_handlers(self.settings, handlers or {}),
            database=self.queue.db,
        )

    def enqueue(self, job_type: str, payload: dict[str, Any]) -> int:
        return self.queue.add(job_type, payload).id

    def run(self, job_type: str, payload: dict[str, Any], *, handlers: dict[str, Any] | None = None,
            job_id: int | None = None, attempt: int = 1) -> Any:
        """Run the handler once on a job (a new one, or `job_id` again as a retry)."""
        load_builtin_handlers()
        if job_id is None:
            job_id = self.enqueue(job_type, payload)
        ctx = self.context(job_id, attempt=attempt, handlers=handlers)
        return REGISTRY.get(job_type).call(ctx.job.payload, ctx)


@pytest.fixture
def run_handler(queue: JobQueue, settings: Settings) -> HandlerRun:
    return HandlerRun(queue, settings)


# -- TLS --------------------------------------------------------------------------------------

@dataclass
class LocalCA:
    ca: trustme.CA
    bundle: Path

    def server_context(self, *names: str) -> ssl.SSLContext:
        cert = self.ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    ca = trustme.CA()
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return LocalCA(ca, bundle)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- SMTP -------------------------------------------------------------------------------------

@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpPeer:
    """An aiosmtpd server's behaviour and what it received."""

    port: int = 0
    url: str = ""
    ca_bundle: str | None = None
    received: list[ReceivedMail] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)        # 550 at RCPT
    defer: set[str] = field(default_factory=set)         # 450 at RCPT
    drop_before_message: int | None = None               # drop the connection at DATA of message N
    logins: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0

    def handlers_config(self, **extra: Any) -> dict[str, Any]:
        table: dict[str, Any] = {"url": self.url, "from": "noreply@haosq.test", **extra}
        if self.ca_bundle:
            table["ca_bundle"] = self.ca_bundle
        return {"smtp": table}

    def to(self, address: str) -> list[ReceivedMail]:
        return [mail for mail in self.received if address in mail.rcpt_tos]

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.reject:
            return "550 5.1.1 No such user here"
        if address in self.defer:
            return "450 4.2.1 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.drop_before_message is not None and len(self.received) == self.drop_before_message:
            self.drop_before_message = None
            self.dropped += 1
            server.transport.close()  # the connection dies before the reply: nothing accepted
            return "421 closing"
        self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if (login, password) == ("mailer", "s3cret/pass"):
                self.logins.append((login, password))
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@pytest.fixture
def smtp_server(tls_ca: LocalCA) -> Iterator[Callable[..., SmtpPeer]]:
    controllers: list[Controller] = []

    def start(*, tls: bool = False, auth: bool = False) -> SmtpPeer:
        peer = SmtpPeer()
        options: dict[str, Any] = {}
        if tls:
            options.update(tls_context=tls_ca.server_context(), require_starttls=True)
            peer.ca_bundle = str(tls_ca.bundle)
        if auth:
            options.update(authenticator=peer.authenticate, auth_required=True,
                           auth_require_tls=tls)
        peer.port = free_port()
        controller = Controller(peer, hostname="127.0.0.1", port=peer.port, **options)
        controller.start()
        controllers.append(controller)
        credentials = "mailer:s3cret%2Fpass@" if auth else ""
        query = "?starttls=1" if tls else ""
        peer.url = f"smtp://{credentials}127.0.0.1:{peer.port}{query}"
        return peer

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp(smtp_server: Callable[..., SmtpPeer]) -> SmtpPeer:
    """A plain SMTP server, no TLS, no auth."""
    return smtp_server()


# -- HTTP(S) peers ----------------------------------------------------------------------------

@dataclass
class HttpRequestRecord:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class HttpPeer:
    """A local HTTPS (or HTTP) server: records requests, answers through `respond`, or with
    the scripted replies queued in `replies` first."""

    url: str = ""
    requests: list[HttpRequestRecord] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    respond: Callable[[HttpRequestRecord], Reply] = lambda request: (200, {}, b"{}")

    def answer(self, request: HttpRequestRecord) -> Reply:
        self.requests.append(request)
        if self.replies:
            return self.replies.pop(0)
        return self.respond(request)


@pytest.fixture
def http_peer(tls_ca: LocalCA) -> Iterator[Callable[..., HttpPeer]]:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers: list[ThreadingHTTPServer] = []

    def start(*, tls: bool = True, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> HttpPeer:
        peer = HttpPeer()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                record = HttpRequestRecord("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                           self.rfile.read(length))
                status, headers, body = peer.answer(record)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if tls:
            server.socket = tls_ca.server_context(*names).wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        peer.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
        return peer

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# -- a real worker --------------------------------------------------------------------------

WORKER_OVERRIDES = {
    "worker.heartbeat_interval_ms": 200,
    "worker.poll_interval_ms": 50,
    "worker.shutdown_timeout_seconds": 1.0,
    "worker.backoff_base_seconds": 0.05,
    "worker.backoff_cap_seconds": 0.2,
}


@pytest.fixture
def handler_worker(settings: Settings) -> Iterator[Callable[..., Any]]:
    """`handler_worker(handlers={...}, types="email")` starts the daemon's worker service in
    this process, running the built-in handlers with that `[handlers]` configuration."""
    from haosq.daemon.service import WorkerService

    services: list[WorkerService] = []

    def start(*, handlers: dict[str, Any], types: str, **overrides: Any) -> WorkerService:
        load_builtin_handlers()
        configured = settings.with_overrides(**{**WORKER_OVERRIDES, "worker.types": types, **overrides})
        service = WorkerService(settings_with_handlers(configured, handlers))
        services.append(service)
        service.start()
        return service

    yield start
    for service in services:
        service.stop(timeout=1.0)


def wait_finished(conn: Any, job_id: int, timeout: float = 15.0) -> dict[str, Any]:
    """The job row once it is completed, failed or cancelled (polling the database)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT * FROM haosq.jobs WHERE id = %s", (job_id,)).fetchone()
        if row["status"] in ("completed", "failed", "cancelled"):
            return dict(row)
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {row['status']} after {timeout}s: {row['error']}")
        time.sleep(0.02)
