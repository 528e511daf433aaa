"""Limits on the total work of a file job, checked before decoding, on real crafted files:
animated images (frames x pixels), video (resolution, frames, duration), archives, and the
memory cap of the process executor's child."""

from __future__ import annotations

import io
import re
import resource
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

import haosq.handlers.files  # noqa: F401  (registers the file:* handlers in this process)
from haosq.config import Settings
from haosq.daemon.service import WorkerService
from haosq.errors import PermanentError
from haosq.handlers.childlimits import cap_memory
from haosq.handlers.files import compress_media, generate_thumbnails, process_upload
from haosq.handlers.imageheaders import ImageWork, measure
from haosq.queue import JobQueue
from tests.handlers.budget import run_measured
from tests.handlers.file_samples import (
    make_avi_declaring,
    make_bomb_png,
    make_gif_bomb,
    make_mjpeg_mkv,
    make_video,
)

pytest_plugins = ["tests.handlers.peers_files"]

HANDLERS: dict[str, Callable[..., dict[str, Any]]] = {
    "file:process-upload": process_upload, "file:generate-thumbnails": generate_thumbnails,
    "file:compress-media": compress_media,
}


def payloads(path: Path, content_type: str) -> dict[str, dict[str, Any]]:
    return {
        "file:process-upload": {"fileId": "b", "filePath": str(path), "contentType": content_type,
                                "enqueueFollowups": False},
        "file:generate-thumbnails": {"filePath": str(path), "sizes": [64]},
        "file:compress-media": {"filePath": str(path), "format": "webp"},
    }


def with_handlers(settings: Settings, handlers: dict[str, Any]) -> Settings:
    return Settings(settings.values, settings.sources, {**settings.sections, "handlers": handlers},
                    settings.config_file)


def run_in_worker(queue: JobQueue, conn, settings: Settings, handlers: dict[str, Any], job_type: str,
                  payload: dict[str, Any]) -> dict[str, Any]:
    """The job's row once a real worker (process executor) has finished it."""
    job = queue.add(job_type, payload, max_attempts=5)
    service = WorkerService(with_handlers(settings, handlers).with_overrides(
        **{"worker.heartbeat_interval_ms": 200, "worker.poll_interval_ms": 50,
           "worker.shutdown_timeout_seconds": 1.0, "worker.types": "file"}))
    service.start()
    try:
        deadline = time.monotonic() + 60
        while (row := conn.execute("SELECT * FROM haosq.jobs WHERE id = %s", (job.id,)).fetchone())[
                "status"] not in ("failed", "completed"):
            assert time.monotonic() < deadline, row["status"]
            time.sleep(0.05)
    finally:
        service.stop(timeout=1.0)
    return dict(row)



# -- animated images ---------------------------------------------------------------------------


def test_the_frames_of_a_gif_bomb_are_counted_from_its_headers(tmp_path):
    bomb = make_gif_bomb(tmp_path / "bomb.gif")  # 60 frames of 3000x3000
    assert bomb.stat().st_size < 600_000
    with open(bomb, "rb") as source:
        assert measure(source) == ImageWork(60, 3000, 3000, 60 * 9_000_000)


@pytest.mark.parametrize("job_type", sorted(HANDLERS))
def test_a_gif_bomb_fails_at_once_within_a_small_time_and_memory_budget(
        job_type, file_area, queue: JobQueue, settings: Settings):
    bomb = make_gif_bomb(file_area.root / "bomb.gif")
    job = queue.add(job_type, payloads(bomb, "image/gif")[job_type])

    measured = run_measured(job, with_handlers(settings, {"files": file_area.table()}))

    assert measured.error == (
        "PermanentError: image refused as a decompression bomb: bomb.gif is 60 frames of 3000x3000 = "
        "540000000 pixels to decode, over max_image_total_pixels = 100000000")
    assert measured.seconds < 2.0
    assert measured.peak_mb < 50
    assert not file_area.output.exists()


