"""The `haosq` command: through typer's CliRunner and as a real subprocess."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from haosq.cli import app
from tests.badinput.snapshot import snapshot
from tests.integration.cli_support import environment, invoke


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "haosq", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def runner(cli_env, monkeypatch):
    for key in list(os.environ):
        if key.startswith(("HAOSQ_", "JOB_QUEUE_")) or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    for key, value in cli_env.items():
        if key.startswith("HAOSQ_"):
            monkeypatch.setenv(key, value)
    return CliRunner()


def test_add_and_list_through_cli_runner(runner, queue, tmp_path):
    payload = tmp_path / "job.json"
    payload.write_text('{"to": "user@example.com", "subject": "Welcome!"}')
    result = runner.invoke(app, ["add", "email:send", "--payload", str(payload), "--priority", "10",
                                 "--tag", "upload", "--tag", "important", "--max-attempts", "5"])
    assert result.exit_code == 0, result.output
    job = queue.list()[0]
    assert result.output.strip() == f"added job {job.id} (email:send)"
    assert (job.payload["subject"], job.priority, job.tags, job.max_attempts) == (
        "Welcome!", 10, ["upload", "important"], 5)
    listed = runner.invoke(app, ["jobs", "list", "--json"])
    assert [row["id"] for row in json.loads(listed.output)] == [job.id]
    shown = json.loads(runner.invoke(app, ["jobs", "show", str(job.id), "--json"]).output)
    assert shown["payload"] == {"to": "user@example.com", "subject": "Welcome!"}


def test_inline_and_stdin_payloads_and_delays(runner, queue):
    assert runner.invoke(app, ["add", "demo:echo", "-p", '{"value": 1}']).exit_code == 0
    assert runner.invoke(app, ["add", "demo:echo", "--payload", "-"], input='{"value": 2}').exit_code == 0
    assert runner.invoke(app, ["add", "demo:echo", "--in", "10m"]).exit_code == 0
    result = runner.invoke(app, ["add", "demo:echo", "--at", "2099-01-01T09:00:00+00:00", "--json"])
    at_job = json.loads(result.output)
    assert at_job["display_status"] == "scheduled"
    assert at_job["scheduled_at"].startswith("2099-01-01T09:00:00")
    values = sorted(j.payload.get("value", 0) for j in queue.list())
    assert values == [0, 0, 1, 2]
    assert len(queue.list(status="scheduled")) == 2


def test_retry_cancel_logs_stats_workers(runner, queue, conn):
    failed = queue.add("email:send", {})
    conn.execute("UPDATE haosq.jobs SET status='failed', error='smtp down' WHERE id=%s", (failed.id,))
    pending = queue.add("email:send", {})
    assert runner.invoke(app, ["jobs", "retry", str(failed.id)]).exit_code == 0
    assert runner.invoke(app, ["jobs", "cancel", str(pending.id)]).exit_code == 0
    assert queue.get(failed.id).status.value == "pending"
    assert queue.get(pending.id).status.value == "cancelled"
    logs = json.loads(runner.invoke(app, ["jobs", "logs", str(failed.id), "--json"]).output)
    assert [line["message"] for line in logs] == ["retried by an operator"]
    stats = json.loads(runner.invoke(app, ["stats", "--json"]).output)
    assert stats["by_status"]["pending"] == 1
    assert stats["by_status"]["cancelled"] == 1
    assert stats["by_type"] == {"email:send": {"pending": 1, "cancelled": 1}}
    table = runner.invoke(app, ["stats"]).output
    assert "email:send" in table and "pending" in table
    cleanup = runner.invoke(app, ["workers", "cleanup", "--timeout", "5m"])
    assert cleanup.output.strip() == "0 worker(s) marked dead; 0 job(s) rescued"
    assert json.loads(runner.invoke(app, ["workers", "list", "--json"]).output) == []


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["add", "email:send", "--payload", "-"], "{bad json",
         "payload from standard input is not valid JSON"),
        (["add", "email:send", "--bogus"], None, "No such option: --bogus"),
        (["add", "Email", "--payload", "{}"], None, "invalid job type 'Email'"),
        (["add", "email:send", "--payload", "[1, 2]"], None, "must be a JSON object"),
        (["add", "email:send", "--in", "soon"], None, "invalid duration"),
        (["jobs", "show", "424242"], None, "job 424242 does not exist"),
        (["jobs", "list", "--status", "done"], None, "unknown status 'done'"),
        (["jobs", "retry", "abc"], None, "Invalid value for 'JOB_ID...'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(cli_env, queue, args, stdin, expected):
    result = run(cli_env, *args, stdin=stdin)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert queue.list() == []


def test_unreachable_database_url_is_one_line_with_password_hidden(cli_env):
    env = dict(cli_env)
    del env["HAOSQ_DATABASE_URL"]
    env["DATABASE_URL"] = "postgresql://app:s3cret@127.0.0.1:1/haos"
    result = run(env, "add", "email:send", "--payload", "{}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "postgresql://app:***@127.0.0.1:1/haos" in result.stderr
    assert "s3cret" not in result.stderr


def test_migrate_command_reports_up_to_date(cli_env):
    result = run(cli_env, "migrate")
    assert (result.returncode, result.stdout.strip()) == (0, "schema is up to date")
    check = run(cli_env, "migrate", "--check")
    assert check.returncode == 0


def test_migrate_applies_to_a_new_database(cli_env, empty_database_url):
    env = dict(cli_env, HAOSQ_DATABASE_URL=empty_database_url)
    assert run(env, "migrate", "--check").returncode == 2
    result = run(env, "migrate")
    assert result.returncode == 0
    assert result.stdout.startswith("applied 0001_initial")


def test_help_and_no_arguments(cli_env):
    result = run(cli_env)
    assert result.returncode == 0
    assert "Usage" in result.stdout and "add" in result.stdout


def test_payload_file_is_read(cli_env, queue, tmp_path: Path):
    (tmp_path / "p.json").write_text(json.dumps({"fileId": "file_123"}))
    result = run(cli_env, "add", "file:process-upload", "--payload", str(tmp_path / "p.json"))
    assert result.returncode == 0, result.stderr
    assert queue.list()[0].payload == {"fileId": "file_123"}


def test_far_future_delay_is_a_user_error(cli_env, queue):
    for delay in ("99999999999d", "999999999d"):
        result = run(cli_env, "add", "demo:echo", "--in", delay)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert queue.list() == []


def test_worker_refusing_its_configuration_does_not_stay_registered(cli_env, conn, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[schedules]]\nname = "broken"\ntype = "demo:echo"\ncron = "not a cron"\n')
    result = run(dict(cli_env, HAOSQ_CONFIG=str(config)), "worker", "--types", "demo")
    assert result.returncode == 2, result.stderr
    assert "invalid cron expression" in result.stderr
    rows = conn.execute("SELECT status FROM haosq.workers").fetchall()
    assert all(row["status"] == "stopped" for row in rows), rows


def test_version(cli_env):
    result = run(cli_env, "--version")
    assert (result.returncode, result.stdout) == (0, f"haosq {importlib.metadata.version('haosq')}\n")


def test_global_options_work_after_the_command(cli_env, queue, tmp_path):
    job = queue.add("demo:echo", {"n": 1})
    config = tmp_path / "other.toml"
    config.write_text("[worker]\nconcurrency = 7\n")
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    with environment({**cli_env, "HAOSQ_DATABASE_URL": unreachable}):
        listed = invoke(["jobs", "list", "--json", "--database-url", cli_env["HAOSQ_DATABASE_URL"]])
        assert listed.exit_code == 0, listed.output
        assert [row["id"] for row in json.loads(listed.stdout)] == [job.id]
        shown = invoke(["config", "show", "--json", f"--config={config}"])
        assert shown.exit_code == 0, shown.output
        document = json.loads(shown.stdout)
        assert document["config_file"] == str(config)
        assert {r["key"]: r["value"] for r in document["settings"]}["worker.concurrency"] == 7
        # Before the command, as always.
        assert invoke(["--database-url", cli_env["HAOSQ_DATABASE_URL"], "jobs", "show",
                       str(job.id)]).exit_code == 0
        # The value of an option stays a value, even when it reads like a global option.
        searched = invoke(["jobs", "list", "--search", "--config", "--json", "--database-url",
                           cli_env["HAOSQ_DATABASE_URL"]])
        assert (searched.exit_code, json.loads(searched.stdout)) == (0, []), searched.output


def test_json_before_the_command(cli_env, queue):
    queue.add("demo:echo", {})
    with environment(cli_env):
        stats = invoke(["--json", "stats"])
        shown = invoke(["--json", "jobs", "list"])
        refused = invoke(["--json", "workers", "cleanup"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["by_status"]["pending"] == 1
    assert len(json.loads(shown.stdout)) == 1
    assert refused.exit_code == 2
    assert refused.stderr == ("haosq workers cleanup: --json is not available here: this command "
                              "prints text only (see 'haosq workers cleanup --help')\n")


def test_at_in_the_past_is_refused_unless_allowed(cli_env, queue, conn):
    with environment(cli_env):
        refused = invoke(["add", "demo:echo", "--at", "2020-01-01T09:00"])
        assert refused.exit_code == 2
        assert refused.stderr.count("\n") == 1
        assert "--at '2020-01-01T09:00' is in the past" in refused.stderr
        assert "--allow-past" in refused.stderr
        assert queue.list() == []
        allowed = invoke(["add", "demo:echo", "--at", "2020-01-01T09:00+00:00", "--allow-past",
                          "--json"])
    assert allowed.exit_code == 0, allowed.output
    job = json.loads(allowed.stdout)
    assert job["scheduled_at"].startswith("2020-01-01T09:00:00") and job["display_status"] == "pending"


def test_unknown_types_are_enqueued_with_a_warning(cli_env, queue):
    with environment(cli_env):
        known = invoke(["add", "email:send", "--payload", '{"to": "a@example.com"}'])
        unknown = invoke(["add", "acme:reindex"])
        scheduled = invoke(["schedules", "add", "nightly", "acme:reindex", "--every", "1d"])
    assert (known.exit_code, known.stderr) == (0, "")
    assert unknown.exit_code == 0 and unknown.stdout.startswith("added job")
    assert unknown.stderr.startswith("haosq: warning: no handler for acme:reindex is installed here")
    assert unknown.stderr.count("\n") == 1
    assert scheduled.exit_code == 0, scheduled.output
    assert scheduled.stderr.startswith("haosq: warning: no handler for acme:reindex")
    assert sorted(j.type for j in queue.list()) == ["acme:reindex", "email:send"]


def test_the_list_of_built_in_types_is_what_the_built_in_modules_register():
    from haosq.handlers.registry import BUILTIN_MODULES, BUILTIN_TYPES, REGISTRY, load_builtin_handlers

    load_builtin_handlers()
    registered = {t for t in REGISTRY.types() if REGISTRY.get(t).function.__module__ in BUILTIN_MODULES}
    assert registered == BUILTIN_TYPES


def test_retry_and_cancel_are_all_or_nothing(cli_env, queue, conn):
    failed = [queue.add("demo:echo", {}) for _ in range(2)]
    conn.execute("UPDATE haosq.jobs SET status = 'failed', error = 'boom' WHERE id = ANY(%s)",
                 ([j.id for j in failed],))
    pending, done = queue.add("demo:echo", {}), queue.add("demo:echo", {})
    conn.execute("UPDATE haosq.jobs SET status = 'completed' WHERE id = %s", (done.id,))
    before = snapshot(conn)
    ids = [str(j.id) for j in failed]
    with environment(cli_env):
        missing = invoke(["jobs", "retry", *ids, "999999"])
        not_failed = invoke(["jobs", "retry", *ids, str(pending.id)])
        huge = invoke(["jobs", "retry", *ids, str(2**63)])
        finished = invoke(["jobs", "cancel", str(pending.id), str(done.id)])
        assert snapshot(conn) == before
        retried = invoke(["jobs", "retry", *ids])
        cancelled = invoke(["jobs", "cancel", str(pending.id)])
    assert (missing.exit_code, missing.stderr) == (
        2, "haosq: error: job 999999 does not exist (no job was retried)\n")
    assert not_failed.stderr == (f"haosq: error: job {pending.id} is pending: only failed jobs can be "
                                 "retried (no job was retried)\n")
    assert huge.stderr == f"haosq: error: job {2**63} does not exist\n"
    assert finished.stderr == (f"haosq: error: job {done.id} is completed: only pending or processing "
                               "jobs can be cancelled (no job was cancelled)\n")
    assert retried.exit_code == 0 and retried.stdout.count("is pending again") == 2
    assert cancelled.stdout == f"job {pending.id} cancelled\n"
    assert {queue.get(j.id).status.value for j in failed} == {"pending"}
