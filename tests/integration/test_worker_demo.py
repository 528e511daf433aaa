"""`haosq demo` end to end: enqueue, run in-process, progress, stats."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from tests.integration.worker_support import ROOT


def test_demo_runs_every_job_to_its_end_and_prints_stats(
    cli_env: dict[str, str], conn: psycopg.Connection
) -> None:
    done = subprocess.run([sys.executable, "-m", "haosq", "demo", "--count", "10",
                           "--schedule-delay", "1"], env=cli_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "jobs by status" in done.stdout and "demo:echo" in done.stdout
    rows = conn.execute("SELECT status, tags, attempts, type, payload FROM haosq.jobs").fetchall()
    tags = {tag for row in rows for tag in row["tags"]}
    assert len(tags) == 1 and next(iter(tags)).startswith("demo-")
    assert {r["status"] for r in rows} == {"completed", "failed"}
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["payload"]["permanent"] is True
    retried = [r for r in rows if r["type"] == "demo:fail" and r["status"] == "completed"]
    assert retried and all(r["attempts"] >= 2 for r in retried)


def test_demo_on_a_configured_database_does_not_speak_of_an_embedded_server(
    cli_env: dict[str, str],
) -> None:
    done = subprocess.run([sys.executable, "-m", "haosq", "demo", "--count", "1",
                           "--schedule-delay", "0"], env=cli_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "haosq demo: the configured database" in done.stdout
    assert "embedded" not in done.stdout
