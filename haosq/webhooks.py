"""Completion webhooks: a URL called with a job's final state, signed, retried, allow-listed.

How it works: when a job becomes completed, failed or cancelled and a URL applies to it (its
own, attached with `add_with_webhook`, or its type's or family's route from
`[webhooks.routes]`), the database enqueues a `haosq:webhook` job in the same statement
(migration 0005). The built-in `haosq:webhook` handler POSTs the job's final state as JSON,
signed with HMAC-SHA256; a failed delivery is retried by the queue itself with its usual
exponential backoff, up to 10 attempts, and stays visible in the TUI as a failed job after.

Configuration:

    [webhooks]
    allow_hosts = ["hooks.example.com", "*.example.org"]   # nothing else is ever called
    secret_file = "/etc/haosq/credentials/webhook-secret"  # default: $CREDENTIALS_DIRECTORY/webhook-secret
    allow_private = []        # internal addresses stay refused (no SSRF) unless listed
    allow_http = false
    timeout = 10

    [webhooks.routes]
    "email:send" = "https://hooks.example.com/haosq/email-sent"
    "media" = "https://hooks.example.com/haosq/media"        # a whole family

Receivers verify `X-Haosq-Signature: sha256=HEX` = HMAC-SHA256(secret, f"{timestamp}.{body}")
with the timestamp from `X-Haosq-Timestamp` (reject old ones to stop replays); `verify` below
does exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from haosq.config import Settings
from haosq.db.queries import webhooks as webhook_sql
from haosq.errors import ConfigError, InvalidJob

WEBHOOK_TYPE = "haosq:webhook"
SIGNATURE_HEADER = "X-Haosq-Signature"
TIMESTAMP_HEADER = "X-Haosq-Timestamp"
DELIVERY_HEADER = "X-Haosq-Delivery"
CREDENTIAL = "webhook-secret"
KNOWN_KEYS = {"allow_hosts", "secret_file", "allow_private", "allow_http", "timeout",
              "max_response_bytes", "routes"}
_TYPE_OR_FAMILY = r"^[a-z0-9][a-z0-9_.-]*(:[a-z0-9][a-z0-9_.-]*)?$"


@dataclass(frozen=True)
class WebhookConfig:
    allow_hosts: tuple[str, ...] = ()
    routes: dict[str, str] = field(default_factory=dict)
    secret_file: Path | None = None
    # The [webhooks] table, for the network policy (allow_private, allow_http, timeout, ...).
    table: Mapping[str, Any] = field(default_factory=dict)

    def host_allowed(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        return bool(host) and any(fnmatchcase(host, pattern.lower()) for pattern in self.allow_hosts)

    def secret(self, env: Mapping[str, str] | None = None) -> bytes:
        """The signing key: secret_file, else the systemd credential webhook-secret."""
        env = os.environ if env is None else env
        path = self.secret_file
        if path is None and env.get("CREDENTIALS_DIRECTORY"):
            path = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL
        if path is None:
            raise ConfigError("[webhooks] secret_file is not set and there is no webhook-secret "
                              "credential (LoadCredential=webhook-secret:...)")
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"[webhooks] secret_file {path}: {exc.strerror}") from None
        if len(secret) < 16:
            raise ConfigError(f"[webhooks] secret_file {path}: the secret must have at least 16 bytes")
        return secret


def load_webhook_config(settings: Settings) -> WebhookConfig:
    """Read and validate [webhooks]; raises ConfigError naming the key at fault."""
    import re

    table = settings.sections.get("webhooks", {})
    if not isinstance(table, Mapping):
        raise ConfigError("[webhooks]: expected a table")
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"[webhooks]: unknown key {unknown[0]!r} (known: {', '.join(sorted(KNOWN_KEYS))})")
    hosts = table.get("allow_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError(f"[webhooks] allow_hosts = {hosts!r}: expected a list of host names")
    routes = table.get("routes", {})
    if not isinstance(routes, Mapping):
        raise ConfigError("[webhooks.routes]: expected a table of job type = URL")
    for job_type, url in routes.items():
        if not re.match(_TYPE_OR_FAMILY, job_type):
            raise ConfigError(f"[webhooks.routes] {job_type!r}: expected a job type or family")
        check_url_shape(url, f"[webhooks.routes] {job_type!r}")
    secret_file = table.get("secret_file")
    if secret_file is not None and not isinstance(secret_file, str):
        raise ConfigError(f"[webhooks] secret_file = {secret_file!r}: expected a path")
    from haosq.handlers.netguard import NetPolicy

    NetPolicy.from_config(table, where="webhooks")  # allow_private, allow_http, timeout
    return WebhookConfig(tuple(hosts), dict(routes), Path(secret_file) if secret_file else None,
                         dict(table))


def check_url_shape(url: Any, where: str) -> None:
    if not isinstance(url, str):
        raise ConfigError(f"{where} = {url!r}: expected a URL")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{where} = {url!r}: expected an http(s) URL")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: credentials in webhook URLs are not allowed; "
                          "receivers verify the signature instead")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: bytes, headers: Mapping[str, str], body: bytes, *, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """For receivers: the signature matches and the timestamp is recent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lowered[TIMESTAMP_HEADER.lower()])
        signature = lowered[SIGNATURE_HEADER.lower()]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def sync_routes(conn: psycopg.Connection[Any], config: WebhookConfig) -> None:
    """Make the database's routes those of the configuration."""
    webhook_sql.replace_routes(conn, config.routes)


def attach(conn: psycopg.Connection[Any], job_id: int, url: str) -> None:
    """Give one job its own webhook URL (call in the transaction that adds the job)."""
    try:
        check_url_shape(url, "webhook URL")
    except ConfigError as exc:
        raise InvalidJob(str(exc)) from None
    webhook_sql.attach(conn, job_id, url)


def add_with_webhook(queue: Any, job_type: str, payload: Mapping[str, Any] | None, url: str,
                     **options: Any) -> Any:
    """`queue.add(...)` plus a per-job webhook URL, in one transaction."""
    with queue.db.connection() as conn, conn.transaction():
        job = queue.add(job_type, payload, conn=conn, **options)
        attach(conn, job.id, url)
    return job
