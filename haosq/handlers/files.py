"""The `file:*` job types: upload checks, thumbnails, media compression, virus scans.

Paths must lie under the configured roots (`[handlers.files] roots` or HAOSQ_FILE_ROOTS) and
are opened there by directory descriptor (haosq.handlers.pathguard: no symlink is followed at
any step); outputs are written atomically next to the original or mirrored under
`output_root`, with the original's permission bits and group; originals are modified only
when the payload asks (`modifyOriginal`, `replaceOriginal`). All four run in the process
executor, so that a pathological file that makes a decoder spin is killed at the job's
timeout instead of holding a worker thread forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal

from pydantic import Field

from haosq.errors import PermanentError, Retry
from haosq.handlers import media
from haosq.handlers.archives import ArchiveRefused, inspect_archive, is_archive
from haosq.handlers.childlimits import cap_memory
from haosq.handlers.clamd import ClamdClient, ClamdError, ClamdUnavailable
from haosq.handlers.file_settings import ArchiveLimits, FileSettings
from haosq.handlers.pathguard import Opened, Output, Roots, atomic_output, move, output_directory
from haosq.handlers.payloads import Payload, parse_payload
from haosq.handlers.registry import JobContext, handler
from haosq.handlers.sniff import claim_agrees, detect_file

HASH_CHUNK = 1024 * 1024


def file_settings(ctx: JobContext) -> FileSettings:
    return FileSettings.load(ctx.handler_settings("files"))


def file_roots(settings: FileSettings) -> Roots:
    return Roots.of(settings.require_roots(), field="filePath", what="file root")


def _kind(content_type: str) -> str:
    return content_type.split("/", 1)[0]


def _sha256(source: BinaryIO) -> str:
    digest = hashlib.sha256()
    source.seek(0)
    while chunk := source.read(HASH_CHUNK):
        digest.update(chunk)
    source.seek(0)
    return digest.hexdigest()


def _stem_and_suffix(name: str) -> tuple[str, str]:
    stem, dot, suffix = name.rpartition(".")
    return (stem, dot + suffix) if stem else (name, "")


@contextlib.contextmanager
def _output_directory(opened: Opened, settings: FileSettings, *, in_place: bool = False) -> Iterator[int]:
    """Where outputs derived from `opened` go: its own directory (the descriptor it was opened
    through) when they replace it or when there is no output_root, else the same place
    mirrored under output_root."""
    if in_place or settings.output_root is None:
        yield opened.dir_fd
        return
    with output_directory(settings.output_root, opened.below.parts[:-1], what="output_root") as fd:
        yield fd


def _output_path(opened: Opened, settings: FileSettings, name: str) -> str:
    if settings.output_root is None:
        return os.path.join(os.path.dirname(opened.path), name)
    return os.path.join(settings.output_root, *opened.below.parts[:-1], name)


@contextlib.contextmanager
def _memory_capped(settings: FileSettings) -> Iterator[None]:
    """The job's memory capped at max_memory (in the process executor's child); running out
    of it fails the job, permanently: the same file would run out again."""
    capped = cap_memory(settings.max_memory)
    try:
        yield
    except MemoryError:
        cap = f"max_memory = {settings.max_memory} bytes" if capped else "the memory available"
        raise PermanentError(f"the file needs more memory than the job may use ({cap}); raise "
                             "[handlers.files] max_memory to process it") from None


def _log_group(ctx: JobContext, output: Output, opened: Opened, path: str) -> None:
    if not output.group_kept:
        ctx.log.warn("output written without the original's group (this process may not set it); "
                     "its group bits were cleared", path=path, group=opened.info.st_gid)


# -- file:process-upload ---------------------------------------------------------------------


class UploadPayload(Payload):
    file_id: str = Field(min_length=1, max_length=200)
    file_path: str = Field(min_length=1)
    content_type: str = Field(min_length=3, pattern=r"^[\w.+-]+/[\w.+-]+(\s*;.*)?$")
    enqueue_followups: bool = True
    modify_original: bool = False


@handler("file:process-upload", executor="process", timeout=300)
def process_upload(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Validate an upload: size, real type, sha256, metadata, archive caps; enqueue follow-ups."""
    request = parse_payload(UploadPayload, payload)
    settings = file_settings(ctx)
    roots = file_roots(settings)
    with _memory_capped(settings), roots.open_file(request.file_path) as opened:
        result = _check_upload(request, opened, settings, ctx)
    if request.modify_original and result.get("gpsStripped"):
        # The hash describes the stored file as it is now (after an in-place GPS removal).
        with roots.open_file(request.file_path) as rewritten:
            result.update(sha256=_sha256(rewritten.file), size=rewritten.info.st_size)
    result["followups"] = _enqueue_followups(request, result, settings, ctx)
    ctx.log.info("upload checked", file_id=request.file_id, content_type=result["contentType"],
                 size=result["size"])
    return result


