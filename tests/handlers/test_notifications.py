"""notification:* against local push peers: a Matrix push gateway and a Web Push endpoint
that decrypts what it receives and checks the VAPID signature."""

from __future__ import annotations

import base64
import json
import os
import time

import http_ece
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from haosq.errors import PermanentError, Retry
from haosq.handlers.netguard import UnsafeDestination
from haosq.handlers.push import TemporaryPushError

NOTIFY = "/_matrix/push/v1/notify"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BrowserSubscription:
    """What a browser holds for one push subscription: its keys, to decrypt messages."""

    def __init__(self, endpoint: str) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.json = {"endpoint": endpoint, "expirationTime": None,
                     "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)}}

    def decrypt(self, body: bytes) -> dict:
        return json.loads(http_ece.decrypt(body, private_key=self.private_key, auth_secret=self.auth,
                                           version="aes128gcm"))


class VapidKeys:
    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.public_raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()

    def verify(self, authorization: str, audience: str) -> dict:
        """Check an RFC 8292 `vapid t=..., k=...` header the way a push service does."""
        scheme, _, params = authorization.partition(" ")
        assert scheme == "vapid"
        parts = dict(p.strip().split("=", 1) for p in params.split(","))
        assert unb64url(parts["k"]) == self.public_raw
        header, claims, signature = parts["t"].split(".")
        raw = unb64url(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        self.private_key.public_key().verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        decoded = json.loads(unb64url(claims))
        assert decoded["aud"] == audience
        assert decoded["exp"] > time.time()
        return decoded


@pytest.fixture
def vapid() -> VapidKeys:
    return VapidKeys()


def push_config(peer, tls_ca, vapid=None, **extra):
    table = {"allow_private": ["127.0.0.1"], "ca_bundle": str(tls_ca.bundle), **extra}
    if vapid is not None:
        table.update(vapid_private_key=vapid.pem, vapid_subject="mailto:ops@haosq.test")
    return {"push": table}


def test_web_push_end_to_end_decrypts_and_verifies_vapid(run_handler, http_peer, tls_ca, vapid):
    peer = http_peer()
    browser = BrowserSubscription(f"{peer.url}/push/abc123")
    peer.respond = lambda request: (201, {}, b"")
    result = run_handler.run("notification:push", {
        "device": {"provider": "webpush", "subscription": browser.json},
        "title": "New message", "body": "Ann: lunch?", "data": {"room": "r1"}, "ttl": 60,
        "urgency": "high",
    }, handlers=push_config(peer, tls_ca, vapid))

    assert result["status"] == "sent" and result["rejected"] == []
    [request] = peer.requests
    assert request.path == "/push/abc123"
    assert request.headers["content-encoding"] == "aes128gcm"
    assert request.headers["ttl"] == "60" and request.headers["urgency"] == "high"
    claims = vapid.verify(request.headers["authorization"], audience=peer.url)
    assert claims["sub"] == "mailto:ops@haosq.test"
    assert browser.decrypt(request.body) == {"title": "New message", "body": "Ann: lunch?",
                                             "data": {"room": "r1"}}


def test_web_push_gone_subscription_is_reported_rejected(run_handler, http_peer, tls_ca, vapid):
    peer = http_peer()
    peer.respond = lambda request: (410, {}, b"")
    browser = BrowserSubscription(f"{peer.url}/push/gone")
    result = run_handler.run("notification:push", {
        "device": {"provider": "webpush", "subscription": browser.json}, "title": "x",
    }, handlers=push_config(peer, tls_ca, vapid))
    assert result["status"] == "rejected"
    assert result["rejected"] == [{"provider": "webpush", "endpoint": f"{peer.url}/push/gone"}]


def matrix_gateway(peer, rejected=()):
    def respond(request):
        body = json.loads(request.body)
        keys = [d["pushkey"] for d in body["notification"]["devices"]]
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"rejected": [k for k in keys if k in rejected]}).encode()
    peer.respond = respond
    return peer


def matrix_device(peer, pushkey="key-1", **extra):
    return {"provider": "matrix", "url": peer.url + NOTIFY, "appId": "org.haosq.app",
            "pushkey": pushkey, **extra}


