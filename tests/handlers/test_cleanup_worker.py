"""Cleanup jobs through the daemon's real worker."""

from __future__ import annotations

from tests.handlers.conftest import wait_finished
from tests.handlers.test_cleanup import make_file


def test_old_files_and_expired_invites_through_the_worker(queue, conn, tmp_path, handler_worker):
    root = tmp_path / "exports"
    for i in range(5):
        make_file(root / f"e{i}.csv", 10, 10 + i)
    make_file(root / "today.csv", 10, 0)
    conn.execute("CREATE TABLE invites (code text, expires_at timestamptz)")
    conn.execute("INSERT INTO invites VALUES ('a', now() - interval '1 day'), "
                 "('b', now() + interval '1 day')")

    files = queue.add("cleanup:old-files", {"directory": str(root), "olderThanDays": 7})
    invites = queue.add("cleanup:expired-invites", {})
    escape = queue.add("cleanup:old-files", {"directory": str(tmp_path), "olderThanDays": 0})
    handler_worker(handlers={"cleanup": {"roots": [str(root)], "invites": {
        "table": "invites", "expires_column": "expires_at"}}}, types="cleanup")

    row = wait_finished(conn, files.id)
    assert row["status"] == "completed" and row["result"]["files_removed"] == 5
    assert sorted(p.name for p in root.iterdir()) == ["today.csv"]
    row = wait_finished(conn, invites.id)
    assert row["status"] == "completed" and row["result"]["rows_deleted"] == 1
    row = wait_finished(conn, escape.id)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "not inside a configured cleanup root" in row["error"]