def _check_upload(request: UploadPayload, opened: Opened, settings: FileSettings,
                  ctx: JobContext) -> dict[str, Any]:
    size, name, source = opened.info.st_size, opened.name, opened.file
    if size > settings.max_file_size:
        raise PermanentError(f"filePath: {name} is {size} bytes, over the limit of {settings.max_file_size}")
    detected = detect_file(source)
    if not claim_agrees(request.content_type, detected):
        raise PermanentError(
            f"contentType: the upload claims {request.content_type} but its bytes are {detected}")

    result: dict[str, Any] = {
        "fileId": request.file_id, "path": opened.path, "size": size, "contentType": detected,
        "claimedContentType": request.content_type,
    }
    kind = _kind(detected)
    if kind == "image":
        result["metadata"] = media.image_metadata(source, name, settings.image)
    elif kind in ("video", "audio"):
        # The sniffed kind wins: an audio file with cover art has a (picture) video stream.
        result["metadata"] = {**media.media_metadata(source, name, settings.video), "kind": kind}
    elif is_archive(detected):
        try:
            result["archive"] = inspect_archive(source, name, settings.archive).as_dict()
        except ArchiveRefused as exc:
            raise PermanentError(f"filePath: archive refused: {exc}") from None
    result["sha256"] = _sha256(source)

    if kind == "image" and settings.strip_gps and result["metadata"]["hasGps"]:
        stem, suffix = _stem_and_suffix(name)
        in_place = request.modify_original
        target_name = name if in_place else f"{stem}.nogps{suffix}"
        target = opened.path if in_place else _output_path(opened, settings, target_name)
        with _output_directory(opened, settings, in_place=in_place) as dir_fd, \
                atomic_output(dir_fd, target_name, like=opened.info) as output:
            media.write_without_gps(source, name, output, settings.image)
        _log_group(ctx, output, opened, target)
        result.update(gpsStripped=True, sanitizedPath=target)
        ctx.log.info("GPS EXIF removed", path=target)
    return result


def _enqueue_followups(request: UploadPayload, result: dict[str, Any], settings: FileSettings,
                       ctx: JobContext) -> list[str]:
    if not request.enqueue_followups:
        return []
    kind = _kind(result["contentType"])
    common = {"fileId": request.file_id, "filePath": result["path"], "contentType": result["contentType"]}
    followups = []
    for job_type in settings.upload_followups:
        if job_type == "file:generate-thumbnails" and kind not in ("image", "video"):
            continue
        if job_type == "file:virus-scan" and not settings.clamd_address:
            # A scan without a clamd could only fail: the upload says so instead.
            ctx.log.info("no virus scan: no clamd is configured ([handlers.files] clamd_address or "
                         "HAOSQ_CLAMD_ADDRESS)", file_id=request.file_id)
            result["virusScan"] = "not configured"
            continue
        ctx.enqueue_on_success(job_type, dict(common))
        followups.append(job_type)
    return followups


# -- file:generate-thumbnails ----------------------------------------------------------------


class ThumbnailPayload(Payload):
    file_id: str | None = None
    file_path: str = Field(min_length=1)
    content_type: str | None = None
    sizes: list[int] | None = Field(default=None, min_length=1, max_length=10)
    format: Literal["webp", "jpeg", "jpg"] | None = None
    quality: int = Field(default=80, ge=1, le=100)
    offset_seconds: float | None = Field(default=None, ge=0)