def test_matrix_gateway_notify(run_handler, http_peer, tls_ca):
    peer = matrix_gateway(http_peer())
    result = run_handler.run("notification:push", {
        "device": matrix_device(peer, pushkeyTs=1700000000, data={"format": "event_id_only"}),
        "eventId": "$ev1", "roomId": "!room:haosq.test", "sender": "@ann:haosq.test",
        "counts": {"unread": 3}, "body": "hello", "prio": "low",
    }, handlers=push_config(peer, tls_ca))
    assert result == {"status": "sent", "provider": "matrix", "app_id": "org.haosq.app",
                      "pushkey": "key-1", "rejected": []}
    [request] = peer.requests
    assert request.path == NOTIFY
    notification = json.loads(request.body)["notification"]
    assert notification["event_id"] == "$ev1" and notification["room_id"] == "!room:haosq.test"
    assert notification["counts"] == {"unread": 3} and notification["prio"] == "low"
    assert notification["devices"] == [{"app_id": "org.haosq.app", "pushkey": "key-1",
                                        "pushkey_ts": 1700000000, "data": {"format": "event_id_only"}}]


def test_matrix_rejected_pushkey_is_reported(run_handler, http_peer, tls_ca):
    peer = matrix_gateway(http_peer(), rejected={"stale"})
    result = run_handler.run("notification:push", {"device": matrix_device(peer, "stale"), "body": "x"},
                             handlers=push_config(peer, tls_ca))
    assert result["status"] == "rejected"
    assert result["rejected"] == [{"provider": "matrix", "app_id": "org.haosq.app", "pushkey": "stale"}]


def test_gateway_429_with_retry_after_and_5xx_retry(run_handler, http_peer, tls_ca):
    peer = matrix_gateway(http_peer())
    peer.replies = [(429, {"Retry-After": "17"}, b""), (503, {}, b"")]
    payload = {"device": matrix_device(peer), "body": "x"}
    with pytest.raises(Retry) as raised:
        run_handler.run("notification:push", payload, handlers=push_config(peer, tls_ca))
    assert raised.value.after == 17
    with pytest.raises(TemporaryPushError, match="503"):
        run_handler.run("notification:push", payload, handlers=push_config(peer, tls_ca))
    result = run_handler.run("notification:push", payload, handlers=push_config(peer, tls_ca))
    assert result["status"] == "sent"


def test_redirects_are_not_followed(run_handler, http_peer, tls_ca):
    peer = http_peer()
    peer.respond = lambda request: (307, {"Location": "http://169.254.169.254/latest"}, b"")
    with pytest.raises(PermanentError, match="not followed"):
        run_handler.run("notification:push", {"device": matrix_device(peer), "body": "x"},
                        handlers=push_config(peer, tls_ca))
    assert len(peer.requests) == 1


def test_private_and_plain_http_destinations_are_refused(run_handler, http_peer, tls_ca):
    peer = matrix_gateway(http_peer())
    plain = matrix_gateway(http_peer(tls=False))
    cases = [
        (matrix_device(peer), {"ca_bundle": str(tls_ca.bundle)}, "127.0.0.1"),  # loopback, not allowed
        ({**matrix_device(peer), "url": peer.url.replace("127.0.0.1", "localhost") + NOTIFY},
         {"ca_bundle": str(tls_ca.bundle)}, "resolves to"),                      # refused after DNS
        ({**matrix_device(peer), "url": "https://169.254.169.254" + NOTIFY}, {}, "169.254.169.254"),
        ({**matrix_device(peer), "url": "https://[::ffff:10.0.0.1]" + NOTIFY}, {}, "10.0.0.1"),
        (matrix_device(plain), {"allow_private": ["127.0.0.1"]}, "only https"),
    ]
    for device, config, message in cases:
        with pytest.raises(UnsafeDestination, match=message):
            run_handler.run("notification:push", {"device": device, "body": "x"}, handlers={"push": config})
    assert peer.requests == [] and plain.requests == []


