"""A directory swapped for a symlink, over and over, while file jobs run on a file inside it:
nothing is ever read from or written outside the root."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import haosq.handlers.files  # noqa: F401  (registers the file:* handlers in this process)
from haosq.config import Settings
from haosq.daemon.service import WorkerService
from haosq.errors import PermanentError
from haosq.handlers.files import compress_media, generate_thumbnails, process_upload

pytest_plugins = ["tests.handlers.peers_files"]

INSIDE_SIZE, OUTSIDE_SIZE = (64, 32), (32, 64)  # what a job read shows in the sizes it reports

# Runs in its own process (true concurrency, no GIL shared with the jobs): swaps ROOT/album
# for a symlink to OUTSIDE/album and back while the flag file exists, then leaves the real
# directory in place and prints how many swaps it made.
SWAPPER = """
import os, sys
root, outside, flag = sys.argv[1:4]
album, aside = os.path.join(root, "album"), os.path.join(root, "album.real")
swaps = 0
while os.path.exists(flag):
    os.rename(album, aside)
    os.symlink(os.path.join(outside, "album"), album)
    swaps += 1
    os.unlink(album)
    os.rename(aside, album)
print(swaps)
"""

# What a refusal may say when the job met the symlink (or the moment the directory was aside).
REFUSALS = ("a symlink, which is never followed", "does not exist", "was replaced while it was being opened",
            "changed while it was being opened", "was replaced or removed")


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


class Swapper:
    def __init__(self, root: Path, outside: Path, flag: Path) -> None:
        self.flag = flag
        flag.touch()
        self.process = subprocess.Popen([sys.executable, "-c", SWAPPER, str(root), str(outside), str(flag)],
                                        stdout=subprocess.PIPE, text=True)

    def stop(self) -> int:
        self.flag.unlink(missing_ok=True)
        out, _ = self.process.communicate(timeout=30)
        assert self.process.returncode == 0
        return int(out)


@pytest.fixture
def swapped_album(file_area, tmp_path: Path) -> Iterator[dict[str, Any]]:
    root, outside = file_area.root, tmp_path / "outside"
    (root / "album").mkdir()
    (outside / "album").mkdir(parents=True)
    Image.new("RGB", INSIDE_SIZE, "red").save(root / "album" / "photo.png")
    # Noise makes the outside file much larger, so that a size read also tells which was read.
    Image.effect_noise(OUTSIDE_SIZE, 100).convert("RGB").save(outside / "album" / "photo.png")
    inside_bytes = (root / "album" / "photo.png").stat().st_size
    assert (outside / "album" / "photo.png").stat().st_size > 2 * inside_bytes
    before = snapshot(outside)
    swapper = Swapper(root, outside, tmp_path / "swapping")
    state: dict[str, Any] = {"root": root, "outside": outside, "swapper": swapper,
                             "inside_bytes": inside_bytes}
    try:
        yield state
    finally:
        if swapper.process.poll() is None:
            state["swaps"] = swapper.stop()
    assert snapshot(outside) == before, "something was written outside the root"
    assert not (root / "album").is_symlink()


def test_jobs_racing_a_symlink_swap_never_leave_the_root(swapped_album, file_area, job_context):
    table = {"files": {"roots": [str(file_area.root)], "thumbnail_sizes": [32]}}  # outputs go next to it
    inside_bytes = swapped_album["inside_bytes"]

    def upload_read(result: dict[str, Any]) -> tuple[int, int]:
        return result["metadata"]["width"], result["metadata"]["height"]

    def thumbnail_read(result: dict[str, Any]) -> tuple[int, int]:
        return result["thumbnails"][0]["width"] * 2, result["thumbnails"][0]["height"] * 2

    def compress_read(result: dict[str, Any]) -> tuple[int, int]:
        return INSIDE_SIZE if result["sizeBefore"] == inside_bytes else OUTSIDE_SIZE

    upload = {"fileId": "p", "filePath": "album/photo.png", "contentType": "image/png",
              "enqueueFollowups": False}
    compress = {"filePath": str(file_area.root / "album" / "photo.png"), "format": "webp", "quality": 1}
    jobs = [(process_upload, upload, upload_read),
            (generate_thumbnails, {"filePath": "album/photo.png"}, thumbnail_read),
            (compress_media, compress, compress_read)]
    contexts = {run: job_context("file:" + run.__name__.replace("_", "-"), payload, table)
                for run, payload, _ in jobs}
    read: dict[str, list[tuple[int, int]]] = {run.__name__: [] for run, _, _ in jobs}
    refused: list[str] = []
    deadline = time.monotonic() + 60
    rounds = 0
    # Until every job has succeeded at least once and the swap has refused at least one.
    while rounds < 150 or not (all(read.values()) and refused):
        assert time.monotonic() < deadline, f"after {rounds} rounds: {read}, {len(refused)} refused"
        for run, payload, seen in jobs:
            try:
                result = run(payload, contexts[run])
            except PermanentError as exc:
                assert any(reason in str(exc) for reason in REFUSALS), str(exc)
                refused.append(str(exc))
            else:
                read[run.__name__].append(seen(result))
        rounds += 1
    swaps = swapped_album["swapper"].stop()

    assert swaps > 0
    assert {size for sizes in read.values() for size in sizes} == {INSIDE_SIZE}, \
        "a job read the image outside the root"
    album = file_area.root / "album"
    with Image.open(album / "photo.thumb-32.webp") as thumb:
        assert thumb.size == (32, 16)
        assert thumb.convert("RGB").getpixel((16, 8))[0] > 200  # red: rendered from the inside image
    assert not [p for p in album.iterdir() if p.name.endswith(".part")]


FAST = {"worker.heartbeat_interval_ms": 200, "worker.poll_interval_ms": 50,
        "worker.shutdown_timeout_seconds": 1.0, "worker.types": "file", "worker.concurrency": 2}


def test_a_real_worker_racing_a_symlink_swap_never_leaves_the_root(swapped_album, file_area, queue, conn,
                                                                   settings: Settings):
    handlers = {"files": {"roots": [str(file_area.root)], "thumbnail_sizes": [32]}}
    ids = [queue.add("file:generate-thumbnails", {"filePath": "album/photo.png"}, max_attempts=1).id
           for _ in range(3)]
    ids += [queue.add("file:process-upload", {"fileId": "w", "filePath": "album/photo.png",
                                              "contentType": "image/png", "enqueueFollowups": False},
                      max_attempts=1).id for _ in range(3)]
    service = WorkerService(Settings(settings.values, settings.sources, {"handlers": handlers},
                                     settings.config_file).with_overrides(**FAST))
    service.start()
    try:
        deadline = time.monotonic() + 90
        while True:
            rows = conn.execute("SELECT * FROM haosq.jobs WHERE id = ANY(%s)", (ids,)).fetchall()
            if all(row["status"] in ("completed", "failed") for row in rows):
                break
            assert time.monotonic() < deadline, [row["status"] for row in rows]
            time.sleep(0.05)
    finally:
        swapped_album["swapper"].stop()
        service.stop(timeout=1.0)
    for row in rows:
        result = row["result"]
        if row["status"] == "failed":
            assert any(reason in row["error"] for reason in REFUSALS), row["error"]
        elif row["type"] == "file:process-upload":
            assert (result["metadata"]["width"], result["metadata"]["height"]) == INSIDE_SIZE
        else:
            assert (result["thumbnails"][0]["width"], result["thumbnails"][0]["height"]) == (32, 16)
