"""File job configuration and byte sniffing: the rules the handlers rely on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from haosq.errors import PermanentError
from haosq.handlers.file_settings import FileSettings, parse_size
from haosq.handlers.sniff import claim_agrees, detect_bytes
from tests.handlers.file_samples import EICAR


def test_environment_wins_over_the_config_table(tmp_path: Path):
    table = {"roots": ["/nowhere"], "clamd_address": "/run/clamav/clamd.ctl", "max_file_size": "2M"}
    env = {"HAOSQ_FILE_ROOTS": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}",
           "HAOSQ_FILE_OUTPUT_ROOT": str(tmp_path / "out"), "HAOSQ_CLAMD_ADDRESS": "127.0.0.1:3310"}
    settings = FileSettings.load(table, env)
    assert settings.roots == (tmp_path / "a", tmp_path / "b")
    assert settings.output_root == tmp_path / "out"
    assert settings.clamd_address == "127.0.0.1:3310"
    assert settings.max_file_size == 2 * 1024 * 1024


def test_clamd_limits_come_from_its_config_file_and_table_overrides(tmp_path: Path):
    conf = tmp_path / "clamd.conf"
    conf.write_text("LocalSocket /x\nMaxFileSize 5M\nMaxScanSize 20M\n# MaxFiles 3\nMaxRecursion 4\n")
    settings = FileSettings.load({"clamd_config": str(conf), "clamd_max_scan_size": "30M"}, {})
    limits = settings.clamd_limits
    assert (limits.max_file_size, limits.max_scan_size, limits.max_recursion) == (5 << 20, 30 << 20, 4)
    assert limits.max_files == 10_000 and limits.stream_max_length == 25 << 20  # clamd's defaults


@pytest.mark.parametrize(("table", "message"), [
    ({"root": ["/x"]}, "unknown key"),
    ({"max_file_size": "lots"}, "not a size"),
    ({"strip_gps": "yes"}, "true or false"),
    ({"clamd_config": "/no/such/clamd.conf"}, "cannot read clamd config"),
    ({"max_image_frames": 0}, "max_image_frames must be a positive number, not 0"),
    ({"max_video_duration": "long"}, "max_video_duration must be a positive number, not 'long'"),
    ({"max_image_total_pixels": True}, "max_image_total_pixels must be a positive number"),
    ({"max_memory": "lots"}, "max_memory = 'lots' is not a size"),
    ({"max_image_size": 1}, "unknown key"),
])
def test_bad_configuration_is_a_clear_error(table, message):
    with pytest.raises(PermanentError, match=message):
        FileSettings.load(table, {})


def test_the_limits_on_decoding_and_memory_have_defaults_and_can_be_set():
    defaults = FileSettings.load({}, {})
    assert (defaults.image.pixels, defaults.image.frames, defaults.image.total_pixels) == (
        50_000_000, 1_000, 100_000_000)
    assert (defaults.video.pixels, defaults.video.frames, defaults.video.duration,
            defaults.video.total_pixels) == (8192 * 4320, 1_000_000, 21_600.0, 10**12)
    assert defaults.max_memory == 2 * 1024**3
    tuned = FileSettings.load({"max_image_pixels": 1000, "max_image_frames": 5,
                               "max_image_total_pixels": 4000, "max_video_pixels": 77,
                               "max_video_duration": 2.5, "max_memory": "512M"}, {})
    assert (tuned.image.pixels, tuned.image.frames, tuned.image.total_pixels) == (1000, 5, 4000)
    assert (tuned.video.pixels, tuned.video.duration, tuned.video.frames) == (77, 2.5, 1_000_000)
    assert tuned.max_memory == 512 * 1024**2


def test_sizes():
    assert [parse_size(v, "x") for v in (0, 512, "400K", "25M", "2G", "10mb")] == [
        0, 512, 400 << 10, 25 << 20, 2 << 30, 10 << 20]


@pytest.mark.parametrize(("head", "kind"), [
    (b"\xff\xd8\xff\xe0" + bytes(20), "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n" + bytes(20), "image/png"),
    (b"GIF89a" + bytes(20), "image/gif"),
    (b"II*\x00" + bytes(20), "image/tiff"),
    (b"II+\x00\x08\x00\x00\x00" + bytes(20), "image/tiff"),  # BigTIFF
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
    (b"\x00\x00\x00\x20ftypisom" + bytes(20), "video/mp4"),
    (b"\x00\x00\x00\x20ftypqt  " + bytes(20), "video/quicktime"),
    (b"\x1a\x45\xdf\xa3\x01\x00\x00\x00\x00\x00\x00\x1f\x42\x86\x81\x01webm", "video/webm"),
    (b"%PDF-1.7\n", "application/pdf"),
    (b"PK\x03\x04" + bytes(20), "application/zip"),
    (b"\x7fELF\x02\x01\x01", "application/x-executable"),
    (b"MZ\x90\x00", "application/x-executable"),
    ("héllo, wörld\n".encode(), "text/plain"),
    (EICAR, "text/plain"),
    (bytes(range(256)), "application/octet-stream"),
])
def test_types_are_detected_from_bytes(head, kind):
    assert detect_bytes(head) == kind


@pytest.mark.parametrize(("claimed", "detected", "agrees"), [
    ("image/jpeg", "image/jpeg", True),
    ("image/JPG; charset=binary", "image/jpeg", True),
    ("image/jpeg", "image/png", False),
    ("image/png", "application/x-executable", False),
    ("video/mp4", "video/quicktime", True),
    ("audio/mp4", "video/mp4", True),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/zip", True),
    ("text/csv", "text/plain", True),
    ("application/json", "text/plain", True),
    ("application/octet-stream", "image/png", True),
    ("application/x-custom", "application/octet-stream", True),
    ("image/png", "application/octet-stream", False),
    ("text/plain", "application/zip", False),
])
def test_claimed_types_must_agree_with_the_bytes(claimed, detected, agrees):
    assert claim_agrees(claimed, detected) is agrees