def test_a_gif_bomb_fails_permanently_through_a_real_worker(file_area, queue: JobQueue, conn,
                                                             settings: Settings):
    bomb = make_gif_bomb(file_area.root / "bomb.gif")
    row = run_in_worker(queue, conn, settings, {"files": file_area.table()}, "file:compress-media",
                        {"filePath": str(bomb), "format": "webp"})
    assert (row["status"], row["attempts"]) == ("failed", 1)  # permanent: no retry (of 5 allowed)
    assert "max_image_total_pixels" in row["error"]


def test_a_gif_whose_frames_reach_past_its_screen_is_measured_by_its_frames(file_area, job_context):
    # A 10x10 logical screen; Pillow grows the canvas to what the frames cover (2000x2000).
    bomb = make_gif_bomb(file_area.root / "sneaky.gif", 2000, 2000, frames=30)
    data = bytearray(bomb.read_bytes())
    data[6:10] = struct.pack("<HH", 10, 10)
    bomb.write_bytes(data)
    payload = payloads(bomb, "image/gif")["file:process-upload"]
    with pytest.raises(PermanentError, match=r"30 frames of 2000x2000 = 120000000 pixels"):
        process_upload(payload, job_context("file:process-upload", payload, {"files": file_area.table()}))


def animated(path: Path, fmt: str, frames: int, size: tuple[int, int] = (100, 80), **options: Any) -> Path:
    images = [Image.new("RGB", size, (index * 20 % 256, 90, 160)) for index in range(frames)]
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:], duration=50, **options)
    return path


@pytest.mark.parametrize(("name", "fmt", "content_type", "options"), [
    ("anim.gif", "GIF", "image/gif", {}), ("anim.png", "PNG", "image/png", {}),
    ("anim.webp", "WEBP", "image/webp", {}), ("pages.tif", "TIFF", "image/tiff", {}),
    ("pages.btf", "TIFF", "image/tiff", {"big_tiff": True}),
])
def test_every_format_with_frames_is_held_to_frames_times_pixels(name, fmt, content_type, options, file_area,
                                                                  job_context):
    path = animated(file_area.root / name, fmt, frames=7, **options)
    with open(path, "rb") as source, Image.open(path) as image:
        work = measure(source)
        assert work == ImageWork(image.n_frames, 100, 80, image.n_frames * 8000) and image.n_frames == 7
    payload = payloads(path, content_type)["file:compress-media"]
    ctx = job_context("file:compress-media", payload, {"files": file_area.table()})
    assert compress_media(payload, ctx)["kind"] == "image"  # within the defaults: compressed

    for limits, message in [({"max_image_total_pixels": 50_000}, "7 frames of 100x80 = 56000 pixels"),
                            ({"max_image_frames": 6}, "has 7 frames, over max_image_frames = 6"),
                            ({"max_image_pixels": 7_999}, "8000 pixels per frame, over max_image_pixels")]:
        for job_type in ("file:process-upload", "file:compress-media", "file:generate-thumbnails"):
            payload = payloads(path, content_type)[job_type]
            ctx = job_context(job_type, payload, {"files": file_area.table(**limits)})
            with pytest.raises(PermanentError, match=message):
                HANDLERS[job_type](payload, ctx)


def test_an_apng_declaring_more_frames_than_it_holds_is_held_to_what_it_declares(file_area, job_context):
    path = animated(file_area.root / "liar.png", "PNG", frames=3)
    data = bytearray(path.read_bytes())
    at = data.index(b"acTL")
    data[at + 4:at + 8] = struct.pack(">I", 5_000_000)
    data[at + 12:at + 16] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 12])) & 0xFFFFFFFF)
    path.write_bytes(data)
    payload = payloads(path, "image/png")["file:process-upload"]
    with pytest.raises(PermanentError, match="has 5000000 frames, over max_image_frames = 1000"):
        process_upload(payload, job_context("file:process-upload", payload, {"files": file_area.table()}))


