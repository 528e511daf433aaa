"""The `file:*` job types: upload checks, thumbnails, media compression, virus scans.

Paths must lie under the configured roots (`[handlers.files] roots` or HAOSQ_FILE_ROOTS);
outputs are written atomically next to the original or mirrored under `output_root`;
originals are modified only when the payload asks (`modifyOriginal`, `replaceOriginal`).
All four run in the process executor, so that a pathological file that makes a decoder
spin is killed at the job's timeout instead of holding a worker thread forever.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from haosq.errors import PermanentError, Retry
from haosq.handlers import media
from haosq.handlers.archives import ArchiveRefused, inspect_archive, is_archive
from haosq.handlers.clamd import ClamdClient, ClamdError, ClamdUnavailable
from haosq.handlers.file_settings import ArchiveLimits, FileSettings
from haosq.handlers.pathguard import output_dir_for, resolve_under_roots
from haosq.handlers.payloads import Payload, parse_payload
from haosq.handlers.registry import JobContext, handler
from haosq.handlers.sniff import claim_agrees, detect_file

HASH_CHUNK = 1024 * 1024


def file_settings(ctx: JobContext) -> FileSettings:
    return FileSettings.load(ctx.handler_settings("files"))


def _kind(content_type: str) -> str:
    return content_type.split("/", 1)[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
    path = resolve_under_roots(request.file_path, settings.require_roots())
    size = path.stat().st_size
    if size > settings.max_file_size:
        raise PermanentError(
            f"filePath: {path.name} is {size} bytes, over the limit of {settings.max_file_size}")
    detected = detect_file(path)
    if not claim_agrees(request.content_type, detected):
        raise PermanentError(
            f"contentType: the upload claims {request.content_type} but its bytes are {detected}")

    result: dict[str, Any] = {
        "fileId": request.file_id, "path": str(path), "size": size, "contentType": detected,
        "claimedContentType": request.content_type,
    }
    kind = _kind(detected)
    if kind == "image":
        result["metadata"] = media.image_metadata(path, settings.max_image_pixels)
    elif kind in ("video", "audio"):
        # The sniffed kind wins: an audio file with cover art has a (picture) video stream.
        result["metadata"] = {**media.media_metadata(path), "kind": kind}
    elif is_archive(path, detected):
        try:
            result["archive"] = inspect_archive(path, settings.archive).as_dict()
        except ArchiveRefused as exc:
            raise PermanentError(f"filePath: archive refused: {exc}") from None

    if kind == "image" and settings.strip_gps and result["metadata"]["hasGps"]:
        target = path if request.modify_original else (
            output_dir_for(path, settings.roots, settings.output_root) / f"{path.stem}.nogps{path.suffix}")
        media.write_without_gps(path, target, settings.max_image_pixels)
        result.update(gpsStripped=True, sanitizedPath=str(target))
        ctx.log.info("GPS EXIF removed", path=str(target))
    # The hash describes the stored file as it is now (after an in-place GPS removal).
    result["sha256"] = _sha256(path)
    if request.modify_original:
        result["size"] = path.stat().st_size

    followups = []
    if request.enqueue_followups:
        common = {"fileId": request.file_id, "filePath": str(path), "contentType": detected}
        for job_type in settings.upload_followups:
            if job_type == "file:generate-thumbnails" and kind not in ("image", "video"):
                continue
            ctx.enqueue_on_success(job_type, dict(common))
            followups.append(job_type)
    result["followups"] = followups
    ctx.log.info("upload checked", file_id=request.file_id, content_type=detected, size=size)
    return result


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
    path = resolve_under_roots(request.file_path, settings.require_roots())
    detected = detect_file(path)
    result: dict[str, Any] = {"fileId": request.file_id, "source": str(path), "contentType": detected}
    if _kind(detected) == "image":
        image = media.image_for_thumbnails(path, settings.max_image_pixels)
    elif _kind(detected) == "video":
        image, frame_time = media.video_frame(path, request.offset_seconds)
        result["frameTime"] = round(frame_time, 3)
    else:
        raise PermanentError(f"filePath: {path.name} is {detected}, which has no thumbnail")
    out_dir = output_dir_for(path, settings.roots, settings.output_root)
    suffix = media.SUFFIXES[fmt]
    result["thumbnails"] = [
        media.save_thumbnail(image, size, out_dir / f"{path.stem}.thumb-{size}{suffix}", fmt,
                             request.quality)
        for size in sorted(set(sizes))
    ]
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
    path = resolve_under_roots(request.file_path, settings.require_roots())
    detected = detect_file(path)
    before = path.stat().st_size
    out_dir = output_dir_for(path, settings.roots, settings.output_root)
    result: dict[str, Any] = {"fileId": request.file_id, "source": str(path), "sizeBefore": before}
    if _kind(detected) == "image":
        source_format = detected.split("/", 1)[1]
        fmt = media.image_format(request.format or (
            source_format if source_format in media.IMAGE_FORMATS else "webp"))
        suffix = media.SUFFIXES[fmt]
        _check_replace(request.replace_original, path, suffix)
        target = out_dir / f"{path.stem}.compressed{suffix}"
        media.reencode_image(path, target, fmt, request.quality, request.max_width,
                             settings.max_image_pixels)
        result.update(kind="image", format=fmt.lower())
    elif _kind(detected) == "video":
        codec = media.video_codec(request.codec)
        _check_replace(request.replace_original, path, ".mp4")
        target = out_dir / f"{path.stem}.compressed.mp4"
        result.update(kind="video", **media.transcode_video(
            path, target, width=request.max_width, crf=request.crf, codec=codec, preset=request.preset))
    else:
        raise PermanentError(f"filePath: {path.name} is {detected}, which cannot be compressed")

    after = target.stat().st_size
    result["sizeAfter"] = after
    if after >= before:
        target.unlink()
        result.update(kept="original", output=None, savedBytes=0)
        ctx.log.info("compressed result not smaller; original kept", before=before, after=after)
        return result
    if request.replace_original:
        os.replace(target, path)
        target = path
    result.update(kept="compressed", output=str(target), savedBytes=before - after)
    ctx.log.info("compressed", before=before, after=after)
    return result


def _check_replace(replace: bool, path: Path, suffix: str) -> None:
    if replace and path.suffix.lower() not in (suffix, ".jpeg" if suffix == ".jpg" else suffix):
        raise PermanentError(
            f"replaceOriginal: the output format ({suffix}) differs from the original's ({path.suffix})")


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
    path = resolve_under_roots(request.file_path, settings.require_roots())
    size = path.stat().st_size
    result: dict[str, Any] = {"fileId": request.file_id, "path": str(path), "size": size,
                              "signature": None, "reason": None}
    limits = settings.clamd_limits
    if size > limits.stream_max_length:
        # clamd would refuse the stream part-way: nothing would be scanned in full.
        result.update(status="not_scanned", reason=(
            f"file is {size} bytes, over clamd's StreamMaxLength of {limits.stream_max_length}"))
        ctx.log.warn("not scanned", reason=result["reason"])
        return result
    skipped = _beyond_scan_limits(path, size, settings)

    client = ClamdClient(settings.clamd_address, settings.clamd_timeout)
    try:
        with open(path, "rb") as stream:
            reply = client.instream(stream)
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
                      quarantinePath=str(_quarantine(path, request.file_id, reply.found, settings)))
        ctx.log.warn("infected file quarantined", signature=reply.found,
                     quarantine=result["quarantinePath"])
    elif skipped:
        # clamd said OK, but it skipped what lies past its limits: that is not "clean".
        result.update(status="not_scanned", reason=skipped)
        ctx.log.warn("not scanned", reason=skipped)
    else:
        result["status"] = "clean"
    return result


def _beyond_scan_limits(path: Path, size: int, settings: FileSettings) -> str | None:
    """Why clamd would skip (part of) this file, or None when it scans all of it."""
    limits = settings.clamd_limits
    if size > limits.max_file_size:
        return f"file is {size} bytes, over clamd's MaxFileSize of {limits.max_file_size}"
    if size > limits.max_scan_size:
        return f"file is {size} bytes, over clamd's MaxScanSize of {limits.max_scan_size}"
    detected = detect_file(path)
    if not is_archive(path, detected):
        return None
    caps = ArchiveLimits(max_total_size=limits.max_scan_size, max_ratio=math.inf,
                         max_entries=limits.max_files, max_depth=limits.max_recursion)
    try:
        summary = inspect_archive(path, caps, check_names=False)
    except ArchiveRefused as exc:
        return f"archive beyond clamd's limits: {exc}"
    if summary.largest_entry > limits.max_file_size:
        return (f"an archive entry is {summary.largest_entry} bytes, over clamd's MaxFileSize "
                f"of {limits.max_file_size}")
    return None


def _quarantine(path: Path, file_id: str | None, signature: str, settings: FileSettings) -> Path:
    if settings.quarantine_dir is None:
        raise PermanentError(
            f"{path.name} is infected ({signature}) but no quarantine directory is configured "
            "([handlers.files] quarantine_dir or HAOSQ_FILE_QUARANTINE_DIR); the file was left in place")
    settings.quarantine_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = settings.quarantine_dir / f"{stamp}-{file_id + '-' if file_id else ''}{path.name}"
    shutil.move(str(path), target)
    target.chmod(0o400)
    return target
