"""Masking of secret-looking payload keys and URL passwords (CLI output, logs, errors)."""

from __future__ import annotations

import io
import json
import logging
import signal
import sys

import pytest

from haosq.secrets import MASK, MaskingFilter, is_secret_key, mask_job_fields, mask_text, mask_value
from tests.integration.cli_support import environment, invoke
from tests.integration.worker_support import WorkerProcess, wait_status


@pytest.mark.parametrize("key", ["password", "smtp_password", "apiKey", "api-key", "Authorization",
                                 "X-Auth-Token", "client_secret", "private_key", "passwd", "cookie"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["to", "subject", "keyboard_layout", "monkey", "path", "user"])
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_mask_value_walks_nested_payloads():
    payload = {"to": "a@example.com", "smtp": {"password": "hunter2", "host": "mail"},
               "headers": [{"Authorization": "Bearer abc"}], "credentials": {"user": "x"},
               "callback": "https://bob:pw@example.com/hook", "token": None}
    masked = mask_value(payload)
    assert masked["smtp"] == {"password": MASK, "host": "mail"}
    assert masked["headers"] == [{"Authorization": MASK}]
    assert masked["credentials"] == MASK
    assert masked["callback"] == "https://bob:***@example.com/hook"
    assert masked["token"] is None
    assert payload["smtp"]["password"] == "hunter2"  # the original is untouched


def test_mask_text_in_errors():
    text = ("OperationalError: connection to postgresql://haosq:s3cr3t@db:5432/haosq failed; "
            "retried with token=abc123 and Authorization: Bearer xyz; api_key=\"k-1\"; user=bob")
    masked = mask_text(text)
    for secret in ("s3cr3t", "abc123", "xyz", "k-1"):
        assert secret not in masked
    assert "user=bob" in masked and "postgresql://haosq:***@db:5432/haosq" in masked
    assert mask_job_fields({"error": text, "payload": {"password": "p"}, "result": None}) == {
        "error": masked, "payload": {"password": MASK}, "result": None}


def test_logging_filter_masks_messages_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingFilter())
    logger = logging.getLogger("haosq.test.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("cannot reach %s", "postgresql://u:topsecret@h/db")
        try:
            raise RuntimeError("password=hunter2 rejected")
        except RuntimeError:
            logger.exception("job failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "topsecret" not in output and "hunter2" not in output
    assert "postgresql://u:***@h/db" in output and "RuntimeError" in output


def test_cli_show_and_list_mask_payloads(queue, cli_env):
    job = queue.add("demo:echo", {"to": "a@example.com", "smtp_password": "hunter2",
                                  "webhook": "https://u:pw42@example.com/x"})
    with environment(cli_env):
        shown = invoke(["jobs", "show", str(job.id), "--json"])
        listed = invoke(["jobs", "list", "--json"])
    assert shown.exit_code == 0, shown.stderr
    payload = json.loads(shown.stdout)["payload"]
    assert payload == {"to": "a@example.com", "smtp_password": MASK,
                       "webhook": "https://u:***@example.com/x"}
    assert listed.exit_code == 0, listed.stderr
    assert "hunter2" not in listed.stdout and "pw42" not in listed.stdout
    assert json.loads(listed.stdout)[0]["payload"]["smtp_password"] == MASK


def test_errors_are_stored_whole_and_masked_on_display(queue, conn, cli_env, tmp_path):
    """A real worker stores the error as the handler raised it; the CLI masks it on the way out,
    and masks only the secret: `KeyError: 'rows'` survives both."""
    text = "KeyError: 'rows' while calling https://svc:pw77@api.example.com with token=tok-5"
    job = queue.add("demo:fail", {"message": text, "permanent": True})
    worker = WorkerProcess({**cli_env, "HAOSQ_POLL_INTERVAL": "50"}, tmp_path / "worker.log",
                           "--types", "demo")
    try:
        stored = wait_status(conn, job.id, "failed")["error"]
    finally:
        worker.signal(signal.SIGTERM)
        worker.wait()
    assert stored.startswith(f"PermanentError: {text}")  # nothing lost in the database
    with environment(cli_env):
        shown = invoke(["jobs", "show", str(job.id), "--json"])
    assert shown.exit_code == 0, shown.stderr
    error = json.loads(shown.stdout)["error"]
    assert error.startswith("PermanentError: KeyError: 'rows' while calling "
                            "https://svc:***@api.example.com with token=***")
    assert "pw77" not in shown.stdout and "tok-5" not in shown.stdout


def test_cli_job_logs_are_masked(queue, conn, cli_env):
    job = queue.add("demo:echo", {})
    conn.execute(
        "INSERT INTO haosq.job_logs (job_id, level, message, metadata) VALUES (%s, 'info', %s, %s)",
        (job.id, "connecting to https://svc:pw77@api.example.com",
         json.dumps({"api_token": "tok-9", "rows": 3})))
    with environment(cli_env):
        shown = invoke(["jobs", "logs", str(job.id), "--json"])
    assert shown.exit_code == 0, shown.stderr
    line = json.loads(shown.stdout)[0]
    assert line["message"] == "connecting to https://svc:***@api.example.com"
    assert line["metadata"] == {"api_token": MASK, "rows": 3}


def test_daemon_log_lines_are_masked_and_show_control_characters(monkeypatch):
    from haosq.cli.worker import setup_logging

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger("haosq")
    saved = root.handlers[:], root.level, root.propagate
    try:
        setup_logging("info")
        logging.getLogger("haosq.daemon.test").warning(
            "job %s failed: %s", 7, "KeyError: 'rows' token=tok-3 \x1b[31mred\x9b2J")
    finally:
        root.handlers[:], root.level, root.propagate = saved
    line = stream.getvalue()
    assert "job 7 failed: KeyError: 'rows' token=*** \\x1b[31mred\\x9b2J" in line
    assert "\x1b" not in line and "\x9b" not in line