def test_a_tiff_of_many_pages_is_held_to_the_pixels_of_all_pages(file_area, job_context):
    pages = [Image.new("L", (1000, 1000 + index)) for index in range(120)]
    path = file_area.root / "scan.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:], compression="tiff_deflate")
    assert path.stat().st_size < 2_000_000
    payload = payloads(path, "image/tiff")["file:process-upload"]
    with pytest.raises(PermanentError, match=r"120 frames of 1000x1119 = 127140000 pixels to decode"):
        process_upload(payload, job_context("file:process-upload", payload, {"files": file_area.table()}))


def test_a_single_frame_bomb_is_still_refused_per_frame(file_area, job_context):
    bomb = make_bomb_png(file_area.root / "bomb.png")
    payload = payloads(bomb, "image/png")["file:generate-thumbnails"]
    with pytest.raises(PermanentError, match="40000x40000 = 1600000000 pixels per frame"):
        generate_thumbnails(payload, job_context("file:generate-thumbnails", payload,
                                                 {"files": file_area.table()}))


# -- video -------------------------------------------------------------------------------------


def test_a_video_declaring_a_huge_frame_is_refused_before_decoding(file_area, queue: JobQueue,
                                                                   settings: Settings):
    video = make_avi_declaring(file_area.root / "huge.avi", 16000, 16000)
    assert video.stat().st_size < 50_000
    for job_type in sorted(HANDLERS):
        job = queue.add(job_type, payloads(video, "video/x-msvideo")[job_type])
        measured = run_measured(job, with_handlers(settings, {"files": file_area.table()}))
        assert measured.error == (
            "PermanentError: video refused: huge.avi declares 16000x16000 = 256000000 pixels per frame, "
            "over max_video_pixels = 35389440"), job_type
        assert measured.seconds < 2.0 and measured.peak_mb < 50
    assert not file_area.output.exists()


@pytest.mark.parametrize(("limits", "message"), [
    ({"max_video_frames": 40}, "declares 48 frames, over max_video_frames = 40"),
    ({"max_video_duration": 1.5}, "declares 2 s, over max_video_duration = 1.5"),
    ({"max_video_total_pixels": 3_000_000}, "declares 48 frames of 320x240 = 3686400 pixels to decode"),
    ({"max_video_pixels": 76_799}, "320x240 = 76800 pixels per frame, over max_video_pixels = 76799"),
])
def test_a_video_declaring_more_than_the_limits_is_refused_before_decoding(limits, message, file_area,
                                                                           job_context):
    video = make_video(file_area.root / "clip.mp4", seconds=2.0, size=(320, 240))
    for job_type in sorted(HANDLERS):
        payload = payloads(video, "video/mp4")[job_type]
        with pytest.raises(PermanentError, match=message):
            HANDLERS[job_type](payload, job_context(job_type, payload, {"files": file_area.table(**limits)}))
    assert not file_area.output.exists()


def test_a_frame_larger_than_the_container_declares_is_refused_while_decoding(file_area, job_context):
    # Declared 64x64 throughout; the third frame is a 4000x4000 JPEG.
    video = make_mjpeg_mkv(file_area.root / "grows.mkv", [(64, 64), (64, 64), (4000, 4000)])
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 64)
    table = {"files": file_area.table(max_video_pixels=1_000_000)}
    upload = payloads(video, "video/x-matroska")["file:process-upload"]
    checked = process_upload(upload, job_context("file:process-upload", upload, table))
    assert checked["metadata"]["width"] == 64
    for job_type, payload in (("file:compress-media", {"filePath": str(video)}),
                              ("file:generate-thumbnails", {"filePath": str(video), "offsetSeconds": 0.25})):
        with pytest.raises(PermanentError, match=r"video grows\.mkv .*max_video_pixels = 1000000 are "
                                                 "refused while decoding"):
            HANDLERS[job_type](payload, job_context(job_type, payload, table))


