"""Inspecting archives without extracting them: what an upload check and a scan need.

Zip and tar (plain or compressed) listings are walked, nested archives included up to a
depth, and measured against caps: total uncompressed size, compression ratio, entry count and
depth. Entries that could escape an extraction directory (`..`, absolute paths) and links are
refused. Nothing is ever written to disk.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, BinaryIO

from haosq.handlers.file_settings import ArchiveLimits
from haosq.handlers.sniff import HEAD_BYTES, detect_bytes

ARCHIVE_SUFFIXES = (".zip", ".jar", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".tbz2", ".txz")
# A nested archive is read into memory to be inspected; beyond this it is refused instead.
NESTED_READ_LIMIT = 64 * 1024**2


class ArchiveRefused(Exception):
    """The archive breaks a cap or holds a dangerous entry; the message says which."""


@dataclass
class ArchiveSummary:
    entries: int = 0
    total_size: int = 0
    compressed_size: int = 0
    depth: int = 0
    largest_entry: int = 0
    check_names: bool = True

    @property
    def ratio(self) -> float:
        return self.total_size / max(self.compressed_size, 1)

    def as_dict(self) -> dict[str, object]:
        return {"entries": self.entries, "totalSize": self.total_size,
                "compressedSize": self.compressed_size, "ratio": round(self.ratio, 2),
                "depth": self.depth, "largestEntry": self.largest_entry}


# Single-stream compressors: a compressed tar, or one compressed file. The callers close
# what these open, in a `with` block.
COMPRESSED: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    "application/gzip": lambda raw: gzip.GzipFile(fileobj=raw),
    "application/x-bzip2": lambda raw: bz2.BZ2File(raw),
    "application/x-xz": lambda raw: lzma.LZMAFile(raw),  # noqa: SIM115
}
STREAM_CHUNK = 1024 * 1024


def is_archive(detected: str) -> bool:
    """Whether the upload check inspects this file as an archive (zip, tar, compressed)."""
    return detected in ("application/zip", "application/x-tar") or detected in COMPRESSED


def inspect_archive(source: BinaryIO, name: str, limits: ArchiveLimits, *,
                    check_names: bool = True) -> ArchiveSummary:
    """Measure the opened archive `source` against `limits`; raise ArchiveRefused past any of them.

    `check_names=False` only measures (a virus scan compares an archive with clamd's limits,
    and entry names do not change what clamd scans)."""
    summary = ArchiveSummary(compressed_size=os.fstat(source.fileno()).st_size, check_names=check_names)
    source.seek(0)
    _walk(source, name, 1, summary, limits)
    return summary


def _walk(handle: IO[bytes], name: str, depth: int, summary: ArchiveSummary, limits: ArchiveLimits) -> None:
    if depth > limits.max_depth:
        raise ArchiveRefused(f"{name}: archives nested deeper than {limits.max_depth} levels")
    summary.depth = max(summary.depth, depth)
    if zipfile.is_zipfile(handle):
        handle.seek(0)
        _walk_zip(handle, name, depth, summary, limits)
        return
    handle.seek(0)
    compression = detect_bytes(handle.read(HEAD_BYTES))
    handle.seek(0)
    # A compressed stream is measured first: tar stops reading at a block of zeros, so a
    # gigabyte of compressed zeros would otherwise pass as an empty archive.
    stream_size = handle.seek(0, io.SEEK_END)
    handle.seek(0)
    expanded = None
    if compression in COMPRESSED:
        expanded = _measure_stream(handle, compression, stream_size, name, summary, limits)
        handle.seek(0)
    try:
        with tarfile.open(fileobj=handle, mode="r:*") as archive:
            _walk_tar(archive, name, depth, summary, limits)
        return
    except tarfile.ReadError as exc:
        if expanded is None:
            raise ArchiveRefused(f"{name}: not a readable zip or tar archive ({exc})") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveRefused(f"{name}: not a readable zip or tar archive ({exc})") from None
    # Not a tar: one compressed file.
    _count(summary, limits, name, name.rsplit(".", 1)[0], expanded, stream_size)


def _measure_stream(handle: IO[bytes], compression: str, stream_size: int, name: str,
                    summary: ArchiveSummary, limits: ArchiveLimits) -> int:
    """The decompressed size of a stream, decompressing (and discarding) no further than the caps."""
    compressed = max(stream_size, 1)
    size = 0
    try:
        with COMPRESSED[compression](handle) as stream:
            while chunk := stream.read(STREAM_CHUNK):
                size += len(chunk)
                if summary.total_size + size > limits.max_total_size:
                    raise ArchiveRefused(
                        f"{name}: uncompressed size exceeds {limits.max_total_size} bytes")
                if size > 1024 * 1024 and size / compressed > limits.max_ratio:
                    raise ArchiveRefused(f"{name}: expands {size / compressed:.0f}x, "
                                         f"over the ratio limit of {limits.max_ratio:g}")
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ArchiveRefused(f"{name}: unreadable {compression} stream ({exc})") from None
    return size


def _walk_zip(handle: IO[bytes], name: str, depth: int, summary: ArchiveSummary,
              limits: ArchiveLimits) -> None:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRefused(f"{name}: unreadable zip ({exc})") from None
    with archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode) and summary.check_names:
                raise ArchiveRefused(f"{name}: entry {info.filename!r} is a link")
            _count(summary, limits, name, info.filename, info.file_size, info.compress_size)
            if not info.is_dir() and _looks_nested(info.filename):
                if info.file_size > NESTED_READ_LIMIT:
                    raise ArchiveRefused(f"{name}: nested archive {info.filename!r} is too large to inspect")
                with archive.open(info) as inner:
                    data = inner.read(NESTED_READ_LIMIT + 1)
                _walk(io.BytesIO(data), f"{name}/{info.filename}", depth + 1, summary, limits)


def _walk_tar(archive: tarfile.TarFile, name: str, depth: int, summary: ArchiveSummary,
              limits: ArchiveLimits) -> None:
    for member in archive:
        if (member.issym() or member.islnk()) and summary.check_names:
            raise ArchiveRefused(f"{name}: entry {member.name!r} is a link")
        if not (member.isfile() or member.isdir()) and summary.check_names:
            raise ArchiveRefused(f"{name}: entry {member.name!r} is not a file or directory")
        # Tar stores entries uncompressed; the ratio is measured on the whole archive.
        _count(summary, limits, name, member.name, member.size, member.size)
        if member.isfile() and _looks_nested(member.name):
            if member.size > NESTED_READ_LIMIT:
                raise ArchiveRefused(f"{name}: nested archive {member.name!r} is too large to inspect")
            extracted = archive.extractfile(member)
            if extracted is not None:
                data = extracted.read(NESTED_READ_LIMIT + 1)
                _walk(io.BytesIO(data), f"{name}/{member.name}", depth + 1, summary, limits)


def _count(summary: ArchiveSummary, limits: ArchiveLimits, archive: str, entry: str,
           size: int, compressed: int) -> None:
    if summary.check_names:
        _check_entry_name(archive, entry)
    summary.entries += 1
    summary.total_size += size
    summary.largest_entry = max(summary.largest_entry, size)
    if summary.entries > limits.max_entries:
        raise ArchiveRefused(f"{archive}: more than {limits.max_entries} entries")
    if summary.total_size > limits.max_total_size:
        raise ArchiveRefused(
            f"{archive}: uncompressed size exceeds {limits.max_total_size} bytes (at {entry!r})")
    if size > 1024 * 1024 and size / max(compressed, 1) > limits.max_ratio:
        raise ArchiveRefused(
            f"{archive}: entry {entry!r} expands {size / max(compressed, 1):.0f}x, "
            f"over the ratio limit of {limits.max_ratio:g}")
    if summary.total_size > 1024 * 1024 and summary.ratio > limits.max_ratio:
        raise ArchiveRefused(
            f"{archive}: expands {summary.ratio:.0f}x, over the ratio limit of {limits.max_ratio:g}")


def _check_entry_name(archive: str, entry: str) -> None:
    normalised = entry.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise ArchiveRefused(f"{archive}: entry {entry!r} has an absolute path")
    if ".." in posixpath.normpath(normalised).split("/") or ".." in normalised.split("/"):
        raise ArchiveRefused(f"{archive}: entry {entry!r} climbs out of the archive with '..'")


def _looks_nested(entry: str) -> bool:
    return entry.lower().endswith(ARCHIVE_SUFFIXES)