@pytest.mark.parametrize(("payload", "field"), [
    ({"device": {"provider": "carrier-pigeon"}}, "device"),
    ({"device": {"provider": "matrix", "url": "https://x.org" + NOTIFY, "pushkey": "k"}},
     "device.appId"),
    ({"device": {"provider": "webpush", "subscription": {"endpoint": "https://x.org/p"}}},
     "device.subscription.keys"),
    ({"device": {"provider": "matrix", "url": "https://x.org/elsewhere", "appId": "a", "pushkey": "k"}},
     "device.url"),
    ({"device": {"provider": "matrix", "url": "https://x.org" + NOTIFY, "appId": "a", "pushkey": "k"},
      "urgency": "asap"}, "urgency"),
])
def test_bad_push_payload_fails_at_once(run_handler, payload, field):
    with pytest.raises(PermanentError) as raised:
        run_handler.run("notification:push", payload, handlers={"push": {}})
    assert f"field {field!r}" in str(raised.value)


def test_batch_is_checkpointed_across_a_gateway_outage(run_handler, http_peer, tls_ca, vapid):
    gateway = matrix_gateway(http_peer(), rejected={"key-2"})
    webpush = http_peer()
    webpush.respond = lambda request: (201, {}, b"")
    browser = BrowserSubscription(f"{webpush.url}/push/w1")
    devices = [matrix_device(gateway, f"key-{i}") for i in range(4)]
    devices.insert(2, {"provider": "webpush", "subscription": browser.json})
    payload = {"devices": devices, "title": "Hi", "body": "all", "ratePerSecond": 1000}
    job_id = run_handler.enqueue("notification:batch", payload)
    config = push_config(gateway, tls_ca, vapid)

    # The gateway answers the first device, then fails with 503 on the second.
    gateway.replies = [(200, {}, b'{"rejected": []}'), (503, {"Retry-After": "5"}, b"")]
    with pytest.raises(Retry):
        run_handler.run("notification:batch", payload, job_id=job_id, handlers=config)
    result = run_handler.run("notification:batch", payload, job_id=job_id, attempt=2, handlers=config)

    sent_keys = [json.loads(r.body)["notification"]["devices"][0]["pushkey"] for r in gateway.requests]
    assert sent_keys == ["key-0", "key-1", "key-1", "key-2", "key-3"]  # key-1 failed once, then once more
    assert len(webpush.requests) == 1
    assert browser.decrypt(webpush.requests[0].body)["body"] == "all"
    assert [s["index"] for s in result["sent"]] == [0, 1, 2, 4]
    assert result["rejected"] == [{"index": 3, "provider": "matrix", "app_id": "org.haosq.app",
                                   "pushkey": "key-2", "detail": "the gateway rejected the push key"}]
    assert result["failed"] == [] and result["total"] == 5


def test_push_digest_summarises_pending_items(run_handler, http_peer, tls_ca, queue, conn):
    peer = matrix_gateway(http_peer())
    for title in ("Ann replied", "Bob liked", "Carol joined"):
        queue.add_digest_item("user-7", "push", {"title": title})
    payload = {"device": matrix_device(peer), "recipient": "user-7"}
    result = run_handler.run("notification:digest", payload, handlers=push_config(peer, tls_ca))
    assert result["sent"] is True and result["items"] == 3
    content = json.loads(peer.requests[0].body)["notification"]["content"]
    assert content["title"] == "3 new notifications"
    assert content["body"] == "Ann replied and 2 more"
    unsent = conn.execute("SELECT count(*) AS n FROM haosq.digest_items WHERE sent_at IS NULL").fetchone()
    assert unsent["n"] == 0
    again = run_handler.run("notification:digest", payload, handlers=push_config(peer, tls_ca))
    assert again["sent"] is False and len(peer.requests) == 1


def test_oversized_web_push_message_is_refused_before_sending(run_handler, http_peer, tls_ca, vapid):
    peer = http_peer()
    browser = BrowserSubscription(f"{peer.url}/push/big")
    with pytest.raises(PermanentError, match="'title', 'body' and 'data'"):
        run_handler.run("notification:push", {
            "device": {"provider": "webpush", "subscription": browser.json},
            "body": "x" * 3000, "data": {"blob": "y" * 1500},
        }, handlers=push_config(peer, tls_ca, vapid))
    assert peer.requests == []
