"""email:send and its SMTP transport against a real aiosmtpd server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from haosq.errors import ConfigError, PermanentError
from haosq.handlers.mailer import SmtpConfig, TemporarySmtpError


def test_send_delivers_html_and_derived_text(run_handler, smtp, conn):
    result = run_handler.run("email:send", {
        "to": ["ann@example.org", {"address": "bob@example.org", "name": "Bob B."}],
        "cc": "carol@example.org",
        "bcc": ["dave@example.org"],
        "subject": "Welcome!",
        "html": "<p>Hello <b>there</b>, see <a href='https://haosq.test/start'>the guide</a>.</p>",
        "replyTo": "support@example.org",
        "headers": {"X-Campaign": "welcome"},
    }, handlers=smtp.handlers_config())

    assert len(smtp.received) == 1
    mail = smtp.received[0]
    assert mail.mail_from == "noreply@haosq.test"
    assert sorted(mail.rcpt_tos) == ["ann@example.org", "bob@example.org", "carol@example.org",
                                     "dave@example.org"]
    message = mail.message
    assert message["Subject"] == "Welcome!"
    assert message["Bcc"] is None  # blind copies stay blind
    assert "Bob B." in message["To"] and message["Cc"] == "carol@example.org"
    assert message["Reply-To"] == "support@example.org"
    assert message["X-Campaign"] == "welcome"
    text = message.get_body(("plain",)).get_content()
    assert "Hello there, see the guide (https://haosq.test/start)." in text
    assert "<b>there</b>" in message.get_body(("html",)).get_content()
    assert sorted(result["sent"]) == sorted(mail.rcpt_tos)
    assert result["failed"] == []
    assert result["message_id"] == message["Message-ID"]
    logs = conn.execute("SELECT message FROM haosq.job_logs").fetchall()
    assert any(row["message"] == "sending email" for row in logs)


def test_starttls_and_auth_with_a_private_ca(run_handler, smtp_server):
    peer = smtp_server(tls=True, auth=True)
    result = run_handler.run("email:send", {
        "to": "ann@example.org", "subject": "Secure", "text": "over TLS", "from": "ops@haosq.test",
    }, handlers=peer.handlers_config())
    assert result["sent"] == ["ann@example.org"]
    assert peer.logins == [("mailer", "s3cret/pass")]
    assert peer.received[0].message.get_content().strip() == "over TLS"


def test_untrusted_certificate_is_not_accepted(run_handler, smtp_server):
    peer = smtp_server(tls=True)
    config = peer.handlers_config()
    del config["smtp"]["ca_bundle"]
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError: retried, never sent in clear
        run_handler.run("email:send", {"to": "a@example.org", "subject": "s", "text": "t"}, handlers=config)
    assert peer.received == []


def test_permanently_refused_recipient_is_recorded(run_handler, smtp):
    smtp.reject.add("gone@example.org")
    result = run_handler.run("email:send", {
        "to": ["ann@example.org", "gone@example.org"], "subject": "Hi", "text": "hello",
    }, handlers=smtp.handlers_config())
    assert result["sent"] == ["ann@example.org"]
    assert result["failed"] == [{"address": "gone@example.org", "code": 550,
                                 "reason": "5.1.1 No such user here"}]
    assert smtp.received[0].rcpt_tos == ["ann@example.org"]


def test_every_recipient_refused_fails_permanently(run_handler, smtp):
    smtp.reject.add("gone@example.org")
    with pytest.raises(PermanentError, match=r"gone@example\.org \(550"):
        run_handler.run("email:send", {"to": "gone@example.org", "subject": "Hi", "text": "x"},
                        handlers=smtp.handlers_config())


def test_deferred_recipient_is_retried_without_resending_to_the_others(run_handler, smtp):
    smtp.defer.add("busy@example.org")
    payload = {"to": ["ann@example.org", "busy@example.org"], "subject": "Hi", "text": "x"}
    job_id = run_handler.enqueue("email:send", payload)
    with pytest.raises(TemporarySmtpError, match=r"busy@example\.org"):
        run_handler.run("email:send", payload, job_id=job_id, handlers=smtp.handlers_config())
    smtp.defer.clear()
    result = run_handler.run("email:send", payload, job_id=job_id, attempt=2,
                             handlers=smtp.handlers_config())
    assert [m.rcpt_tos for m in smtp.received] == [["ann@example.org"], ["busy@example.org"]]
    assert result["sent"] == ["ann@example.org", "busy@example.org"]


def test_connection_refused_is_retryable(run_handler):
    from tests.handlers.conftest import free_port

    handlers = {"smtp": {"url": f"smtp://127.0.0.1:{free_port()}", "from": "a@haosq.test"}}
    with pytest.raises(OSError):
        run_handler.run("email:send", {"to": "a@example.org", "subject": "s", "text": "t"}, handlers=handlers)


@pytest.mark.parametrize(("payload", "field"), [
    ({"subject": "s", "text": "t"}, "to"),
    ({"to": "not-an-address", "subject": "s", "text": "t"}, "to[0].address"),
    ({"to": "a@b.org\r\nBcc: evil@x.org", "subject": "s", "text": "t"}, "to[0].address"),
    ({"to": "a@b.org", "subject": "hi\r\nBcc: evil@x.org", "text": "t"}, "subject"),
    ({"to": "a@b.org", "subject": "s"}, "html"),
    ({"to": "a@b.org", "subject": "s", "text": "t", "headers": {"Bcc": "evil@x.org"}}, "headers"),
    ({"to": "a@b.org", "subject": "s", "text": "t", "headers": {"X-A": "1\nBcc: e@x.org"}}, "headers.X-A"),
    ({"to": "a@b.org", "subject": "s", "text": "t", "priority": 1}, "priority"),
    ({"to": "a@b.org", "subject": "s", "text": "t", "from": "Eve <eve@x.org>"}, "from.address"),
])
def test_bad_payload_fails_before_sending(run_handler, smtp, payload, field):
    with pytest.raises(PermanentError) as raised:
        run_handler.run("email:send", payload, handlers=smtp.handlers_config())
    assert f"field {field!r}" in str(raised.value)
    assert smtp.received == []


def test_attachments_only_from_the_allowed_root(run_handler, smtp, tmp_path: Path):
    root = tmp_path / "attachments"
    root.mkdir()
    (root / "report.csv").write_text("a,b\n1,2\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not send")
    (root / "escape.txt").symlink_to(secret)
    (root / "sub").symlink_to(tmp_path, target_is_directory=True)
    os.link(secret, root / "hard.txt")
    handlers = smtp.handlers_config(attachment_root=str(root))

    result = run_handler.run("email:send", {
        "to": "a@example.org", "subject": "Report", "text": "attached",
        "attachments": ["report.csv", {"path": "report.csv", "filename": "copy.csv",
                                       "contentType": "text/plain"}],
    }, handlers=handlers)
    assert result["sent"] == ["a@example.org"]
    parts = list(smtp.received[0].message.iter_attachments())
    assert [p.get_filename() for p in parts] == ["report.csv", "copy.csv"]
    assert parts[0].get_content() == "a,b\n1,2\n"

    for bad, reason in (("escape.txt", "is a symlink"), ("sub/secret.txt", "goes through 'sub', a symlink"),
                        ("hard.txt", "is a hard link"), ("../secret.txt", "contains '..'"),
                        (str(secret), "is not inside a configured attachment root")):
        with pytest.raises(PermanentError, match=f"field 'attachments\\[0\\]': '.*' {reason}"):
            run_handler.run("email:send", {"to": "a@example.org", "subject": "s", "text": "t",
                                           "attachments": [bad]}, handlers=handlers)
    assert len(smtp.received) == 1


def test_smtp_url_forms():
    config = SmtpConfig.from_table({"url": "smtp://user%40x:p%3Ass@mail.example.org:587?starttls=1",
                                    "from": "a@example.org"})
    assert (config.host, config.port, config.starttls, config.implicit_tls) == ("mail.example.org", 587,
                                                                                 True, False)
    assert (config.username, config.password) == ("user@x", "p:ss")
    assert "p:ss" not in config.url and "p%3Ass" not in config.url
    assert SmtpConfig.from_table({"url": "smtps://mail.example.org"}).port == 465
    for bad, message in [({}, "HAOSQ_SMTP_URL"), ({"url": "http://x"}, "scheme"),
                         ({"url": "smtp://h?bogus=1"}, "bogus"),
                         ({"url": "smtps://h?starttls=1"}, "starttls"),
                         ({"url": "smtp://h", "from": "not an address"}, "from")]:
        with pytest.raises(ConfigError, match=message):
            SmtpConfig.from_table(bad)


def test_smtp_url_from_the_environment(run_handler, smtp, monkeypatch):
    monkeypatch.setenv("HAOSQ_SMTP_URL", smtp.url)
    monkeypatch.setenv("HAOSQ_SMTP_FROM", "env@haosq.test")
    result = run_handler.run("email:send", {"to": "a@example.org", "subject": "s", "text": "t"},
                             handlers={"smtp": {"url": "smtp://127.0.0.1:1"}})
    assert result["sent"] == ["a@example.org"]
    assert smtp.received[0].mail_from == "env@haosq.test"


def test_wrong_password_and_missing_starttls_fail_permanently(run_handler, smtp_server, smtp):
    secured = smtp_server(tls=True, auth=True)
    config = secured.handlers_config()
    config["smtp"]["url"] = secured.url.replace("s3cret%2Fpass", "wrong")
    payload = {"to": "a@example.org", "subject": "s", "text": "t"}
    with pytest.raises(PermanentError, match="login refused: 535"):
        run_handler.run("email:send", payload, handlers=config)
    plain = smtp.handlers_config()
    plain["smtp"]["url"] = smtp.url + "?starttls=1"
    with pytest.raises(PermanentError, match="does not offer STARTTLS"):
        run_handler.run("email:send", payload, handlers=plain)
    assert secured.received == [] and smtp.received == []
