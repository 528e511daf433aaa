"""Bad input through the `haosq` command: one clear line on stderr, exit code 2, no
traceback, and nothing in the database changes.

All cases run against one database, so that the corpus stays cheap: one process start per
case and no database per case.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.badinput.snapshot import snapshot

ROOT = Path(__file__).resolve().parents[2]
ADD = ["add", "email:send"]


def corpus(tmp: Path) -> dict[str, list[str]]:
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
    }


def haosq(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "haosq", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def seeded(cli_env: dict[str, str], conn: psycopg.Connection) -> psycopg.Connection:
    seeded = haosq(cli_env, ["add", "email:send", "--payload", '{"seed": true}', "--tag", "seed"])
    assert seeded.returncode == 0, seeded.stderr
    return conn


def test_every_bad_command_fails_cleanly_and_changes_nothing(
        cli_env: dict[str, str], seeded: psycopg.Connection, tmp_path: Path) -> None:
    # None of these may write, so they can run side by side; the snapshot is compared once
    # around all of them.
    cases = corpus(tmp_path)
    before = snapshot(seeded)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(cases, pool.map(lambda args: haosq(cli_env, args), cases.values()),
                           strict=True))
    problems = []
    for name, result in results.items():
        lines = result.stderr.strip().splitlines()
        if result.returncode != 2:
            problems.append(f"{name}: exit {result.returncode}: {result.stderr[-500:]}")
        elif len(lines) != 1 or "Traceback" in result.stderr:
            problems.append(f"{name}: stderr is not one line: {result.stderr[-500:]}")
    assert not problems, "\n".join(problems)
    assert snapshot(seeded) == before


@pytest.mark.parametrize("value", ["'; DELETE FROM haosq.jobs; --", "%' OR 1=1 --", "_%\\"])
def test_sql_metacharacters_in_filters_match_nothing_and_change_nothing(
        value: str, cli_env: dict[str, str], seeded: psycopg.Connection) -> None:
    before = snapshot(seeded)
    for option in ("--tag", "--search"):
        result = haosq(cli_env, ["jobs", "list", option, value, "--json"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[]"
    assert snapshot(seeded) == before
