"""Email jobs through the daemon's real worker: retries, checkpoints and permanent failures."""

from __future__ import annotations

from tests.handlers.conftest import wait_finished


def test_batch_survives_a_dropped_connection_without_duplicates(queue, conn, smtp, handler_worker):
    smtp.drop_before_message = 3
    recipients = [{"to": f"user{i}@example.org", "variables": {"n": i}} for i in range(6)]
    job = queue.add("email:batch", {"recipients": recipients, "subject": "Number {{ n }}",
                                    "text": "You are number {{ n }}.", "ratePerSecond": 500},
                    max_attempts=3)
    handler_worker(handlers=smtp.handlers_config(), types="email")

    row = wait_finished(conn, job.id)
    assert row["status"] == "completed", row["error"]
    assert row["attempts"] == 2 and smtp.dropped == 1
    delivered = sorted(mail.rcpt_tos[0] for mail in smtp.received)
    assert delivered == sorted(f"user{i}@example.org" for i in range(6))
    assert len(row["result"]["sent"]) == 6
    subjects = sorted(mail.message["Subject"] for mail in smtp.received)
    assert subjects == [f"Number {i}" for i in range(6)]


def test_send_bad_payload_fails_at_once_naming_the_field(queue, conn, smtp, handler_worker):
    job = queue.add("email:send", {"to": "someone@", "subject": "x", "text": "y"}, max_attempts=5)
    handler_worker(handlers=smtp.handlers_config(), types="email")
    row = wait_finished(conn, job.id)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "field 'to[0].address'" in row["error"]
    assert smtp.received == []


def test_send_through_the_worker_logs_to_job_logs(queue, conn, smtp, handler_worker):
    job = queue.add("email:send", {"to": "ann@example.org", "subject": "Hi", "html": "<p>Hi Ann</p>"})
    handler_worker(handlers=smtp.handlers_config(), types="email")
    row = wait_finished(conn, job.id)
    assert row["status"] == "completed" and row["result"]["sent"] == ["ann@example.org"]
    assert smtp.received[0].message.get_body(("plain",)).get_content().strip() == "Hi Ann"
