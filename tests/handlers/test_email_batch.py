"""email:batch and email:digest against a real aiosmtpd server, with retries after failures."""

from __future__ import annotations

import json
import re
import threading
import tomllib
from pathlib import Path

import psycopg
import pytest

from haosq.errors import InvalidJob, PermanentError, Retry
from haosq.handlers.mailer import TemporarySmtpError
from haosq.handlers.payloads import parse_payload
from haosq.handlers.ratelimit import RateLimiter
from haosq.schedules import load_config_schedules


def _batch(n: int, **extra):
    return {
        "recipients": [{"to": f"user{i}@example.org", "variables": {"name": f"<User {i}>"}}
                       for i in range(n)],
        "subject": "Hello {{ name }}",
        "html": "<p>Dear {{ name }}, your code is {{ code }}.</p>",
        "variables": {"code": "X1"},
        "ratePerSecond": 1000,
        **extra,
    }


def test_batch_renders_per_recipient_with_autoescaped_html(run_handler, smtp):
    result = run_handler.run("email:batch", _batch(3), handlers=smtp.handlers_config())
    assert [m.rcpt_tos for m in smtp.received] == [[f"user{i}@example.org"] for i in range(3)]
    message = smtp.received[1].message
    assert message["Subject"] == "Hello <User 1>"
    assert "Dear &lt;User 1&gt;, your code is X1." in message.get_body(("html",)).get_content()
    assert "Dear <User 1>, your code is X1." in message.get_body(("plain",)).get_content()
    assert [s["to"] for s in result["sent"]] == [[f"user{i}@example.org"] for i in range(3)]
    assert result["failed"] == [] and result["total"] == 3


def test_batch_dropped_connection_never_sends_twice(run_handler, smtp):
    smtp.drop_before_message = 2  # the server dies while receiving the third message
    payload = _batch(5)
    job_id = run_handler.enqueue("email:batch", payload)
    with pytest.raises(OSError):  # SMTPServerDisconnected: retried with backoff
        run_handler.run("email:batch", payload, job_id=job_id, handlers=smtp.handlers_config())
    assert len(smtp.received) == 2 and smtp.dropped == 1

    result = run_handler.run("email:batch", payload, job_id=job_id, attempt=2,
                             handlers=smtp.handlers_config())
    delivered = [m.rcpt_tos[0] for m in smtp.received]
    assert sorted(delivered) == sorted(f"user{i}@example.org" for i in range(5))
    assert len(delivered) == len(set(delivered)) == 5
    assert len(result["sent"]) == 5


def test_batch_records_refused_recipients_and_retries_deferred_ones(run_handler, smtp):
    smtp.reject.add("user1@example.org")
    smtp.defer.add("user2@example.org")
    payload = _batch(4)
    job_id = run_handler.enqueue("email:batch", payload)
    with pytest.raises(TemporarySmtpError, match="1 message"):
        run_handler.run("email:batch", payload, job_id=job_id, handlers=smtp.handlers_config())
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == ["user0@example.org", "user3@example.org"]

    smtp.defer.clear()
    result = run_handler.run("email:batch", payload, job_id=job_id, attempt=2,
                             handlers=smtp.handlers_config())
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == [
        "user0@example.org", "user2@example.org", "user3@example.org"]
    assert [s["index"] for s in result["sent"]] == [0, 2, 3]
    assert result["failed"] == [{"index": 1, "to": ["user1@example.org"],
                                 "reason": "user1@example.org: 550 5.1.1 No such user here"}]


@pytest.mark.parametrize(("change", "field"), [
    ({"html": "<p>{{ name </p>"}, "html"),
    ({"subject": "Hi {{ missing }}"}, "recipients[0]: subject"),
    ({"recipients": ["ok@example.org", "bad"]}, "recipients[1].to[0].address"),
    ({"recipients": []}, "recipients"),
    ({"ratePerSecond": 0}, "ratePerSecond"),
])
def test_batch_bad_payload_sends_nothing(run_handler, smtp, change, field):
    with pytest.raises(PermanentError) as raised:
        run_handler.run("email:batch", {**_batch(2), **change}, handlers=smtp.handlers_config())
    assert f"field {field!r}" in str(raised.value)
    assert smtp.received == []


def test_rate_limiter_paces_sends():
    now = [100.0]
    limiter = RateLimiter(per_second=4, per_minute=120, monotonic=lambda: now[0])
    assert limiter.interval == 0.5  # 120 per minute is the stricter limit
    never = threading.Event()
    assert limiter.wait(never) == 0.0
    now[0] += 0.1
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(Retry):  # a cancelled job stops pacing at once
        limiter.wait(stopped)
    now[0] += 1.0
    assert limiter.wait(never) == 0.0  # idle time does not bank a burst beyond the next slot


