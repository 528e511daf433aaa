"""The `notification:*` job types: push to devices through pluggable providers.

- notification:push    one device
- notification:batch   many devices, rate-limited and checkpointed (a retry skips devices done)
- notification:digest  pending digest items of a recipient, summarised in one push

A device is `{"provider": "matrix", "url": ..., "appId": ..., "pushkey": ...}` (a Matrix
pusher, sent through its push gateway) or `{"provider": "webpush", "subscription": {...}}`
(the browser's PushSubscription JSON). Devices whose push key the provider rejects are
listed in the result under `rejected`, so the application can forget them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field

from haosq.errors import PermanentError
from haosq.handlers.digest_source import claim_digest, finish_digest
from haosq.handlers.netguard import GuardedHttpClient
from haosq.handlers.payloads import Payload, parse_payload
from haosq.handlers.push import Delivery, MatrixGateway, PushConfig, WebPush
from haosq.handlers.ratelimit import RateLimiter
from haosq.handlers.registry import JobContext, handler
from haosq.handlers.templates import compile_template, render

Text = Annotated[str, Field(max_length=4000)]


class MatrixDevice(Payload):
    provider: Literal["matrix"]
    url: str | None = None
    app_id: Annotated[str, Field(min_length=1, max_length=64)]
    pushkey: Annotated[str, Field(min_length=1, max_length=512)]
    pushkey_ts: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"provider": "matrix", "app_id": self.app_id, "pushkey": self.pushkey}


class WebPushKeys(Payload):
    p256dh: Annotated[str, Field(min_length=1)]
    auth: Annotated[str, Field(min_length=1)]


class WebPushSubscription(Payload):
    endpoint: Annotated[str, Field(min_length=1, max_length=2048)]
    keys: WebPushKeys
    expiration_time: Any = None


class WebPushDevice(Payload):
    provider: Literal["webpush"]
    subscription: WebPushSubscription

    def describe(self) -> dict[str, Any]:
        return {"provider": "webpush", "endpoint": self.subscription.endpoint}


Device = Annotated[MatrixDevice | WebPushDevice, Field(discriminator="provider")]


class NotificationFields(Payload):
    title: Text | None = None
    body: Text | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    # Matrix notification fields, passed to the gateway as they are.
    event_id: str | None = None
    room_id: str | None = None
    type: str | None = None
    sender: str | None = None
    sender_display_name: str | None = None
    room_name: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    prio: Literal["high", "low"] = "high"
    # Web Push delivery options.
    ttl: Annotated[int, Field(ge=0, le=2_419_200)] = 86_400
    urgency: Literal["very-low", "low", "normal", "high"] | None = None
    topic: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] | None = None


class PushNotification(NotificationFields):
    device: Device


class BatchNotification(NotificationFields):
    devices: Annotated[list[Device], Field(min_length=1, max_length=100_000)]
    rate_per_second: Annotated[float, Field(gt=0)] | None = None
    rate_per_minute: Annotated[float, Field(gt=0)] | None = None


DEFAULT_DIGEST_TITLE = "{{ count }} new notification{{ 's' if count != 1 else '' }}"
DEFAULT_DIGEST_BODY = (
    "{{ items[0].get('title', '') }}{% if count > 1 %} and {{ count - 1 }} more{% endif %}"
)


class DigestNotification(Payload):
    device: Device
    recipient: Annotated[str, Field(min_length=1)]
    channel: Annotated[str, Field(min_length=1)] = "push"
    items: list[dict[str, Any]] | None = None
    title: str = DEFAULT_DIGEST_TITLE
    body: str = DEFAULT_DIGEST_BODY
    data: dict[str, Any] = Field(default_factory=dict)
    max_items: Annotated[int, Field(ge=1, le=10_000)] = 100
    ttl: Annotated[int, Field(ge=0, le=2_419_200)] = 86_400


class Pusher:
    """The providers of one job, sharing one guarded HTTP client."""

    def __init__(self, config: PushConfig) -> None:
        self.client = GuardedHttpClient(config.policy, user_agent="haosq-push")
        self.matrix = MatrixGateway(self.client, config)
        self.webpush = WebPush(self.client, config)

    def check(self, device: MatrixDevice | WebPushDevice, fields: NotificationFields | None = None) -> None:
        """Configuration and payload checks that need no network (before any side effect)."""
        if isinstance(device, MatrixDevice):
            self.matrix.url_for(device.url)
            return
        self.webpush.vapid()
        if fields is not None:
            size = len(webpush_message(fields))
            if size > WEBPUSH_MAX_PLAINTEXT:
                raise PermanentError(
                    f"invalid payload: fields 'title', 'body' and 'data' make a {size}-byte Web Push "
                    f"message; push services take at most {WEBPUSH_MAX_PLAINTEXT} bytes"
                )

    def send(self, device: MatrixDevice | WebPushDevice, fields: NotificationFields) -> Delivery:
        if isinstance(device, MatrixDevice):
            return self.matrix.send(self.matrix.url_for(device.url), matrix_notification(fields),
                                    matrix_device(device))
        data = webpush_message(fields)
        subscription = device.subscription
        keys = {"p256dh": subscription.keys.p256dh, "auth": subscription.keys.auth}
        return self.webpush.send({"endpoint": subscription.endpoint, "keys": keys}, data,
                                 ttl=fields.ttl, urgency=fields.urgency, topic=fields.topic)

    def close(self) -> None:
        self.client.close()


# Push services must accept 4096-byte bodies; aes128gcm adds 103 bytes (header, tag, padding).
WEBPUSH_MAX_PLAINTEXT = 4096 - 103


def webpush_message(fields: NotificationFields) -> bytes:
    """The JSON a Web Push subscriber receives (decrypted): title, body and data."""
    message = {"title": fields.title, "body": fields.body, "data": fields.data}
    return json.dumps({k: v for k, v in message.items() if v not in (None, {})}).encode()


def matrix_notification(fields: NotificationFields) -> dict[str, Any]:
    content = {"msgtype": "m.text", "body": fields.body, "title": fields.title, **fields.data}
    notification = {
        "event_id": fields.event_id, "room_id": fields.room_id, "type": fields.type,
        "sender": fields.sender, "sender_display_name": fields.sender_display_name,
        "room_name": fields.room_name, "prio": fields.prio,
        "counts": fields.counts or None,
        "content": {k: v for k, v in content.items() if v is not None},
    }
    return {k: v for k, v in notification.items() if v is not None}


def matrix_device(device: MatrixDevice) -> dict[str, Any]:
    entry: dict[str, Any] = {"app_id": device.app_id, "pushkey": device.pushkey, "data": device.data}
    if device.pushkey_ts is not None:
        entry["pushkey_ts"] = device.pushkey_ts
    return entry


def _result(device: MatrixDevice | WebPushDevice, delivery: Delivery) -> dict[str, Any]:
    return {"status": delivery.status, **device.describe(),
            **({"detail": delivery.detail} if delivery.detail else {})}


@handler("notification:push")
def push(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Send one push notification to one device."""
    fields = parse_payload(PushNotification, payload)
    pusher = Pusher(PushConfig.from_context(ctx))
    try:
        pusher.check(fields.device, fields)
        delivery = pusher.send(fields.device, fields)
    finally:
        pusher.close()
    ctx.log.info("push " + delivery.status, **fields.device.describe())
    result = _result(fields.device, delivery)
    return {**result, "rejected": [fields.device.describe()] if delivery.status == "rejected" else []}