@handler("file:generate-thumbnails", executor="process", timeout=300)
def generate_thumbnails(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Thumbnails of an image (EXIF-upright, first frame) or a video (frame at an offset)."""
    request = parse_payload(ThumbnailPayload, payload)
    settings = file_settings(ctx)
    sizes = request.sizes or list(settings.thumbnail_sizes)
    if any(s < 16 or s > 4096 for s in sizes):
        raise PermanentError("sizes: each size must be between 16 and 4096 pixels")
    fmt = media.image_format(request.format or settings.thumbnail_format)
    with _memory_capped(settings), file_roots(settings).open_file(request.file_path) as opened:
        detected = detect_file(opened.file)
        result: dict[str, Any] = {"fileId": request.file_id, "source": opened.path, "contentType": detected}
        if _kind(detected) == "image":
            image = media.image_for_thumbnails(opened.file, opened.name, settings.image)
        elif _kind(detected) == "video":
            image, frame_time = media.video_frame(opened.file, opened.name, request.offset_seconds,
                                                  settings.video)
            result["frameTime"] = round(frame_time, 3)
        else:
            raise PermanentError(f"filePath: {opened.name} is {detected}, which has no thumbnail")
        stem = _stem_and_suffix(opened.name)[0]
        suffix = media.SUFFIXES[fmt]
        result["thumbnails"] = []
        with _output_directory(opened, settings) as dir_fd:
            for size in sorted(set(sizes)):
                name = f"{stem}.thumb-{size}{suffix}"
                with atomic_output(dir_fd, name, like=opened.info) as output:
                    width, height = media.save_thumbnail(image, size, output, fmt, request.quality)
                path = _output_path(opened, settings, name)
                _log_group(ctx, output, opened, path)
                result["thumbnails"].append({"size": size, "path": path, "width": width, "height": height,
                                             "bytes": output.size})
    ctx.log.info("thumbnails written", count=len(result["thumbnails"]))
    return result


# -- file:compress-media ---------------------------------------------------------------------


class CompressPayload(Payload):
    file_id: str | None = None
    file_path: str = Field(min_length=1)
    format: Literal["webp", "jpeg", "jpg", "png", "avif"] | None = None
    quality: int = Field(default=80, ge=1, le=100)
    max_width: int | None = Field(default=None, ge=16, le=16384)
    crf: int = Field(default=28, ge=0, le=51)
    codec: str | None = None
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"
    replace_original: bool = False


@handler("file:compress-media", executor="process", timeout=1800)
def compress_media(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Re-encode an image or transcode a video; keep the original when the result is not smaller."""
    request = parse_payload(CompressPayload, payload)
    settings = file_settings(ctx)
    with _memory_capped(settings), file_roots(settings).open_file(request.file_path) as opened:
        return _compress(request, opened, settings, ctx)


def _compress(request: CompressPayload, opened: Opened, settings: FileSettings,
              ctx: JobContext) -> dict[str, Any]:
    detected = detect_file(opened.file)
    before = opened.info.st_size
    name, stem = opened.name, _stem_and_suffix(opened.name)[0]
    result: dict[str, Any] = {"fileId": request.file_id, "source": opened.path, "sizeBefore": before}
    # The work is checked before any output (or output directory) is made.
    if _kind(detected) == "image":
        media.check_image(opened.file, name, settings.image)
        source_format = detected.split("/", 1)[1]
        fmt = media.image_format(request.format or (
            source_format if source_format in media.IMAGE_FORMATS else "webp"))
        suffix = media.SUFFIXES[fmt]
        result.update(kind="image", format=fmt.lower())
    elif _kind(detected) == "video":
        media.check_video(opened.file, name, settings.video)
        codec = media.video_codec(request.codec)
        suffix = ".mp4"
    else:
        raise PermanentError(f"filePath: {name} is {detected}, which cannot be compressed")
    _check_replace(request.replace_original, name, suffix)

    # A replacement is written next to the original, under its name: the rename replaces it.
    target_name = name if request.replace_original else f"{stem}.compressed{suffix}"
    with _output_directory(opened, settings, in_place=request.replace_original) as dir_fd, \
            atomic_output(dir_fd, target_name, like=opened.info) as output:
        if result.get("kind") == "image":
            media.reencode_image(opened.file, name, output, fmt, request.quality, request.max_width,
                                 settings.image)
        else:
            result.update(kind="video", **media.transcode_video(
                opened.file, name, output, width=request.max_width, crf=request.crf, codec=codec,
                preset=request.preset, limits=settings.video))
        output.file.flush()
        after = os.fstat(output.file.fileno()).st_size
        if after >= before:
            output.discard()
    result["sizeAfter"] = after
    if output.discarded:
        result.update(kept="original", output=None, savedBytes=0)
        ctx.log.info("compressed result not smaller; original kept", before=before, after=after)
        return result
    target = opened.path if request.replace_original else _output_path(opened, settings, target_name)
    _log_group(ctx, output, opened, target)
    result.update(kept="compressed", output=target, savedBytes=before - after)
    ctx.log.info("compressed", before=before, after=after)
    return result


def _check_replace(replace: bool, name: str, suffix: str) -> None:
    original = _stem_and_suffix(name)[1].lower()
    if replace and original not in (suffix, ".jpeg" if suffix == ".jpg" else suffix):
        raise PermanentError(f"replaceOriginal: the output format ({suffix}) differs from the "
                             f"original's ({original or 'none'})")


# -- file:virus-scan -------------------------------------------------------------------------


class ScanPayload(Payload):
    file_id: str | None = None
    file_path: str = Field(min_length=1)
    content_type: str | None = None


@handler("file:virus-scan", executor="process", timeout=900)
def virus_scan(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Scan with clamd; quarantine what is infected; `not_scanned` past clamd's limits."""
    request = parse_payload(ScanPayload, payload)
    settings = file_settings(ctx)
    if not settings.clamd_address:
        raise PermanentError(
            "no clamd is configured: set [handlers.files] clamd_address or HAOSQ_CLAMD_ADDRESS")
    with _memory_capped(settings), file_roots(settings).open_file(request.file_path) as opened:
        return _scan(request, opened, settings, ctx)


def _scan(request: ScanPayload, opened: Opened, settings: FileSettings, ctx: JobContext) -> dict[str, Any]:
    assert settings.clamd_address
    size = opened.info.st_size
    result: dict[str, Any] = {"fileId": request.file_id, "path": opened.path, "size": size,
                              "signature": None, "reason": None}
    limits = settings.clamd_limits
    if size > limits.stream_max_length:
        # clamd would refuse the stream part-way: nothing would be scanned in full.
        result.update(status="not_scanned", reason=(
            f"file is {size} bytes, over clamd's StreamMaxLength of {limits.stream_max_length}"))
        ctx.log.warn("not scanned", reason=result["reason"])
        return result
    skipped = _beyond_scan_limits(opened, settings)

    client = ClamdClient(settings.clamd_address, settings.clamd_timeout)
    try:
        opened.file.seek(0)
        reply = client.instream(opened.file)
    except ClamdUnavailable as exc:
        delay = min(600.0, 15.0 * 2 ** max(ctx.attempt - 1, 0))
        ctx.log.warn("clamd unreachable; will retry", error=str(exc), retry_in=delay)
        raise Retry(f"clamd unreachable: {exc}", after=delay) from None
    except ClamdError as exc:
        if "size limit" in str(exc).lower():
            result.update(status="not_scanned", reason=f"clamd refused the stream: {exc}")
            return result
        raise Retry(f"clamd error: {exc}", after=60.0) from None

    if reply.found and reply.found.startswith("Heuristics.Limits.Exceeded"):
        result.update(status="not_scanned", reason=f"clamd stopped at a scan limit ({reply.found})")
    elif reply.found:
        result.update(status="infected", signature=reply.found,
                      quarantinePath=_quarantine(opened, request.file_id, reply.found, settings))
        ctx.log.warn("infected file quarantined", signature=reply.found,
                     quarantine=result["quarantinePath"])
    elif skipped:
        # clamd said OK, but it skipped what lies past its limits: that is not "clean".
        result.update(status="not_scanned", reason=skipped)
        ctx.log.warn("not scanned", reason=skipped)
    else:
        result["status"] = "clean"
    return result


def _beyond_scan_limits(opened: Opened, settings: FileSettings) -> str | None:
    """Why clamd would skip (part of) this file, or None when it scans all of it."""
    limits = settings.clamd_limits
    size = opened.info.st_size
    if size > limits.max_file_size:
        return f"file is {size} bytes, over clamd's MaxFileSize of {limits.max_file_size}"
    if size > limits.max_scan_size:
        return f"file is {size} bytes, over clamd's MaxScanSize of {limits.max_scan_size}"
    if not is_archive(detect_file(opened.file)):
        return None
    caps = ArchiveLimits(max_total_size=limits.max_scan_size, max_ratio=math.inf,
                         max_entries=limits.max_files, max_depth=limits.max_recursion)
    try:
        summary = inspect_archive(opened.file, opened.name, caps, check_names=False)
    except ArchiveRefused as exc:
        return f"archive beyond clamd's limits: {exc}"
    if summary.largest_entry > limits.max_file_size:
        return (f"an archive entry is {summary.largest_entry} bytes, over clamd's MaxFileSize "
                f"of {limits.max_file_size}")
    return None


def _quarantine(opened: Opened, file_id: str | None, signature: str, settings: FileSettings) -> str:
    if settings.quarantine_dir is None:
        raise PermanentError(
            f"{opened.name} is infected ({signature}) but no quarantine directory is configured "
            "([handlers.files] quarantine_dir or HAOSQ_FILE_QUARANTINE_DIR); the file was left in place")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = f"{stamp}-{file_id + '-' if file_id else ''}{opened.name}"
    with output_directory(settings.quarantine_dir, what="quarantine_dir", mode=0o700) as dir_fd:
        move(opened, dir_fd, name, mode=0o400)
    return os.path.join(settings.quarantine_dir, name)
