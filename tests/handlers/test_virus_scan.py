"""file:virus-scan against a real clamd with a signature database written by the test."""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from pathlib import Path

import pytest

from haosq.errors import PermanentError, Retry
from haosq.handlers.files import virus_scan
from tests.handlers.file_samples import EICAR, HAOSQ_MARKER, HAOSQ_SIGNATURE, make_zip_of_zeros, zip_bytes

pytest_plugins = ["tests.handlers.peers_files"]


@pytest.fixture
def scan(clamd, file_area, job_context):
    def run(path: Path, **settings) -> dict:
        table = file_area.table(clamd_config=str(clamd.config), **{"clamd_address": str(clamd.socket),
                                                                    **settings})
        payload = {"fileId": "u1", "filePath": str(path)}
        return virus_scan(payload, job_context("file:virus-scan", payload, {"files": table}))

    return run


def test_a_clean_file_is_clean(scan, file_area):
    document = file_area.root / "notes.txt"
    document.write_text("nothing to see here\n" * 100)
    result = scan(document)
    assert result["status"] == "clean"
    assert result["signature"] is None and result["reason"] is None
    assert document.exists()


def test_eicar_is_quarantined_and_the_signature_named(scan, file_area, conn):
    infected = file_area.root / "eicar.com"
    infected.write_bytes(EICAR)

    result = scan(infected)

    assert result["status"] == "infected"
    assert result["signature"].startswith("Eicar-Test-Signature")
    quarantined = Path(result["quarantinePath"])
    assert not infected.exists()
    assert quarantined.parent == file_area.quarantine
    assert quarantined.read_bytes() == EICAR
    assert stat.S_IMODE(quarantined.stat().st_mode) == 0o400
    logged = conn.execute("SELECT level, metadata FROM haosq.job_logs ORDER BY id DESC LIMIT 1").fetchone()
    assert logged["level"] == "warn" and logged["metadata"]["signature"] == result["signature"]


def test_clamd_over_tcp(scan, clamd, file_area):
    infected = file_area.root / "eicar.txt"
    infected.write_bytes(EICAR)
    result = scan(infected, clamd_address=f"tcp://{clamd.tcp_address}")
    assert result["status"] == "infected" and not infected.exists()
    clean = file_area.root / "clean.txt"
    clean.write_text("fine")
    assert scan(clean, clamd_address=clamd.tcp_address)["status"] == "clean"


def test_a_marker_inside_an_archive_is_found(scan, file_area):
    archive = file_area.root / "bundle.zip"
    archive.write_bytes(zip_bytes({"readme.txt": b"hello", "payload.bin": b"xx" + HAOSQ_MARKER + b"yy"}))
    result = scan(archive)
    assert result["status"] == "infected"
    assert result["signature"].startswith(HAOSQ_SIGNATURE)


def test_infected_without_a_quarantine_directory_fails_and_leaves_the_file(clamd, file_area, job_context):
    infected = file_area.root / "eicar.txt"
    infected.write_bytes(EICAR)
    table = {"roots": [str(file_area.root)], "clamd_address": str(clamd.socket)}
    payload = {"filePath": str(infected)}
    with pytest.raises(PermanentError, match=r"infected .*Eicar.* no quarantine directory"):
        virus_scan(payload, job_context("file:virus-scan", payload, {"files": table}))
    assert infected.read_bytes() == EICAR


def test_a_200mb_zip_past_max_file_size_is_not_scanned_although_clamd_says_ok(scan, clamd, file_area):
    archive = make_zip_of_zeros(file_area.root / "zeros.zip", 200 * 1024 * 1024)
    # clamd itself answers OK: it skipped what lies past MaxFileSize.
    with open(archive, "rb") as stream:
        assert clamd.client.instream(stream).ok

    result = scan(archive)

    assert result["status"] == "not_scanned"
    assert "MaxFileSize" in result["reason"]
    assert archive.exists()


def test_an_archive_whose_entry_passes_max_file_size_is_not_scanned(scan, clamd, file_area):
    # A small zip (deflated zeros) holding one 64 MB entry: clamd says OK without scanning it.
    buffer = io.BytesIO()
    with (zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
          archive.open("zeros.bin", "w", force_zip64=True) as entry):
        for _ in range(64):
            entry.write(bytes(1024 * 1024))
    small = file_area.root / "small.zip"
    small.write_bytes(buffer.getvalue())
    assert small.stat().st_size < clamd.max_file_size
    assert clamd.client.instream(io.BytesIO(small.read_bytes())).ok

    result = scan(small)

    assert result["status"] == "not_scanned"
    assert "archive" in result["reason"]


def test_too_many_archive_entries_for_clamd_is_not_scanned(scan, file_area):
    many = file_area.root / "many.zip"
    many.write_bytes(zip_bytes({f"f{i}.txt": b"x" for i in range(60)}))  # clamd MaxFiles is 50
    result = scan(many)
    assert result["status"] == "not_scanned"
    assert "more than 50 entries" in result["reason"]


def test_a_file_longer_than_the_stream_limit_is_not_scanned(scan, file_area):
    big = file_area.root / "big.bin"
    big.write_bytes(zlib.compress(bytes(4096)) * 100)
    result = scan(big, clamd_stream_max_length="1K")
    assert result["status"] == "not_scanned"
    assert "StreamMaxLength" in result["reason"]


def test_clamd_unreachable_means_retry_never_clean(file_area, job_context, tmp_path):
    document = file_area.root / "doc.txt"
    document.write_text("hello")
    for address in (str(tmp_path / "no-such.sock"), "127.0.0.1:1"):
        table = file_area.table(clamd_address=address)
        payload = {"filePath": str(document)}
        ctx = job_context("file:virus-scan", payload, {"files": table}, attempt=2)
        with pytest.raises(Retry, match="clamd unreachable") as raised:
            virus_scan(payload, ctx)
        assert raised.value.after == 30.0
    assert document.exists()


def test_no_clamd_configured_is_a_clear_permanent_error(file_area, job_context):
    document = file_area.root / "doc.txt"
    document.write_text("hello")
    payload = {"filePath": str(document)}
    with pytest.raises(PermanentError, match="no clamd is configured"):
        virus_scan(payload, job_context("file:virus-scan", payload, {"files": file_area.table()}))
