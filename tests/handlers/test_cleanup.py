"""cleanup:* on real files in a temporary tree and real tables in PostgreSQL."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from haosq.errors import ConfigError, PermanentError
from tests.handlers.file_samples import files_in_tree, make_deep_tree, remove_deep_tree

DAY = 86_400


def make_file(path: Path, size: int, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "uploads"
    outside = tmp_path / "outside"
    make_file(root / "old.log", 100, 40)
    make_file(root / "new.log", 100, 1)
    make_file(root / "old.tmp", 50, 40)
    make_file(root / "deep" / "er" / "old.log", 10, 90)
    make_file(outside / "precious.log", 7, 400)
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    (root / "file-link.log").symlink_to(outside / "precious.log")
    return {"root": root, "outside": outside}


def cleanup_config(root: Path, **extra):
    return {"cleanup": {"roots": [str(root)], **extra}}


def test_old_files_removes_only_old_files_and_never_follows_symlinks(run_handler, tree):
    root = tree["root"]
    result = run_handler.run("cleanup:old-files", {"directory": str(root), "olderThanDays": 30},
                             handlers=cleanup_config(root))
    assert result == {"directory": str(root), "dry_run": False, "files_removed": 3, "bytes_removed": 160,
                      "symlinks_skipped": 2, "errors": 0}
    remaining = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())
    assert remaining == ["file-link.log", "link-out", "new.log"]
    assert (tree["outside"] / "precious.log").exists()


def test_old_files_glob_and_dry_run(run_handler, tree):
    root = tree["root"]
    payload = {"directory": str(root), "older_than_days": 30, "glob": "*.log", "dryRun": True}
    dry = run_handler.run("cleanup:old-files", payload, handlers=cleanup_config(root))
    assert (dry["files_removed"], dry["bytes_removed"], dry["dry_run"]) == (2, 110, True)
    assert (root / "old.log").exists()
    flat = run_handler.run("cleanup:old-files", {"directory": str(root), "olderThanDays": 30, "glob": "*.log",
                                                 "recursive": False}, handlers=cleanup_config(root))
    assert flat["files_removed"] == 1
    assert not (root / "old.log").exists() and (root / "deep" / "er" / "old.log").exists()
    assert (root / "old.tmp").exists()


def test_old_files_refuses_paths_outside_the_roots(run_handler, tree, tmp_path):
    root, outside = tree["root"], tree["outside"]
    cases = [
        (str(outside), "not inside a configured cleanup root"),
        (f"{root}/../outside", "contains '..'"),
        (str(root / "link-out"), "symlink"),                 # a symlink out of the root
        ("relative/path", "absolute path"),
        (str(root / "missing"), "missing"),
    ]
    for directory, message in cases:
        with pytest.raises(PermanentError, match=message):
            run_handler.run("cleanup:old-files", {"directory": directory, "olderThanDays": 0},
                            handlers=cleanup_config(root))
    with pytest.raises(PermanentError, match="disabled"):
        run_handler.run("cleanup:old-files", {"directory": str(root), "olderThanDays": 0}, handlers={})
    assert (outside / "precious.log").exists()


@pytest.mark.parametrize(("payload", "field"), [
    ({"olderThanDays": 1}, "directory"),
    ({"directory": "/x", "olderThanDays": -1}, "olderThanDays"),
    ({"directory": "/x", "olderThanDays": "soon"}, "olderThanDays"),
    ({"directory": "/x", "olderThanDays": 1, "follow": True}, "follow"),
])
def test_old_files_bad_payload(run_handler, tree, payload, field):
    with pytest.raises(PermanentError) as raised:
        run_handler.run("cleanup:old-files", payload, handlers=cleanup_config(tree["root"]))
    assert f"field {field!r}" in str(raised.value)


@pytest.fixture
def host_tables(conn):
    conn.execute("CREATE SCHEMA app")
    conn.execute("CREATE TABLE app.invites (code text PRIMARY KEY, valid_until timestamptz NOT NULL)")
    conn.execute("""INSERT INTO app.invites
                    SELECT 'old' || g, now() - interval '1 hour' FROM generate_series(1, 25) g""")
    conn.execute("""INSERT INTO app.invites
                    SELECT 'new' || g, now() + interval '1 day' FROM generate_series(1, 5) g""")
    conn.execute('CREATE TABLE public."AuditLog" (id bigserial PRIMARY KEY, "at" timestamptz NOT NULL)')
    conn.execute("""INSERT INTO public."AuditLog" (at)
                    SELECT now() - make_interval(days => g) FROM generate_series(1, 100) g""")
    return conn


def test_expired_invites_are_deleted_in_batches(run_handler, host_tables):
    invites = {"table": "app.invites", "expires_column": "valid_until"}
    config = {"cleanup": {"batch_size": 10, "invites": invites}}
    dry = run_handler.run("cleanup:expired-invites", {"dryRun": True}, handlers=config)
    assert dry["rows_deleted"] == 25
    result = run_handler.run("cleanup:expired-invites", {}, handlers=config)
    assert result == {"table": "app.invites", "dry_run": False, "rows_deleted": 25, "batches": 3}
    left = host_tables.execute("SELECT count(*) AS n FROM app.invites").fetchone()["n"]
    assert left == 5


def test_audit_logs_older_than_n_days(run_handler, host_tables):
    audit = {"table": "AuditLog", "timestamp_column": "at", "retention_days": 60}
    config = {"cleanup": {"audit_logs": audit}}
    result = run_handler.run("cleanup:audit-logs", {"olderThanDays": 30.5, "batchSize": 7}, handlers=config)
    assert result["rows_deleted"] == 70 and result["batches"] == 11
    result = run_handler.run("cleanup:audit-logs", {}, handlers=config)  # retention_days from config
    assert result["rows_deleted"] == 0
    oldest = host_tables.execute('SELECT max(now() - at) AS age FROM public."AuditLog"').fetchone()["age"]
    assert oldest.days == 30


@pytest.mark.parametrize("table", ["app.invites; DROP TABLE app.invites", "a.b.c", "app.\"x\"", ""])
def test_table_names_from_config_are_validated(run_handler, host_tables, table):
    config = {"cleanup": {"invites": {"table": table, "expires_column": "valid_until"}}}
    with pytest.raises(ConfigError, match="not a valid name"):
        run_handler.run("cleanup:expired-invites", {}, handlers=config)
    assert host_tables.execute("SELECT count(*) AS n FROM app.invites").fetchone()["n"] == 30


def test_missing_table_or_column_is_a_clear_error(run_handler, host_tables):
    for invites in ({"table": "app.nope", "expires_column": "valid_until"},
                    {"table": "app.invites", "expires_column": "nope"}):
        with pytest.raises(ConfigError, match="does not exist"):
            run_handler.run("cleanup:expired-invites", {}, handlers={"cleanup": {"invites": invites}})
    with pytest.raises(ConfigError, match="needs table"):
        run_handler.run("cleanup:expired-invites", {}, handlers={"cleanup": {}})


def test_job_logs_and_finished_jobs_past_retention(run_handler, queue, conn):
    old_done = queue.add("demo:echo", {}).id
    old_pending = queue.add("demo:echo", {}).id
    recent_done = queue.add("demo:echo", {}).id
    conn.execute("""UPDATE haosq.jobs SET status = 'completed', completed_at = now() - interval '100 days'
                    WHERE id = %s""", (old_done,))
    conn.execute("UPDATE haosq.jobs SET status = 'completed', completed_at = now() WHERE id = %s",
                 (recent_done,))
    for job_id in (old_pending, recent_done):
        conn.execute("""INSERT INTO haosq.job_logs (job_id, level, message, created_at)
                        SELECT %s, 'info', 'line ' || g, now() - interval '40 days'
                          FROM generate_series(1, 6) g""", (job_id,))
        conn.execute("INSERT INTO haosq.job_logs (job_id, level, message) VALUES (%s, 'info', 'fresh')",
                     (job_id,))
    queue.add_digest_item("u", "email", {"title": "sent long ago"})
    conn.execute("UPDATE haosq.digest_items SET sent_at = now() - interval '40 days'")
    queue.add_digest_item("u", "email", {"title": "pending"})

    result = run_handler.run("cleanup:job-logs", {"olderThanDays": 30, "jobsOlderThanDays": 90,
                                                  "batchSize": 4}, handlers={})
    assert result == {"dry_run": False, "job_logs_deleted": 12, "jobs_deleted": 1, "digest_items_deleted": 1}
    ids = {row["id"] for row in conn.execute("SELECT id FROM haosq.jobs")}
    assert old_done not in ids and {old_pending, recent_done} <= ids
    messages = [row["message"] for row in conn.execute("SELECT message FROM haosq.job_logs "
                                                       "WHERE message <> 'history pruned'")]
    assert messages == ["fresh", "fresh"]
    titles = [row["t"] for row in conn.execute("SELECT item->>'title' AS t FROM haosq.digest_items")]
    assert titles == ["pending"]


def test_job_logs_alone_also_prunes_finished_jobs_like_the_seed(run_handler, queue, conn):
    old = queue.add("demo:echo", {}).id
    kept = queue.add("demo:echo", {}).id
    conn.execute("""UPDATE haosq.jobs SET status = 'failed', completed_at = now() - interval '31 days'
                    WHERE id = %s""", (old,))
    conn.execute("""UPDATE haosq.jobs SET status = 'completed', completed_at = now() - interval '1 day'
                    WHERE id = %s""", (kept,))
    dry = run_handler.run("cleanup:job-logs", {"olderThanDays": 30, "dryRun": True}, handlers={})
    assert dry["jobs_deleted"] == 1 and dry["dry_run"] is True
    assert {row["id"] for row in conn.execute("SELECT id FROM haosq.jobs")} >= {old, kept}
    result = run_handler.run("cleanup:job-logs", {"olderThanDays": 30}, handlers={})
    assert result["jobs_deleted"] == 1
    ids = {row["id"] for row in conn.execute("SELECT id FROM haosq.jobs")}
    assert old not in ids and kept in ids
    kept_by_config = run_handler.run("cleanup:job-logs", {"olderThanDays": 0},
                                     handlers={"cleanup": {"job_retention_days": 365}})
    assert kept_by_config["jobs_deleted"] == 0
    assert kept in {row["id"] for row in conn.execute("SELECT id FROM haosq.jobs")}


def test_old_files_walks_a_tree_deeper_than_the_recursion_limit(run_handler, tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    depth = sys.getrecursionlimit() + 500
    made = make_deep_tree(root, depth, old_file_every=100, age_days=40)
    try:
        result = run_handler.run("cleanup:old-files", {"directory": str(root), "olderThanDays": 30},
                                 handlers=cleanup_config(root))
        assert result["files_removed"] == made and result["errors"] == 0
        assert files_in_tree(root) == 0
    finally:
        remove_deep_tree(root)
