"""A real Synapse homeserver for the matrix job tests (SQLite, localhost, one per session).

Synapse lives in its own virtualenv (HAOSQ_SYNAPSE_VENV, default
/var/cache/haosq-test/synapse-venv, made by .ci/system-deps; built here when missing).
Users are registered through the admin API with the shared secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

VENV = Path(os.environ.get("HAOSQ_SYNAPSE_VENV", "/var/cache/haosq-test/synapse-venv"))
SERVER_NAME = "localhost"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if (VENV / "bin" / "synapse_homeserver").exists():
        return python
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    installed = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "matrix-synapse"],
                               capture_output=True, text=True)
    if installed.returncode != 0:
        pytest.skip(f"Synapse could not be installed into {VENV}: {installed.stderr[-300:]}")
    return python


CONFIG = """\
server_name: "{server_name}"
pid_file: {home}/homeserver.pid
public_baseurl: "http://127.0.0.1:{port}/"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {home}/homeserver.db
log_config: {home}/log.yaml
media_store_path: {home}/media
registration_shared_secret: "{secret}"
macaroon_secret_key: "{macaroon}"
form_secret: "{form}"
signing_key_path: {home}/signing.key
report_stats: false
# Test passwords need no real hashing cost; registration is then a few ms, not a second.
bcrypt_rounds: 4
trusted_key_servers: []
suppress_key_server_warning: true
enable_metrics: false
url_preview_enabled: false
presence:
  enabled: false
rc_message: {{per_second: 10000, burst_count: 10000}}
rc_registration: {{per_second: 10000, burst_count: 10000}}
rc_login:
  address: {{per_second: 10000, burst_count: 10000}}
  account: {{per_second: 10000, burst_count: 10000}}
  failed_attempts: {{per_second: 10000, burst_count: 10000}}
rc_joins:
  local: {{per_second: 10000, burst_count: 10000}}
  remote: {{per_second: 10000, burst_count: 10000}}
rc_invites:
  per_room: {{per_second: 10000, burst_count: 10000}}
  per_user: {{per_second: 10000, burst_count: 10000}}
rc_media_create: {{per_second: 10000, burst_count: 10000}}
"""

LOG_CONFIG = """\
version: 1
formatters:
  plain: {{format: "%(asctime)s %(levelname)s %(name)s %(message)s"}}
handlers:
  file: {{class: logging.FileHandler, filename: {home}/homeserver.log, formatter: plain}}
root: {{level: WARNING, handlers: [file]}}
disable_existing_loggers: false
"""


@dataclass
class User:
    user_id: str
    token: str


@dataclass
class Homeserver:
    url: str
    secret: str
    home: Path
    admin: User | None = None
    started_in: float = 0.0
    _txn: Iterator[int] = field(default_factory=itertools.count)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def register(self, localpart: str, *, admin: bool = False, displayname: str | None = None) -> User:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            nonce = http.get("/_synapse/admin/v1/register").json()["nonce"]
            password = secrets.token_hex(8)
            mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
            mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                                     b"admin" if admin else b"notadmin"]))
            body: dict[str, Any] = {"nonce": nonce, "username": localpart, "password": password,
                                    "admin": admin, "mac": mac.hexdigest()}
            if displayname:
                body["displayname"] = displayname
            response = http.post("/_synapse/admin/v1/register", json=body)
            response.raise_for_status()
            data = response.json()
        return User(data["user_id"], data["access_token"])

    def create_room(self, user: User, name: str, invite: list[str] | None = None) -> str:
        with self.client(user.token) as http:
            response = http.post("/_matrix/client/v3/createRoom",
                                 json={"name": name, "preset": "private_chat", "invite": invite or []})
            response.raise_for_status()
            return response.json()["room_id"]

    def join(self, user: User, room_id: str) -> None:
        with self.client(user.token) as http:
            http.post(f"/_matrix/client/v3/join/{quote(room_id, safe='')}", json={}).raise_for_status()

    def leave(self, user: User, room_id: str) -> None:
        with self.client(user.token) as http:
            http.post(f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/leave", json={}).raise_for_status()

    def send(self, user: User, room_id: str, text: str) -> str:
        with self.client(user.token) as http:
            response = http.put(
                f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/t{next(self._txn)}",
                json={"msgtype": "m.text", "body": text})
            response.raise_for_status()
            return response.json()["event_id"]

    def upload(self, user: User, data: bytes, content_type: str = "image/png", name: str = "a.png") -> str:
        with self.client(user.token) as http:
            response = http.post("/_matrix/media/v3/upload", params={"filename": name}, content=data,
                                 headers={"Content-Type": content_type})
            response.raise_for_status()
            return response.json()["content_uri"]

    def messages(self, user: User, room_id: str) -> list[dict[str, Any]]:
        """The room's m.room.message events as `user` sees them, oldest first."""
        with self.client(user.token) as http:
            response = http.get(f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages",
                                params={"dir": "b", "limit": 1000})
            response.raise_for_status()
            chunk = response.json()["chunk"]
        return [e for e in reversed(chunk) if e["type"] == "m.room.message" and e.get("content")]

    def admin_get(self, path: str) -> Any:
        assert self.admin is not None
        with self.client(self.admin.token) as http:
            response = http.get(path)
            return response.json() if response.status_code == 200 else {"status": response.status_code}


@dataclass
class _Launch:
    process: subprocess.Popen[bytes]
    server: Homeserver
    started: float


_EARLY: list[_Launch] = []


def _launch() -> _Launch:
    """Start Synapse in a fresh home directory; it answers some seconds later."""
    python = _ensure_venv()
    home = Path(tempfile.mkdtemp(prefix="haosq-synapse-"))
    port = _free_port()
    secret = secrets.token_hex(16)
    (home / "homeserver.yaml").write_text(CONFIG.format(
        server_name=SERVER_NAME, home=home, port=port, secret=secret,
        macaroon=secrets.token_hex(16), form=secrets.token_hex(16)))
    (home / "log.yaml").write_text(LOG_CONFIG.format(home=home))
    # A signing key file holds the ed25519 seed: 32 random bytes, unpadded base64.
    seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    (home / "signing.key").write_text(f"ed25519 a_test {seed}\n")
    started = time.monotonic()
    with open(home / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [str(python), "-m", "synapse.app.homeserver", "-c", str(home / "homeserver.yaml")],
            cwd=home, stdout=subprocess.DEVNULL, stderr=stderr)
    return _Launch(process, Homeserver(f"http://127.0.0.1:{port}", secret, home), started)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start Synapse as soon as the session knows it needs one, so that its start-up overlaps
    with the tests that run before the matrix tests."""
    if session.config.option.collectonly:
        return
    if not _EARLY and any("synapse" in getattr(item, "fixturenames", ()) for item in session.items):
        _EARLY.append(_launch())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A homeserver started early but never used (the session stopped first) is stopped here."""
    while _EARLY:
        launch = _EARLY.pop()
        launch.process.kill()
        launch.process.wait()
        shutil.rmtree(launch.server.home, ignore_errors=True)


@pytest.fixture(scope="session")
def synapse() -> Iterator[Homeserver]:
    launch = _EARLY.pop() if _EARLY else _launch()
    process, server = launch.process, launch.server
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Synapse exited: {(server.home / 'stderr.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/_matrix/client/versions", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("Synapse did not answer within 120 s")
        time.sleep(0.1)
    server.started_in = time.monotonic() - launch.started
    server.admin = server.register("haosq-admin", admin=True)
    yield server
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(server.home, ignore_errors=True)
