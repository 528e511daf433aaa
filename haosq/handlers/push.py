"""Push providers for the `notification:*` job types: the Matrix push gateway API and Web Push.

Configuration (`[handlers.push]`, environment variables win):

    [handlers.push]
    allow_private = []              # see haosq.handlers.netguard: push endpoints come from users
    ca_bundle = "/etc/ssl/internal-ca.pem"
    timeout = 10
    rate_per_second = 50            # default pacing of notification:batch
    gateway_url = "https://push.example.org/_matrix/push/v1/notify"   # Matrix devices without url
    vapid_private_key = "..."       # HAOSQ_VAPID_PRIVATE_KEY: base64url raw/DER key or PEM text
    vapid_private_key_file = "/etc/haosq/vapid.pem"
    vapid_subject = "mailto:ops@example.org"   # HAOSQ_VAPID_SUBJECT

Each provider turns one HTTP exchange into a `Delivery`: delivered, rejected (the device is
gone: the application should forget its push key), or an exception for the retry machinery
(`Retry` when the peer sent Retry-After, a plain error for backoff, `PermanentError`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from haosq.errors import ConfigError, PermanentError, Retry
from haosq.handlers.handler_config import handler_config, positive_number
from haosq.handlers.netguard import GuardedHttpClient, NetPolicy, retry_after_seconds
from haosq.handlers.registry import JobContext

PUSH_ENV = {
    "vapid_private_key": "HAOSQ_VAPID_PRIVATE_KEY",
    "vapid_subject": "HAOSQ_VAPID_SUBJECT",
    "gateway_url": "HAOSQ_PUSH_GATEWAY_URL",
}
MATRIX_NOTIFY_PATH = "/_matrix/push/v1/notify"


class TemporaryPushError(Exception):
    """A 429 or 5xx without Retry-After, or a bad gateway answer: retried with backoff."""


@dataclass(frozen=True)
class Delivery:
    status: str  # "sent" or "rejected"
    detail: str = ""


@dataclass(frozen=True)
class PushConfig:
    policy: NetPolicy
    gateway_url: str | None
    vapid_private_key: str | None
    vapid_private_key_file: str | None
    vapid_subject: str | None
    rate_per_second: float | None
    rate_per_minute: float | None

    @classmethod
    def from_context(cls, ctx: JobContext) -> PushConfig:
        table = handler_config(ctx, "push", PUSH_ENV)
        return cls(
            policy=NetPolicy.from_config(table, where="handlers.push"),
            gateway_url=table.get("gateway_url"),
            vapid_private_key=table.get("vapid_private_key"),
            vapid_private_key_file=table.get("vapid_private_key_file"),
            vapid_subject=table.get("vapid_subject"),
            rate_per_second=positive_number(table, "rate_per_second", None, "handlers.push"),
            rate_per_minute=positive_number(table, "rate_per_minute", None, "handlers.push"),
        )


def _raise_for_retryable(response: httpx.Response, what: str) -> None:
    """429 and 5xx: Retry at the time the peer asked for, else backoff."""
    if response.status_code == 429 or response.status_code >= 500:
        message = f"{what}: HTTP {response.status_code}"
        delay = retry_after_seconds(response.headers.get("Retry-After"))
        if delay is not None:
            raise Retry(f"{message}, retry after {delay:.0f}s", after=delay)
        raise TemporaryPushError(message)
    if 300 <= response.status_code < 400:
        raise PermanentError(
            f"{what}: HTTP {response.status_code} redirect to {response.headers.get('Location')!r} "
            "(redirects are not followed)"
        )


class MatrixGateway:
    """`POST /_matrix/push/v1/notify` (the Matrix push gateway API, as served by Sygnal)."""

    def __init__(self, client: GuardedHttpClient, config: PushConfig) -> None:
        self.client = client
        self.config = config

    def url_for(self, device_url: str | None) -> str:
        url = device_url or self.config.gateway_url
        if not url:
            raise PermanentError(
                "invalid payload: field 'device.url' is required (no gateway_url in [handlers.push])"
            )
        if urlsplit(url).path != MATRIX_NOTIFY_PATH:
            raise PermanentError(
                f"invalid payload: field 'device.url': the path must be {MATRIX_NOTIFY_PATH}"
            )
        return url

    def send(self, url: str, notification: dict[str, Any], device: dict[str, Any]) -> Delivery:
        body = {"notification": {**notification, "devices": [device]}}
        response = self.client.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"})
        _raise_for_retryable(response, f"push gateway {urlsplit(url).netloc}")
        if response.status_code != 200:
            raise PermanentError(
                f"push gateway {urlsplit(url).netloc}: HTTP {response.status_code} {response.text[:200]}"
            )
        try:
            rejected = response.json().get("rejected", [])
        except (ValueError, AttributeError):
            raise TemporaryPushError(f"push gateway {urlsplit(url).netloc}: answer is not JSON") from None
        if device["pushkey"] in rejected:
            return Delivery("rejected", "the gateway rejected the push key")
        return Delivery("sent")


class WebPush:
    """Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption, via pywebpush."""

    def __init__(self, client: GuardedHttpClient, config: PushConfig) -> None:
        self.client = client
        self.config = config
        self._vapid: Any = None

    def vapid(self) -> Any:
        if self._vapid is None:
            from py_vapid import Vapid

            config = self.config
            if not config.vapid_subject:
                raise ConfigError("Web Push needs vapid_subject in [handlers.push] or HAOSQ_VAPID_SUBJECT")
            try:
                if config.vapid_private_key_file:
                    self._vapid = Vapid.from_file(config.vapid_private_key_file)
                elif config.vapid_private_key and "-----BEGIN" in config.vapid_private_key:
                    self._vapid = Vapid.from_pem(config.vapid_private_key.encode())
                elif config.vapid_private_key:
                    self._vapid = Vapid.from_string(config.vapid_private_key)
                else:
                    raise ConfigError(
                        "Web Push needs vapid_private_key (or vapid_private_key_file) in [handlers.push] "
                        "or HAOSQ_VAPID_PRIVATE_KEY"
                    )
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(f"[handlers.push]: unreadable VAPID private key ({exc})") from None
        return self._vapid

    def send(self, subscription: Mapping[str, Any], data: bytes, *, ttl: int,
             urgency: str | None, topic: str | None) -> Delivery:
        from pywebpush import WebPusher, WebPushException

        endpoint = str(subscription["endpoint"])
        parts = urlsplit(endpoint)
        claims = {"sub": self.config.vapid_subject, "aud": f"{parts.scheme}://{parts.netloc}",
                  "exp": int(time.time()) + 12 * 3600}
        headers = dict(self.vapid().sign(claims))
        if urgency:
            headers["Urgency"] = urgency
        if topic:
            headers["Topic"] = topic
        try:
            # The guarded client stands in for a requests session: the same checks as every
            # other outgoing request, no redirects.
            pusher = WebPusher(dict(subscription), requests_session=self.client)  # type: ignore[arg-type]
            response = pusher.send(data, headers, ttl=ttl, content_encoding="aes128gcm",
                                   timeout=self.client.policy.timeout)
        except WebPushException as exc:
            raise PermanentError(f"invalid payload: field 'device.subscription': {exc}") from None
        assert isinstance(response, httpx.Response)
        what = f"push service {parts.netloc}"
        if response.status_code in (404, 410):
            return Delivery("rejected", f"HTTP {response.status_code}: the subscription is gone")
        _raise_for_retryable(response, what)
        if not 200 <= response.status_code < 300:
            raise PermanentError(f"{what}: HTTP {response.status_code} {response.text[:200]}")
        return Delivery("sent")
