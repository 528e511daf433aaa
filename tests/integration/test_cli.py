"""The `haosq` command, in-process through its entry point (`haosq.cli.main`), and as a real
subprocess where only a process shows it: the console entry point, the exit status, a real
worker."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badinput.snapshot import snapshot
from tests.integration.cli_support import cli_runner, environment, invoke  # noqa: F401 (a fixture)


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "haosq", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def ok(args: list[str], stdin: str = "") -> str:
    result = invoke(args, stdin=stdin)
    assert result.exit_code == 0, f"haosq {' '.join(args)}: {result.output}"
    return result.stdout


@pytest.mark.usefixtures("cli_runner")
def test_add_and_list(queue, tmp_path):
    payload = tmp_path / "job.json"
    payload.write_text('{"to": "user@example.com", "subject": "Welcome!"}')
    added = ok(["add", "email:send", "--payload", str(payload), "--priority", "10",
                "--tag", "upload", "--tag", "important", "--max-attempts", "5"])
    job = queue.list()[0]
    assert added.strip() == f"added job {job.id} (email:send)"
    assert (job.payload["subject"], job.priority, job.tags, job.max_attempts) == (
        "Welcome!", 10, ["upload", "important"], 5)
    assert [row["id"] for row in json.loads(ok(["jobs", "list", "--json"]))] == [job.id]
    shown = json.loads(ok(["jobs", "show", str(job.id), "--json"]))
    assert shown["payload"] == {"to": "user@example.com", "subject": "Welcome!"}


@pytest.mark.usefixtures("cli_runner")
def test_inline_and_stdin_payloads_and_delays(queue):
    ok(["add", "demo:echo", "-p", '{"value": 1}'])
    ok(["add", "demo:echo", "--payload", "-"], stdin='{"value": 2}')
    ok(["add", "demo:echo", "--in", "10m"])
    at_job = json.loads(ok(["add", "demo:echo", "--at", "2099-01-01T09:00:00+00:00", "--json"]))
    assert at_job["display_status"] == "scheduled"
    assert at_job["scheduled_at"].startswith("2099-01-01T09:00:00")
    values = sorted(j.payload.get("value", 0) for j in queue.list())
    assert values == [0, 0, 1, 2]
    assert len(queue.list(status="scheduled")) == 2


@pytest.mark.usefixtures("cli_runner")
def test_retry_cancel_logs_stats_workers(queue, conn):
    failed = queue.add("email:send", {})
    conn.execute("UPDATE haosq.jobs SET status='failed', error='smtp down' WHERE id=%s", (failed.id,))
    pending = queue.add("email:send", {})
    ok(["jobs", "retry", str(failed.id)])
    ok(["jobs", "cancel", str(pending.id)])
    assert queue.get(failed.id).status.value == "pending"
    assert queue.get(pending.id).status.value == "cancelled"
    logs = json.loads(ok(["jobs", "logs", str(failed.id), "--json"]))
    assert [line["message"] for line in logs] == ["retried by an operator"]
    stats = json.loads(ok(["stats", "--json"]))
    assert stats["by_status"]["pending"] == 1
    assert stats["by_status"]["cancelled"] == 1
    assert stats["by_type"] == {"email:send": {"pending": 1, "cancelled": 1}}
    table = ok(["stats"])
    assert "email:send" in table and "pending" in table
    cleanup = ok(["workers", "cleanup", "--timeout", "5m"])
    assert cleanup.strip() == "0 worker(s) marked dead; 0 job(s) rescued"
    assert json.loads(ok(["workers", "list", "--json"])) == []


USER_ERRORS = [
    (["add", "email:send", "--payload", "-"], "{bad json", "payload from standard input is not valid JSON"),
    (["add", "email:send", "--bogus"], "", "No such option: --bogus"),
    (["add", "Email", "--payload", "{}"], "", "invalid job type 'Email'"),
    (["add", "email:send", "--payload", "[1, 2]"], "", "must be a JSON object"),
    (["add", "email:send", "--in", "soon"], "", "invalid duration"),
    (["jobs", "show", "424242"], "", "job 424242 does not exist"),
    (["jobs", "list", "--status", "done"], "", "unknown status 'done'"),
    (["jobs", "retry", "abc"], "", "Invalid value for 'JOB_ID...'"),
]


@pytest.mark.usefixtures("cli_runner")
@pytest.mark.parametrize(("args", "stdin", "expected"), USER_ERRORS)
def test_user_errors_are_one_line_and_exit_2(queue, args, stdin, expected):
    result = invoke(args, stdin=stdin)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert queue.list() == []


def test_a_real_process_exits_2_with_one_line_for_a_user_error(cli_env, queue):
    args, stdin, expected = USER_ERRORS[0]
    result = run(cli_env, *args, stdin=stdin)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and expected in result.stderr
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


@pytest.mark.usefixtures("cli_runner")
def test_migrate_command_reports_up_to_date():
    assert ok(["migrate"]).strip() == "schema is up to date"
    assert invoke(["migrate", "--check"]).exit_code == 0


def test_migrate_applies_to_a_new_database(cli_env, empty_database_url):
    with environment(dict(cli_env, HAOSQ_DATABASE_URL=empty_database_url)):
        assert invoke(["migrate", "--check"]).exit_code == 2
        assert ok(["migrate"]).startswith("applied 0001_initial")


def test_help_and_no_arguments(cli_env):
    result = run(cli_env)
    assert result.returncode == 0
    assert "Usage" in result.stdout and "add" in result.stdout


@pytest.mark.usefixtures("cli_runner")
def test_payload_file_is_read(queue, tmp_path: Path):
    (tmp_path / "p.json").write_text(json.dumps({"fileId": "file_123"}))
    ok(["add", "file:process-upload", "--payload", str(tmp_path / "p.json")])
    assert queue.list()[0].payload == {"fileId": "file_123"}


@pytest.mark.usefixtures("cli_runner")
def test_far_future_delay_is_a_user_error(queue):
    for delay in ("99999999999d", "999999999d"):
        result = invoke(["add", "demo:echo", "--in", delay])
        assert result.exit_code == 2, result.output
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


def test_a_command_uses_one_connection_and_the_pool_only_when_it_is_busy(settings):
    from haosq.cli.database import CommandDatabase

    database = CommandDatabase(settings)
    try:
        with database.connection() as first:
            pid = first.info.backend_pid
            with database.connection() as nested:  # while the first is in use: the pool's
                assert nested.info.backend_pid != pid
        with database.connection() as again:
            assert again.info.backend_pid == pid
    finally:
        database.close()


def test_each_command_line_loads_only_the_module_of_its_command():
    import typer

    from haosq.cli.app import COMMAND_MODULES, build_app, command_named

    every = typer.main.get_command(build_app()).commands
    assert set(every) == set(COMMAND_MODULES)  # no command is missing from the map, nor extra
    for name, module in COMMAND_MODULES.items():
        alone = typer.main.get_command(build_app(name)).commands
        assert name in alone
        assert {COMMAND_MODULES[other] for other in alone} == {module}
    assert command_named(["--database-url", "u", "--json", "jobs", "list"]) == "jobs"
    assert command_named(["--config=/x", "add", "demo:echo"]) == "add"
    assert command_named(["--help"]) is None
