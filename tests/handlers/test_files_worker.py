"""The file jobs through a real worker: the process executor, follow-up jobs, the timeout kill."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import haosq.handlers.files  # noqa: F401  (registers the file:* handlers in this process)
from haosq.config import Settings
from haosq.daemon.service import WorkerService
from haosq.queue import JobQueue
from tests.handlers.file_samples import gps_exif, make_bomb_png, make_image

pytest_plugins = ["tests.handlers.peers_files"]

FAST = {"worker.heartbeat_interval_ms": 200, "worker.poll_interval_ms": 50,
        "worker.shutdown_timeout_seconds": 1.0, "worker.types": "file", "worker.concurrency": 2}


@pytest.fixture
def file_worker(settings: Settings) -> Iterator[Callable[[dict[str, Any]], WorkerService]]:
    services: list[WorkerService] = []

    def start(handlers: dict[str, Any]) -> WorkerService:
        configured = Settings(settings.values, settings.sources, {"handlers": handlers},
                              settings.config_file).with_overrides(**FAST)
        service = WorkerService(configured)
        services.append(service)
        service.start()
        return service

    yield start
    for service in services:
        service.stop(timeout=1.0)


def wait_for(conn: psycopg.Connection, job_id: int, *statuses: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT * FROM haosq.jobs WHERE id = %s", (job_id,)).fetchone()
        if row["status"] in statuses:
            return row
        assert time.monotonic() < deadline, f"job {job_id} is still {row['status']}"
        time.sleep(0.05)


def spawned_children() -> list[int]:
    """Live children of this process started by multiprocessing's spawn (the job children)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] != "Z" and b"spawn_main" in cmdline:
            children.append(int(entry.name))
    return children


def test_upload_thumbnails_and_scan_run_in_children_of_a_real_worker(
        queue: JobQueue, conn, file_worker, file_area, clamd):
    photo = make_image(file_area.root / "photo.jpg", (400, 300), exif=gps_exif(orientation=6))
    handlers = {"files": file_area.table(clamd_address=str(clamd.socket), clamd_config=str(clamd.config))}
    common = {"fileId": "f-1", "filePath": str(photo)}
    upload = queue.add("file:process-upload", {**common, "contentType": "image/jpeg",
                                               "enqueueFollowups": False})
    thumbs = queue.add("file:generate-thumbnails", common)
    scan = queue.add("file:virus-scan", common)
    file_worker(handlers)

    row = wait_for(conn, upload.id, "completed", "failed")
    assert row["status"] == "completed", row["error"]
    assert row["result"]["metadata"]["orientation"] == 6
    assert "upload checked" in [entry.message for entry in queue.logs(upload.id)]
    row = wait_for(conn, thumbs.id, "completed", "failed")
    assert row["status"] == "completed", row["error"]
    assert [(t["width"], t["height"]) for t in row["result"]["thumbnails"]] == [(96, 128), (300, 400)]
    row = wait_for(conn, scan.id, "completed", "failed")
    assert row["status"] == "completed", row["error"]
    assert row["result"]["status"] == "clean"


def test_upload_followups_are_enqueued_when_the_upload_completes(
        queue: JobQueue, conn, file_worker, file_area):
    photo = make_image(file_area.root / "photo.jpg", (200, 100))
    upload = queue.add("file:process-upload",
                       {"fileId": "f-2", "filePath": str(photo), "contentType": "image/jpeg"})
    file_worker({"files": file_area.table(upload_followups=["file:generate-thumbnails"])})

    row = wait_for(conn, upload.id, "completed", "failed")
    assert row["status"] == "completed", row["error"]
    followups = conn.execute("SELECT type, payload FROM haosq.jobs WHERE id <> %s", (upload.id,)).fetchall()
    assert followups == [{"type": "file:generate-thumbnails",
                          "payload": {"fileId": "f-2", "filePath": str(photo), "contentType": "image/jpeg"}}]


def wait_for_all(conn: psycopg.Connection, timeout: float = 60) -> list[dict]:
    """Every job once none is pending or processing any more."""
    deadline = time.monotonic() + timeout
    while True:
        rows = conn.execute("SELECT * FROM haosq.jobs ORDER BY id").fetchall()
        if all(row["status"] in ("completed", "failed", "cancelled") for row in rows):
            return rows
        assert time.monotonic() < deadline, [(row["type"], row["status"]) for row in rows]
        time.sleep(0.05)


def test_an_upload_without_clamd_leaves_no_failed_scan_behind(queue: JobQueue, conn, file_worker, file_area):
    photo = make_image(file_area.root / "photo.jpg", (200, 100))
    upload = queue.add("file:process-upload",
                       {"fileId": "f-3", "filePath": str(photo), "contentType": "image/jpeg"})
    file_worker({"files": file_area.table()})  # the default follow-ups, and no clamd_address

    wait_for(conn, upload.id, "completed", "failed")
    rows = wait_for_all(conn)
    assert [(row["type"], row["status"]) for row in rows] == [
        ("file:process-upload", "completed"), ("file:generate-thumbnails", "completed")]
    assert rows[0]["result"]["virusScan"] == "not configured"
    assert any(entry.message.startswith("no virus scan: no clamd is configured")
               for entry in queue.logs(upload.id))


def test_an_upload_with_clamd_is_scanned_after_it_is_checked(queue: JobQueue, conn, file_worker, file_area,
                                                              clamd):
    photo = make_image(file_area.root / "photo.jpg", (200, 100))
    upload = queue.add("file:process-upload",
                       {"fileId": "f-4", "filePath": str(photo), "contentType": "image/jpeg"})
    file_worker({"files": file_area.table(clamd_address=str(clamd.socket), clamd_config=str(clamd.config))})

    wait_for(conn, upload.id, "completed", "failed")
    rows = wait_for_all(conn)
    assert [(row["type"], row["status"]) for row in rows] == [
        ("file:process-upload", "completed"), ("file:generate-thumbnails", "completed"),
        ("file:virus-scan", "completed")]
    assert rows[2]["result"]["status"] == "clean"


def test_a_pathological_file_hits_the_timeout_and_the_child_is_killed(
        queue: JobQueue, conn, file_worker, file_area):
    # 49 million pixels (just under the bomb limit): seconds of encoding, well past a 2 s limit.
    heavy = make_bomb_png(file_area.root / "heavy.png", 7000, 7000, complete=True)
    assert heavy.stat().st_size < 200_000
    job = queue.add("file:compress-media", {"filePath": str(heavy), "format": "avif"},
                    max_attempts=1, timeout=2)
    file_worker({"files": file_area.table()})

    deadline = time.monotonic() + 20
    while not spawned_children():
        assert time.monotonic() < deadline, "no child process was started"
        time.sleep(0.05)
    row = wait_for(conn, job.id, "failed", "completed", timeout=30)

    assert row["status"] == "failed"
    assert "JobTimedOut" in row["error"]
    deadline = time.monotonic() + 5
    while spawned_children():
        assert time.monotonic() < deadline, "the child process outlived the timeout"
        time.sleep(0.05)
    # Killed mid-write: no output under the final name, the temporary file aside at most.
    assert not (file_area.output / "heavy.compressed.avif").exists()
