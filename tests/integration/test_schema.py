"""Migrations, the claim index and the SQL enqueue function."""

import subprocess
import sys

import psycopg
import pytest

from haosq.db.migrate import available_migrations, migrate


def test_ten_processes_migrating_at_once_apply_each_migration_once(empty_database_url):
    script = (
        "import sys, psycopg\n"
        "from haosq.db.migrate import migrate\n"
        "with psycopg.connect(sys.argv[1], autocommit=True) as c:\n"
        "    print(len(migrate(c)))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, empty_database_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(10)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    applied = sorted(int(out) for out, _ in results)
    assert applied == [0] * 9 + [len(available_migrations())]
    with psycopg.connect(empty_database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM haosq.schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in available_migrations()]
        assert migrate(conn) == []


def test_sql_function_enqueues_from_plain_sql(conn, queue):
    conn.execute("LISTEN haosq_jobs")
    row = conn.execute(
        "SELECT haosq.add_job('email:send', '{\"to\": \"a@example.com\"}', priority => 5, "
        "tags => ARRAY['sql']) AS id").fetchone()
    job = queue.get(row["id"])
    assert (job.type, job.payload, job.priority, job.tags) == (
        "email:send", {"to": "a@example.com"}, 5, ["sql"])
    assert [n.payload for n in conn.notifies(timeout=0.5)] == ["email:send"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("SELECT haosq.add_job('Email')", "invalid job type"),
        ("SELECT haosq.add_job('a:b', '[1]')", "expected a JSON object"),
        ("SELECT haosq.add_job('a:b', '{}', 5000)", "invalid priority"),
        ("SELECT haosq.add_job('a:b', '{}', 0, 0)", "invalid max_attempts"),
    ],
)
def test_sql_function_refuses_bad_input(conn, call, message):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(call)
    assert conn.execute("SELECT count(*) AS n FROM haosq.jobs").fetchone()["n"] == 0


def test_claim_query_shape_uses_the_partial_index(conn, queue):
    queue.add_many([{"type": "demo:echo", "priority": i % 5} for i in range(20_000)])
    conn.execute("UPDATE haosq.jobs SET status='completed' WHERE id % 10 <> 0")
    conn.execute("ANALYZE haosq.jobs")
    plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
        "EXPLAIN SELECT id FROM haosq.jobs WHERE status = 'pending' AND due_at <= now() "
        "ORDER BY priority DESC, due_at, id LIMIT 100 FOR UPDATE SKIP LOCKED"))
    assert "jobs_claim" in plan