@handler("notification:batch")
def push_batch(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Send one push notification to many devices, rate-limited, each device once."""
    fields = parse_payload(BatchNotification, payload)
    config = PushConfig.from_context(ctx)
    pusher = Pusher(config)
    try:
        for device in fields.devices:
            pusher.check(device, fields)
        limiter = RateLimiter(fields.rate_per_second or config.rate_per_second,
                              fields.rate_per_minute or config.rate_per_minute)
        done = ctx.checkpoints()
        ctx.log.info("pushing batch", total=len(fields.devices),
                     remaining=sum(f"device:{i}" not in done for i in range(len(fields.devices))))
        for index, device in enumerate(fields.devices):
            key = f"device:{index}"
            if key in done:
                continue
            limiter.wait(ctx.cancelled)
            try:
                record = _result(device, pusher.send(device, fields))
            except PermanentError as exc:
                record = {"status": "failed", **device.describe(), "reason": str(exc)}
            # 429 / 5xx / connection errors propagate: the job is retried from this device on.
            ctx.checkpoint_done(key, record)
    finally:
        pusher.close()
    done = ctx.checkpoints()
    outcome: dict[str, list[dict[str, Any]]] = {"sent": [], "rejected": [], "failed": []}
    for index in range(len(fields.devices)):
        record = dict(done[f"device:{index}"])
        outcome[record.pop("status")].append({"index": index, **record})
    return {**outcome, "total": len(fields.devices)}


@handler("notification:digest")
def push_digest(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Summarise a recipient's pending digest items in one push notification."""
    fields = parse_payload(DigestNotification, payload)
    title_t = compile_template(fields.title, "title", html=False)
    body_t = compile_template(fields.body, "body", html=False)
    pusher = Pusher(PushConfig.from_context(ctx))
    try:
        pusher.check(fields.device)
        batch = claim_digest(ctx, fields.recipient, fields.channel, fields.items, fields.max_items)
        if batch.already_sent is not None:
            return batch.already_sent
        if not batch.items:
            return {"sent": False, "items": 0, "recipient": fields.recipient, "channel": fields.channel}
        variables = {"items": batch.items, "count": len(batch.items), "recipient": fields.recipient}
        notification = NotificationFields(
            title=render(title_t, variables, "title"), body=render(body_t, variables, "body"),
            data={**fields.data, "count": len(batch.items)}, ttl=fields.ttl,
        )
        pusher.check(fields.device, notification)
        delivery = pusher.send(fields.device, notification)
    finally:
        pusher.close()
    result = {"sent": delivery.status == "sent", "items": len(batch.items), "recipient": fields.recipient,
              "channel": fields.channel, **_result(fields.device, delivery)}
    if delivery.status == "rejected":
        # The device is gone: the items stay pending for the recipient's other devices.
        return {**result, "rejected": [fields.device.describe()]}
    return finish_digest(ctx, batch, result)
