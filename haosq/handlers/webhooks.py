"""The `haosq:webhook` job type: deliver one completion webhook (see haosq.webhooks).

The payload names the finished job and the URL; the body is the job's state read now (its
result and error masked like everything haosq shows). A 2xx answer completes the delivery;
429 and 5xx answers, timeouts and connection errors are retried with the queue's backoff
(honouring Retry-After); any other 4xx, a host outside `allow_hosts` or an internal address
fails it at once.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import httpx

from haosq.errors import PermanentError, Retry
from haosq.handlers.netguard import GuardedHttpClient, NetPolicy, retry_after_seconds
from haosq.handlers.registry import JobContext, handler
from haosq.secrets import mask_text, mask_value
from haosq.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_TYPE,
    load_webhook_config,
    sign,
)

RETRYABLE_STATUS = {408, 425, 429}


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def build_body(job: dict[str, Any], delivery_id: int) -> bytes:
    document = {
        "event": "job.finished",
        "delivery": delivery_id,
        "job": {
            "id": job["id"],
            "type": job["type"],
            "status": job["status"],
            "attempts": job["attempts"],
            "max_attempts": job["max_attempts"],
            "result": mask_value(job["result"]),
            "error": mask_text(job["error"]) if job["error"] else None,
            "tags": list(job["tags"] or []),
            "created_at": _iso(job["created_at"]),
            "started_at": _iso(job["started_at"]),
            "completed_at": _iso(job["completed_at"]),
        },
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@handler(WEBHOOK_TYPE, timeout=60)
def deliver(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from haosq.db.queries import webhooks as webhook_sql

    url = payload.get("url")
    job_id = payload.get("job_id")
    if not isinstance(url, str) or not isinstance(job_id, int):
        raise PermanentError("haosq:webhook needs job_id (integer) and url (string)")
    config = load_webhook_config(ctx.settings)
    if not config.host_allowed(url):
        raise PermanentError(f"webhook host of {url!r} is not in [webhooks] allow_hosts")
    secret = config.secret()
    with ctx.connection() as conn:
        job = webhook_sql.finished_job(conn, job_id)
    if job is None:
        raise PermanentError(f"job {job_id} no longer exists")
    body = build_body(job, ctx.job_id)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: str(ctx.job_id),
    }
    policy = NetPolicy.from_config(config.table, where="webhooks")
    try:
        with GuardedHttpClient(policy, user_agent="haosq-webhook") as client:
            response = client.post(url, data=body, headers=headers)
    except httpx.TransportError as exc:
        raise OSError(f"webhook to {url}: {exc or type(exc).__name__}") from None
    status = response.status_code
    if 200 <= status < 300:
        ctx.log.info("webhook delivered", url=url, status=status, job_id=job_id)
        return {"status": status, "job_id": job_id}
    if status in RETRYABLE_STATUS or status >= 500:
        delay = retry_after_seconds(response.headers.get("Retry-After"))
        raise Retry(f"webhook to {url} answered {status}", after=delay)
    raise PermanentError(f"webhook to {url} answered {status}")
