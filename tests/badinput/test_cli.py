"""Bad input through the `haosq` command: one clear line on stderr, exit code 2, no
traceback, and nothing in the database changes.

All cases run against one database, in this process (`haosq.cli.main` with its own argv and
captured streams, through the entry point's error handling); the worker's run as real
processes, since a worker that accepted its input would start for good. A few cases carry
values no command line can (NUL bytes): only in-process runs reach them.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.badinput.snapshot import snapshot
from tests.integration.cli_support import environment, invoke

ROOT = Path(__file__).resolve().parents[2]
ADD = ["add", "email:send"]
BIG = str(2**63)
SCHEDULE = ["schedules", "add"]


def corpus(tmp: Path, ids: dict[str, int]) -> dict[str, list[str]]:
    huge = tmp / "huge.json"
    huge.write_text('{"a": "' + "x" * (2 * 1024 * 1024) + '"}')
    binary = tmp / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x01{")
    deep = tmp / "deep.json"
    deep.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return {
        "malformed JSON": [*ADD, "--payload", "{bad json"],
        "truncated JSON": [*ADD, "--payload", '{"to": "a@example.com"'],
        "JSON array": [*ADD, "--payload", "[1, 2]"],
        "JSON string": [*ADD, "--payload", '"text"'],
        "JSON NaN": [*ADD, "--payload", '{"a": NaN}'],
        "JSON NUL escape": [*ADD, "--payload", '{"a": "\\u0000"}'],
        "JSON lone surrogate": [*ADD, "--payload", '{"a": "\\ud800"}'],
        "huge payload file": [*ADD, "--payload", str(huge)],
        "binary payload file": [*ADD, "--payload", str(binary)],
        "deeply nested payload": [*ADD, "--payload", str(deep)],
        "payload file missing": [*ADD, "--payload", str(tmp / "missing.json")],
        "type uppercase": ["add", "Email:Send"],
        "type SQL": ["add", "email:send; DROP TABLE haosq.jobs; --"],
        "type empty": ["add", ""],
        "type unicode": ["add", "émail:send"],
        "priority too low": [*ADD, "--priority", "-5000"],
        "priority huge": [*ADD, "--priority", "99999999999999999999"],
        "priority not a number": [*ADD, "--priority", "abc"],
        "max attempts zero": [*ADD, "--max-attempts", "0"],
        "max attempts negative": [*ADD, "--max-attempts", "-1"],
        "timeout negative": [*ADD, "--timeout", "-1"],
        "timeout NaN": [*ADD, "--timeout", "nan"],
        "timeout infinite": [*ADD, "--timeout", "inf"],
        "tag empty": [*ADD, "--tag", ""],
        "tag too long": [*ADD, "--tag", "t" * 101],
        "created-by too long": [*ADD, "--created-by", "x" * 300],
        "at not a time": [*ADD, "--at", "tomorrow"],
        "at and in": [*ADD, "--at", "2030-01-01T00:00", "--in", "5m"],
        "in negative": [*ADD, "--in", "-5m"],
        "in nonsense": [*ADD, "--in", "10 parsecs"],
        "list status SQL": ["jobs", "list", "--status", "pending; DROP TABLE haosq.jobs"],
        "list type SQL": ["jobs", "list", "--type", "x' OR '1'='1"],
        "list limit zero": ["jobs", "list", "--limit", "0"],
        "list limit negative": ["jobs", "list", "--limit", "-1"],
        "list since nonsense": ["jobs", "list", "--since", "forever"],
        "show not a number": ["jobs", "show", "abc"],
        "show missing huge id": ["jobs", "show", "99999999999999999999"],
        "retry missing": ["jobs", "retry", "99999999999999999999"],
        "cancel missing": ["jobs", "cancel", "0"],
        "logs missing": ["jobs", "logs", "123456789"],
        "cron out of range": ["schedules", "add", "s1", "email:send", "--cron", "61 * * * *"],
        "cron too few fields": ["schedules", "add", "s2", "email:send", "--cron", "* * *"],
        "cron garbage": ["schedules", "add", "s3", "email:send", "--cron", "@yearly garbage"],
        "cron SQL": ["schedules", "add", "s4", "email:send", "--cron", "'; DROP TABLE haosq.jobs; --"],
        "every zero": ["schedules", "add", "s5", "email:send", "--every", "0m"],
        "every negative": ["schedules", "add", "s6", "email:send", "--every", "-1h"],
        "no cron nor every": ["schedules", "add", "s7", "email:send"],
        "timezone unknown": ["schedules", "add", "s8", "email:send", "--cron", "* * * * *",
                             "--timezone", "Mars/Olympus"],
        "schedule name SQL": ["schedules", "add", "x'; DROP TABLE haosq.jobs; --", "email:send",
                              "--every", "1h"],
        "catch-up unknown": ["schedules", "add", "s9", "email:send", "--every", "1h",
                             "--catch-up", "sometimes"],
        "catch-up limit negative": ["schedules", "add", "s10", "email:send", "--every", "1h",
                                    "--catch-up-limit", "-1"],
        "schedule priority": ["schedules", "add", "s11", "email:send", "--every", "1h",
                              "--priority", "5000"],
        "schedule payload": ["schedules", "add", "s12", "email:send", "--every", "1h",
                             "--payload", "{nope"],
        "remove missing schedule": ["schedules", "remove", "nope"],
        "cleanup negative timeout": ["workers", "cleanup", "--timeout", "-1s"],
        # Numbers out of range: ids, limits, attempts, priorities, durations, dates.
        "show id 2**63": ["jobs", "show", BIG],
        "show negative id": ["jobs", "show", "-1"],
        "logs id 2**63": ["jobs", "logs", BIG],
        "cancel id 2**63": ["jobs", "cancel", BIG],
        "retry negative id": ["jobs", "retry", "-5"],
        "list before-id 2**63": ["jobs", "list", "--before-id", BIG],
        "list before-id negative": ["jobs", "list", "--before-id", "-1"],
        "list limit 2**63": ["jobs", "list", "--limit", BIG],
        "list since overflows": ["jobs", "list", "--since", "99999999999999w"],
        "list since before year 1": ["jobs", "list", "--since", "999999999d"],
        "at year 99999": [*ADD, "--at", "99999-01-01"],
        "at year 10000": [*ADD, "--at", "10000-01-01T00:00"],
        "at year 1": [*ADD, "--at", "0001-01-01T00:00", "--allow-past"],
        "at past year 9999 in UTC": [*ADD, "--at", "9999-12-31T23:59:59-12:00"],
        "at in the past": [*ADD, "--at", "2001-01-01T00:00"],
        "in overflows": [*ADD, "--in", "99999999999999999999w"],
        "in 1e308 seconds": [*ADD, "--in", "1" + "0" * 308 + "s"],
        "in past year 9999": [*ADD, "--in", "3650000d"],
        "priority 2**63": [*ADD, "--priority", BIG],
        "max attempts 2**31": [*ADD, "--max-attempts", str(2**31)],
        "max attempts 2**63": [*ADD, "--max-attempts", BIG],
        "timeout 1e309": [*ADD, "--timeout", "1e309"],
        "payload number of 5000 digits": [*ADD, "--payload", '{"n": ' + "9" * 5000 + "}"],
        "payload 1e400": [*ADD, "--payload", '{"n": 1e400}'],
        "payload Infinity": [*ADD, "--payload", '{"n": Infinity}'],
        "tags 60": [*ADD, *(arg for i in range(60) for arg in ("-t", f"t{i}"))],
        "tag of 3000": [*ADD, "--tag", "x" * 3000],
        "schedule every overflows": [*SCHEDULE, "t1", "demo:echo", "--every", "99999999999999999999w"],
        "schedule every 1ms": [*SCHEDULE, "t2", "demo:echo", "--every", "1ms"],
        "schedule name long": [*SCHEDULE, "s" * 300, "demo:echo", "--every", "1h"],
        "schedule timezone path": [*SCHEDULE, "t3", "demo:echo", "--cron", "* * * * *", "--timezone",
                                   "../../etc/passwd"],
        "schedule catch-up limit 2**63": [*SCHEDULE, "t4", "demo:echo", "--every", "1h", "--catch-up",
                                          "all", "--catch-up-limit", BIG],
        "schedule max attempts 2**31": [*SCHEDULE, "t5", "demo:echo", "--every", "1h",
                                        "--max-attempts", str(2**31)],
        "schedule priority 2**63": [*SCHEDULE, "t6", "demo:echo", "--every", "1h", "--priority", BIG],
        "schedule type": [*SCHEDULE, "t7", "Bad!", "--every", "1h"],
        "schedule exists": [*SCHEDULE, "seeded", "demo:echo", "--every", "1h"],
        "enable missing schedule": ["schedules", "enable", "nope"],
        "run-now missing schedule": ["schedules", "run-now", "nope"],
        "cleanup timeout overflows": ["workers", "cleanup", "--timeout", "99999999999999999999w"],
        "cleanup timeout before year 1": ["workers", "cleanup", "--timeout", "999999999d"],
        # NUL bytes, which only an in-process run can pass as arguments.
        "type NUL": ["add", "demo:e\x00cho"],
        "tag NUL": [*ADD, "--tag", "a\x00"],
        "created-by NUL": [*ADD, "--created-by", "me\x00"],
        "payload NUL key": [*ADD, "--payload", '{"a\\u0000": 1}'],
        "list status NUL": ["jobs", "list", "--status", "pend\x00ing"],
        "list tag NUL": ["jobs", "list", "--tag", "a\x00b"],
        "list search NUL": ["jobs", "list", "--search", "a\x00b"],
        "list type NUL": ["jobs", "list", "--type", "email\x00"],
        "schedule name NUL": [*SCHEDULE, "s\x00", "demo:echo", "--every", "1h"],
        "schedule cron NUL": [*SCHEDULE, "t8", "demo:echo", "--cron", "* * * * *\x00"],
        "schedule timezone NUL": [*SCHEDULE, "t9", "demo:echo", "--cron", "* * * * *", "--timezone",
                                  "UTC\x00"],
        "disable schedule NUL": ["schedules", "disable", "a\x00"],
        "remove schedule NUL": ["schedules", "remove", "x\x00"],
        "config path NUL": ["config", "show", "--config", "/tmp/a\x00b"],
        # All or nothing: a command that fails part way leaves nothing done.
        "retry failed and missing": ["jobs", "retry", str(ids["failed"]), "999999"],
        "retry failed and pending": ["jobs", "retry", str(ids["failed"]), str(ids["pending"])],
        "cancel pending and completed": ["jobs", "cancel", str(ids["pending"]), str(ids["completed"])],
        # Global options and the rest of the command line.
        "json on a text command": ["--json", "workers", "cleanup"],
        "config file missing": ["config", "show", "--config", "/nonexistent/haosq.toml"],
        "tui refresh too fast": ["tui", "--refresh-interval", "0"],
        "tui without a terminal": ["tui"],
        "database URL malformed": ["--database-url", "postgresql://app:s3%zzcret@127.0.0.1/x", "jobs",
                                   "list"],
        "database URL port": ["--database-url", "postgresql://app:s3cret@127.0.0.1:notaport/x", "stats"],
        "systemd group": ["systemd", "install", "Bad Group", "--print"],
        "systemd relative executable": ["systemd", "install", "--print", "--executable", "haosq"],
        "systemd concurrency 0": ["systemd", "install", "--print", "--concurrency", "0"],
    }


# A worker that accepted its input would run until stopped: these run as real processes.
WORKER_CASES = {
    "worker log level": ["worker", "--log-level", "loud"],
    "worker types": ["worker", "--types", "Bad!"],
    "worker concurrency 0": ["worker", "--concurrency", "0"],
    "worker metrics port": ["worker", "--metrics-port", "70000"],
    "worker missing module": ["worker", "--import", "no_such_module_here"],
}


def haosq(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "haosq", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def seeded(queue, conn: psycopg.Connection) -> dict[str, int]:
    ids = {name: queue.add("email:send", {"seed": name}, tags=["seed"]).id
           for name in ("pending", "failed", "completed")}
    conn.execute("UPDATE haosq.jobs SET status = 'failed', error = 'boom' WHERE id = %s", (ids["failed"],))
    conn.execute("UPDATE haosq.jobs SET status = 'completed' WHERE id = %s", (ids["completed"],))
    queue.schedule("seeded", "demo:echo", {}, interval="1h")
    return ids


def problem(name: str, code: int, stderr: str) -> str | None:
    lines = stderr.strip().splitlines()
    if code != 2:
        return f"{name}: exit {code}: {stderr[-500:]}"
    if len(lines) != 1 or "Traceback" in stderr:
        return f"{name}: stderr is not one line: {stderr[-500:]}"
    return None


def test_every_bad_command_fails_cleanly_and_changes_nothing(
        cli_env: dict[str, str], seeded: dict[str, int], conn: psycopg.Connection, tmp_path: Path) -> None:
    before = snapshot(conn)
    problems = []
    with environment(cli_env):
        for name, args in corpus(tmp_path, seeded).items():
            result = invoke(args)
            problems.append(problem(name, result.exit_code, result.stderr))
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(WORKER_CASES, pool.map(lambda a: haosq(cli_env, a), WORKER_CASES.values()),
                        strict=True))
    problems += [problem(name, run.returncode, run.stderr) for name, run in runs.items()]
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)
    assert snapshot(conn) == before


@pytest.mark.parametrize(("url", "secret"), [
    ("postgresql://app:s3%zzcret@127.0.0.1/x", "zzcret"),  # libpq quotes the bad password
    ("postgresql://app:s3cret@127.0.0.1:notaport/x", "s3cret"),
    ("host=127.0.0.1 port=1 password='s3 cret' dbname=x", "cret"),
    ("postgresql://app:s3@cret9@127.0.0.1:1/x", "cret9"),  # libpq reads "cret9@..." as the host
])
def test_secrets_in_bad_database_urls_stay_hidden(cli_env: dict[str, str], url: str, secret: str) -> None:
    with environment(cli_env):
        result = invoke(["--database-url", url, "jobs", "list"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and secret not in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["'; DELETE FROM haosq.jobs; --", "%' OR 1=1 --", "_%\\"])
def test_sql_metacharacters_in_filters_match_nothing_and_change_nothing(
        value: str, cli_env: dict[str, str], seeded: dict[str, int], conn: psycopg.Connection) -> None:
    before = snapshot(conn)
    with environment(cli_env):
        for option in ("--tag", "--search"):
            result = invoke(["jobs", "list", option, value, "--json"])
            assert result.exit_code == 0, result.output
            assert result.stdout.strip() == "[]"
    assert snapshot(conn) == before