def test_digest_from_the_table_marks_items_sent_only_after_acceptance(run_handler, smtp, queue, conn):
    for title in ("First <post>", "Second post"):
        queue.add_digest_item("ann@example.org", "email", {"title": title, "url": "https://haosq.test/p"})
    queue.add_digest_item("bob@example.org", "email", {"title": "Not for Ann"})
    queue.add_digest_item("ann@example.org", "push", {"title": "Other channel"})

    smtp.defer.add("ann@example.org")
    payload = {"to": "ann@example.org"}
    job_id = run_handler.enqueue("email:digest", payload)
    with pytest.raises(TemporarySmtpError):
        run_handler.run("email:digest", payload, job_id=job_id, handlers=smtp.handlers_config())
    unsent = conn.execute("SELECT count(*) AS n FROM haosq.digest_items WHERE sent_at IS NULL").fetchone()
    assert unsent["n"] == 4

    smtp.defer.clear()
    result = run_handler.run("email:digest", payload, job_id=job_id, attempt=2,
                             handlers=smtp.handlers_config())
    assert result["sent"] is True and result["items"] == 2
    message = smtp.received[0].message
    assert message["Subject"] == "Your digest: 2 new items"
    html = message.get_body(("html",)).get_content()
    assert "First &lt;post&gt;" in html and "Second post" in html and "Not for Ann" not in html
    rows = conn.execute("SELECT item->>'title' AS title, sent_by FROM haosq.digest_items "
                        "WHERE sent_at IS NOT NULL ORDER BY id").fetchall()
    assert rows == [{"title": "First <post>", "sent_by": job_id}, {"title": "Second post", "sent_by": job_id}]

    # A repeated run of the same job (a crash after acceptance) does not send again.
    again = run_handler.run("email:digest", payload, job_id=job_id, attempt=3,
                            handlers=smtp.handlers_config())
    assert again == result and len(smtp.received) == 1
    # A new digest finds nothing pending and sends nothing.
    empty = run_handler.run("email:digest", payload, handlers=smtp.handlers_config())
    assert empty["sent"] is False and empty["items"] == 0 and len(smtp.received) == 1


def test_digest_with_items_in_the_payload_and_own_templates(run_handler, smtp):
    result = run_handler.run("email:digest", {
        "to": "ann@example.org",
        "items": [{"title": "a"}, {"title": "b"}, {"title": "c"}],
        "subject": "{{ count }} updates for {{ recipient }}",
        "text": "{% for item in items %}* {{ item.title }}\n{% endfor %}",
    }, handlers=smtp.handlers_config())
    assert result["items"] == 3
    message = smtp.received[0].message
    assert message["Subject"] == "3 updates for ann@example.org"
    assert message.get_content().replace("\r\n", "\n") == "* a\n* b\n* c\n"


def test_digest_to_every_recipient_with_pending_items(run_handler, smtp, queue, conn):
    for recipient, count in (("ann@example.org", 2), ("bob@example.org", 1), ("gone@example.org", 1),
                             ("not-an-address", 1)):
        for i in range(count):
            queue.add_digest_item(recipient, "email", {"title": f"{recipient} #{i}"})
    queue.add_digest_item("carol@example.org", "weekly", {"title": "other channel"})
    smtp.reject.add("gone@example.org")

    result = run_handler.run("email:digest", {"allRecipients": True, "ratePerSecond": 1000},
                             handlers=smtp.handlers_config())
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == ["ann@example.org", "bob@example.org"]
    assert result["recipients"] == 2 and result["items"] == 3
    assert sorted(f["recipient"] for f in result["failed"]) == ["gone@example.org", "not-an-address"]
    pending = conn.execute("SELECT recipient FROM haosq.digest_items WHERE sent_at IS NULL "
                           "ORDER BY recipient").fetchall()
    assert [row["recipient"] for row in pending] == ["carol@example.org", "gone@example.org",
                                                     "not-an-address"]


def test_digest_needs_exactly_one_audience(run_handler, smtp):
    for payload in ({}, {"to": "a@example.org", "allRecipients": True}):
        with pytest.raises(PermanentError, match="allRecipients"):
            run_handler.run("email:digest", payload, handlers=smtp.handlers_config())


def test_documented_schedule_examples_are_valid_payloads():
    from haosq.handlers import cleanup, email

    models = {"email:digest": email.DigestEmail, "cleanup:job-logs": cleanup.JobLogs}
    text = (Path(__file__).resolve().parents[2] / "docs" / "job-types.md").read_text()
    checked = set()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        document = tomllib.loads(block)
        for spec in load_config_schedules(document):
            if spec.type in models:
                parse_payload(models[spec.type], json.loads(spec.payload_json))
                checked.add(spec.type)
    assert checked == set(models)


def test_add_digest_item_validates_and_joins_the_callers_transaction(queue, database_url, conn):
    for recipient, channel, item in (("", "email", {}), ("a@x.org", " ", {}), ("a@x.org", "email", [1])):
        with pytest.raises(InvalidJob):
            queue.add_digest_item(recipient, channel, item)
    with psycopg.connect(database_url) as own:
        queue.add_digest_item("a@x.org", "email", {"title": "rolled back"}, conn=own)
        own.rollback()
        kept = queue.add_digest_item("a@x.org", "email", {"title": "committed"}, conn=own)
        own.commit()
    rows = conn.execute("SELECT id, item->>'title' AS title FROM haosq.digest_items").fetchall()
    assert rows == [{"id": kept, "title": "committed"}]


def test_batch_where_nothing_is_accepted_fails(run_handler, smtp):
    smtp.reject.update({"user0@example.org", "user1@example.org"})
    with pytest.raises(PermanentError, match=r"no message of the batch was accepted \(2 refused\)"):
        run_handler.run("email:batch", _batch(2), handlers=smtp.handlers_config())
    assert smtp.received == []