def test_frames_past_the_limit_are_refused_while_decoding_a_stream_that_declares_none(file_area,
                                                                                     job_context):
    video = make_mjpeg_mkv(file_area.root / "stream.mkv", [(64, 64)] * 48, seekable=False)
    with av.open(str(video)) as container:
        assert (container.duration, container.streams.video[0].frames) == (None, 0)  # nothing declared
    payload = {"filePath": str(video)}
    ctx = job_context("file:compress-media", payload, {"files": file_area.table(max_video_frames=40)})
    with pytest.raises(PermanentError, match=r"decoding: stream\.mkv has more than max_video_frames = 40"):
        compress_media(payload, ctx)
    ctx = job_context("file:compress-media", payload, {"files": file_area.table()})
    assert compress_media(payload, ctx)["frames"] == 48


# -- the memory cap of the child process ---------------------------------------------------------


def test_a_job_past_its_memory_cap_fails_permanently_and_the_worker_carries_on(file_area, queue: JobQueue,
                                                                               conn, settings: Settings):
    # 49 million pixels: within every pixel limit, but its decoding needs more than 150 MB.
    heavy = make_bomb_png(file_area.root / "heavy.png", 7000, 7000, complete=True)
    handlers = {"files": file_area.table(max_memory="150M")}
    row = run_in_worker(queue, conn, settings, handlers, "file:compress-media",
                        {"filePath": str(heavy), "format": "webp"})
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["error"].splitlines()[0] == ("PermanentError: the file needs more memory than the job may use "
                            "(max_memory = 157286400 bytes); raise [handlers.files] max_memory to process it")
    small = make_bomb_png(file_area.root / "small.png", 700, 700, complete=True)
    row = run_in_worker(queue, conn, settings, handlers, "file:compress-media",
                        {"filePath": str(small), "format": "webp"})
    assert row["status"] == "completed", row["error"]


def test_the_memory_cap_is_never_set_outside_a_jobs_child(file_area, job_context):
    before = resource.getrlimit(resource.RLIMIT_DATA)
    assert cap_memory(1024**2) is False
    small = make_bomb_png(file_area.root / "small.png", 700, 700, complete=True)
    payload = {"filePath": str(small), "format": "webp"}
    ctx = job_context("file:compress-media", payload, {"files": file_area.table(max_memory="1M")})
    assert compress_media(payload, ctx)["kind"] == "image"  # in this (worker-like) process: no cap
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


# -- archives ----------------------------------------------------------------------------------


def nested_zip_bomb(path: Path, width: int = 16, entry_size: int = 10 * 1024**2) -> Path:
    """A zip of `width` zips of `width` entries of zeros: 2.5 GiB declared for the defaults,
    about 3 MB on disk."""
    zeros = io.BytesIO()
    with zipfile.ZipFile(zeros, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as inner:
        block = bytes(entry_size)
        for index in range(width):
            inner.writestr(f"zeros-{index}.bin", block)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as outer:
        for index in range(width):
            outer.writestr(f"layer-{index}.zip", zeros.getvalue())
    return path


@pytest.mark.parametrize(("limits", "message"), [
    ({}, r"entry 'zeros-0\.bin' expands \d+x, over the ratio limit of 100"),
    ({"archive_max_ratio": 10**9}, "uncompressed size exceeds 1073741824 bytes"),
    ({"archive_max_ratio": 10**9, "archive_max_total_size": "10G", "archive_max_entries": 100},
     "more than 100 entries"),
])
def test_a_nested_zip_bomb_is_refused_within_a_small_time_and_memory_budget(limits, message, file_area,
                                                                             queue: JobQueue, settings):
    bomb = nested_zip_bomb(file_area.root / "bomb.zip")
    assert bomb.stat().st_size < 5_000_000
    job = queue.add("file:process-upload", payloads(bomb, "application/zip")["file:process-upload"])
    measured = run_measured(job, with_handlers(settings, {"files": file_area.table(**limits)}))
    assert measured.error is not None
    assert measured.error.startswith("PermanentError: filePath: archive refused")
    assert re.search(message, measured.error), measured.error
    assert measured.seconds < 5.0 and measured.peak_mb < 100
