"""What the CLI prints from stored data: never markup, never raw escape sequences, never a
failure because a row holds a value Python cannot load."""

from __future__ import annotations

import json

import pytest

from tests.badinput import hostile as stored
from tests.integration.cli_support import cli_runner, invoke  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("cli_runner")


@pytest.fixture
def hostile(conn) -> dict[str, int]:
    return stored.insert_hostile_rows(conn)


def text_of(args: list[str]) -> str:
    result = invoke(args)
    assert result.exit_code == 0, f"haosq {' '.join(args)}: {result.output}"
    assert not stored.raw_escape_in(result.output), result.output
    return result.output


def json_of(args: list[str]):
    return json.loads(text_of([*args, "--json"]))


def test_jobs_list_shows_markup_and_escapes_literally(hostile):
    shown = text_of(["jobs", "list"])
    for markup in stored.MARKUP:
        assert markup in shown
    assert stored.ESCAPE_SHOWN in shown
    assert f"RuntimeError: {stored.HOSTILE}".replace(stored.ESCAPE, stored.ESCAPE_SHOWN) in shown
    listed = {row["id"]: row for row in json_of(["jobs", "list"])}
    assert listed[hostile["markup"]]["error"].startswith(f"RuntimeError: {stored.HOSTILE}")
    assert listed[hostile["markup"]]["tags"] == ["[bold]", stored.CLOSE, stored.LINK, stored.ESCAPE]
    assert listed[hostile["times"]]["scheduled_at"] == "infinity"
    assert listed[hostile["times"]]["created_at"] == "-infinity"
    assert listed[hostile["times"]]["updated_at"] == "10000-01-01 00:00:00+00"
    assert listed[hostile["times"]]["timeout_seconds"] == "NaN"
    assert listed[hostile["numbers"]]["payload"] == '{"n": ' + "9" * 5000 + "}"
    assert listed[hostile["numbers"]]["timeout_seconds"] == "Infinity"


@pytest.mark.parametrize("name", ["markup", "times", "numbers", "type"])
def test_jobs_show_renders_every_stored_value(hostile, name):
    shown = text_of(["jobs", "show", str(hostile[name])])
    assert f"id {hostile[name]}" in " ".join(shown.split())
    data = json_of(["jobs", "show", str(hostile[name])])
    assert data["id"] == hostile[name]
    if name == "markup":
        for markup in stored.MARKUP:
            assert markup in shown
        assert stored.ESCAPE_SHOWN in shown
        assert data["payload"]["note"] == stored.HOSTILE
        assert data["created_by"] == f"{stored.CLOSE}{stored.ESCAPE}"
    if name == "times":
        for text in ("infinity", "-infinity", "10000-01-01 00:00:00+00", "0044-03-15 00:00:00+00 BC"):
            assert text in shown
    if name == "numbers":
        assert data["completed_at"] == "infinity" and "9" * 5000 in "".join(shown.split())


def test_jobs_logs_print_messages_as_written(hostile):
    shown = text_of(["jobs", "logs", str(hostile["markup"])])
    assert stored.LOG_LINE.replace(stored.ESCAPE, stored.ESCAPE_SHOWN) in shown  # "[handlers.smtp]" kept
    assert "[bold]" in shown and "infinity" in shown
    assert f"plain {stored.ESCAPE_SHOWN} line" in shown
    logs = json_of(["jobs", "logs", str(hostile["markup"])])
    assert [line["message"] for line in logs] == [stored.LOG_LINE, f"plain {stored.ESCAPE} line"]
    assert logs[0]["created_at"] == "infinity"


def test_workers_schedules_and_stats_render(hostile):
    workers = text_of(["workers", "list", "--all"])
    assert "[bold]worker" in workers and stored.ESCAPE_SHOWN in workers and stored.LINK in workers
    assert json_of(["workers", "list", "--all"])[0]["last_heartbeat"] == "infinity"
    schedules = text_of(["schedules", "list"])
    assert "[bold]sched" in schedules and f"{stored.CLOSE} * * * *" in schedules and stored.LINK in schedules
    assert "forever" in schedules and "never" in schedules
    listed = {row["name"]: row for row in json_of(["schedules", "list"])}
    assert listed["forever"]["next_due_at"] == "infinity"
    assert listed["never"]["interval_seconds"] == "NaN"
    stats = text_of(["stats"])
    assert "demo:" in stats
    assert json_of(["stats"])["by_status"]["failed"] >= 1


def test_json_output_escapes_terminal_controls(hostile, conn):
    conn.execute("UPDATE haosq.jobs SET error = %s WHERE id = %s",
                 ("C1 \x9b31m bidi \u202e end", hostile["markup"]))
    raw = text_of(["jobs", "show", str(hostile["markup"]), "--json"])
    assert "\\u009b31m" in raw and "\\u202e" in raw
    assert json.loads(raw)["error"] == "C1 \x9b31m bidi \u202e end"

