"""The matrix jobs through a real worker against a real Synapse."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest

import haosq.handlers.matrix  # noqa: F401  (registers the matrix:* handlers in this process)
from haosq.config import Settings
from haosq.daemon.service import WorkerService
from haosq.queue import JobQueue

pytest_plugins = ["tests.handlers.peers_matrix"]
pytestmark = pytest.mark.matrix

FAST = {"worker.heartbeat_interval_ms": 200, "worker.poll_interval_ms": 50,
        "worker.shutdown_timeout_seconds": 1.0, "worker.types": "matrix"}


def wait_for(conn: psycopg.Connection, job_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT * FROM haosq.jobs WHERE id = %s", (job_id,)).fetchone()
        if row["status"] in ("completed", "failed"):
            return row
        assert time.monotonic() < deadline, f"job {job_id} is still {row['status']}"
        time.sleep(0.05)


def test_export_and_profile_sync_through_a_worker(synapse, queue: JobQueue, conn, settings: Settings,
                                                  tmp_path: Path):
    user = synapse.register(f"worker{uuid.uuid4().hex[:8]}", displayname="Via Worker")
    room = synapse.create_room(user, "worker room")
    synapse.send(user, room, "through the worker")
    conn.execute("CREATE TABLE profiles (matrix_user_id text PRIMARY KEY, display_name text,"
                 " avatar_url text)")
    conn.execute("INSERT INTO profiles VALUES (%s, NULL, NULL)", (user.user_id,))
    handlers = {"matrix": {"url": synapse.url, "token": synapse.admin.token,
                           "export_root": str(tmp_path / "exports"), "profile_table": "profiles"}}
    configured = Settings(settings.values, settings.sources, {"handlers": handlers},
                          settings.config_file).with_overrides(**FAST)
    export = queue.add("matrix:user-export", {"userId": user.user_id})
    sync = queue.add("matrix:sync-profile", {"userId": user.user_id, "direction": "from_matrix"})
    forbidden = queue.add("matrix:user-export", {"userId": "@ghost:localhost"})
    service = WorkerService(configured)
    service.start()
    try:
        exported = wait_for(conn, export.id)
        synced = wait_for(conn, sync.id)
        missing = wait_for(conn, forbidden.id)
    finally:
        service.stop(timeout=1.0)

    assert exported["status"] == "completed", exported["error"]
    assert exported["result"]["counts"] == {"rooms": 1, "messages": 1, "media": 0}
    document = json.loads(Path(exported["result"]["path"]).read_text())
    assert document["rooms"][0]["messages"][0]["content"]["body"] == "through the worker"
    assert synced["status"] == "completed", synced["error"]
    assert conn.execute("SELECT display_name FROM profiles").fetchone() == {"display_name": "Via Worker"}
    # A 404 is permanent: failed after one attempt, with the homeserver's answer.
    assert missing["status"] == "failed" and missing["attempts"] == 1
    assert "HTTP 404" in missing["error"]
