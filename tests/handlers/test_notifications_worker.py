"""Push jobs through the daemon's real worker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tests.handlers.conftest import wait_finished
from tests.handlers.test_notifications import (
    BrowserSubscription,
    VapidKeys,
    matrix_device,
    matrix_gateway,
    push_config,
)


def test_web_push_and_gateway_retry_after_through_the_worker(queue, conn, http_peer, tls_ca, handler_worker):
    vapid = VapidKeys()
    endpoint = http_peer()
    endpoint.respond = lambda request: (201, {}, b"")
    browser = BrowserSubscription(f"{endpoint.url}/push/s1")
    gateway = matrix_gateway(http_peer())
    gateway.replies = [(429, {"Retry-After": "3600"}, b"")]

    web = queue.add("notification:push", {"device": {"provider": "webpush", "subscription": browser.json},
                                          "title": "Hello", "body": "from the worker"})
    matrix = queue.add("notification:push", {"device": matrix_device(gateway), "body": "hi"})
    handler_worker(handlers=push_config(endpoint, tls_ca, vapid), types="notification")

    row = wait_finished(conn, web.id)
    assert row["status"] == "completed" and row["result"]["status"] == "sent"
    assert browser.decrypt(endpoint.requests[0].body) == {"title": "Hello", "body": "from the worker"}
    vapid.verify(endpoint.requests[0].headers["authorization"], audience=endpoint.url)

    def retried():
        found = conn.execute("SELECT * FROM haosq.jobs WHERE id = %s", (matrix.id,)).fetchone()
        return found if found["status"] == "pending" and found["attempts"] == 1 else None

    from tests.integration.worker_support import wait_until

    pending = wait_until(retried, 10, message="the 429 to put the job back")
    wait = (pending["due_at"] - datetime.now(UTC)).total_seconds()
    assert 3000 < wait <= 3600  # Retry-After honoured, not the short test backoff
    assert json.loads(gateway.requests[0].body)["notification"]["devices"][0]["pushkey"] == "key-1"
