"""A small client for a Matrix homeserver's client-server and Synapse admin APIs (httpx).

Failures are sorted the way a job needs them:
- 401, 403, 404 and other 4xx answers are permanent (`MatrixApiError`, a PermanentError
  that carries the status and the Matrix errcode, so that callers can recognise a case);
- 429 is retried after the server's `retry_after_ms` (or Retry-After): in place when the wait
  is short, otherwise by rescheduling the job (`haosq.Retry(after=...)`);
- 5xx answers and transport errors are retried in place with backoff a few times, then the
  job is rescheduled.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

import httpx

from haosq.errors import PermanentError, Retry

TRANSIENT_STATUSES = {500, 502, 503, 504}


class MatrixApiError(PermanentError):
    """The homeserver refused a request for good."""

    def __init__(self, method: str, path: str, status: int, errcode: str | None, error: str) -> None:
        self.status, self.errcode, self.error = status, errcode, error
        hint = {401: " (is the access token valid?)",
                403: " (does the access token belong to a server admin?)"}.get(status, "")
        super().__init__(f"{method} {path}: HTTP {status} {errcode or ''} {error}{hint}".replace("  ", " "))


class JobCancelled(Exception):
    """The job was cancelled while waiting to retry a request."""


def q(value: str) -> str:
    """A Matrix id as one URL path segment (`!room:server` and `@user:server` contain ':')."""
    return quote(value, safe="")


class MatrixClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        cancelled: threading.Event | None = None,
        max_inline_wait: float = 10.0,
        inline_attempts: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "haosq"},
        )
        self._cancelled = cancelled or threading.Event()
        self.max_inline_wait = max_inline_wait
        self.inline_attempts = inline_attempts
        self.backoff = backoff

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MatrixClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, json=body if body is not None else {})

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None) -> Any:
        for attempt in range(1, self.inline_attempts + 1):
            last = attempt == self.inline_attempts
            try:
                response = self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                delay = self.backoff * 2 ** (attempt - 1)
                if last:
                    raise Retry(f"{method} {path}: homeserver unreachable: {exc}", after=30.0) from None
                self._wait(delay)
                continue
            if response.status_code == 429:
                delay = _retry_after(response)
                if delay > self.max_inline_wait or last:
                    raise Retry(f"{method} {path}: rate limited by the homeserver", after=delay)
                self._wait(delay)
                continue
            if response.status_code in TRANSIENT_STATUSES:
                if last:
                    raise Retry(f"{method} {path}: HTTP {response.status_code} from the homeserver",
                                after=30.0)
                self._wait(self.backoff * 2 ** (attempt - 1))
                continue
            if response.status_code >= 400:
                errcode, error = _error_of(response)
                raise MatrixApiError(method, path, response.status_code, errcode, error)
            return response.json() if response.content else {}
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _wait(self, seconds: float) -> None:
        if self._cancelled.wait(seconds):
            raise JobCancelled("the job was cancelled")


def _retry_after(response: httpx.Response) -> float:
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("retry_after_ms"), int | float):
            return max(0.0, body["retry_after_ms"] / 1000)
    except ValueError:
        pass
    header = response.headers.get("Retry-After", "")
    return float(header) if header.replace(".", "", 1).isdigit() else 1.0


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if isinstance(body, dict):
        return body.get("errcode"), str(body.get("error", ""))
    return None, str(body)[:200]
