"""Configuration of the `file:*` job types.

Read from the `[handlers.files]` table of the config file; the essentials can also come from
the environment, which wins (HAOSQ_FILE_ROOTS, HAOSQ_FILE_OUTPUT_ROOT,
HAOSQ_FILE_QUARANTINE_DIR, HAOSQ_CLAMD_ADDRESS). Settings are plain data so that they cross
into the process executor's child unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from haosq.errors import PermanentError
from haosq.handlers.handler_config import with_environment

ENV_NAMES = {
    "roots": "HAOSQ_FILE_ROOTS",
    "output_root": "HAOSQ_FILE_OUTPUT_ROOT",
    "quarantine_dir": "HAOSQ_FILE_QUARANTINE_DIR",
    "clamd_address": "HAOSQ_CLAMD_ADDRESS",
}

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: Any, name: str) -> int:
    """Bytes from an int or a clamd-style text ("25M", "400K", "2G")."""
    if isinstance(value, bool):
        raise PermanentError(f"handlers.files.{name} must be a size, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise PermanentError(f"handlers.files.{name} must not be negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise PermanentError(f"handlers.files.{name} = {value!r} is not a size (like 25M)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied to archives in uploads, refused beyond them."""

    max_total_size: int = 1024**3
    max_ratio: float = 100.0
    max_entries: int = 10_000
    max_depth: int = 3


@dataclass(frozen=True)
class ImageLimits:
    """The decoding an image may ask for (`max_image_*`): pixels of one frame, frames, and
    pixels of all frames together. Checked from the headers, before anything is decoded."""

    pixels: int = 50_000_000
    frames: int = 1_000
    total_pixels: int = 100_000_000


@dataclass(frozen=True)
class VideoLimits:
    """The decoding a video may ask for (`max_video_*`): pixels of one frame, frames, seconds,
    and pixels of all frames together. Checked from the container's metadata before decoding,
    and again frame by frame while decoding (a container may understate)."""

    pixels: int = 8192 * 4320
    frames: int = 1_000_000
    duration: float = 6 * 3600.0
    total_pixels: int = 10**12


@dataclass(frozen=True)
class ClamdLimits:
    """The limits of the clamd that scans: clamd answers OK for what it skipped, so haosq
    must know them to report `not_scanned` instead. Defaults are clamd's own."""

    stream_max_length: int = 25 * 1024**2
    max_file_size: int = 100 * 1024**2
    max_scan_size: int = 400 * 1024**2
    max_files: int = 10_000
    max_recursion: int = 17


@dataclass(frozen=True)
class FileSettings:
    roots: tuple[Path, ...] = ()
    output_root: Path | None = None
    quarantine_dir: Path | None = None
    max_file_size: int = 100 * 1024**2
    max_memory: int = 2 * 1024**3
    image: ImageLimits = field(default_factory=ImageLimits)
    video: VideoLimits = field(default_factory=VideoLimits)
    strip_gps: bool = False
    thumbnail_sizes: tuple[int, ...] = (128, 512)
    thumbnail_format: str = "webp"
    upload_followups: tuple[str, ...] = ("file:generate-thumbnails", "file:virus-scan")
    clamd_address: str | None = None
    clamd_config: Path | None = None
    clamd_timeout: float = 60.0
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    clamd_limits: ClamdLimits = field(default_factory=ClamdLimits)

    @classmethod
    def load(cls, table: Mapping[str, Any], env: Mapping[str, str] | None = None) -> FileSettings:
        values = with_environment(table, ENV_NAMES, env)
        known = ({f.name for f in fields(cls)} - {"image", "video"}
                 | {"archive_" + f.name for f in fields(ArchiveLimits)}
                 | {"clamd_" + f.name for f in fields(ClamdLimits)}
                 | {"max_image_" + f.name for f in fields(ImageLimits)}
                 | {"max_video_" + f.name for f in fields(VideoLimits)})
        unknown = sorted(set(values) - known)
        if unknown:
            raise PermanentError(f"unknown key(s) in [handlers.files]: {', '.join(unknown)}")

        roots = values.get("roots", ())
        if isinstance(roots, str):
            roots = [part for part in roots.split(os.pathsep) if part]
        clamd_config = values.get("clamd_config")
        limits = read_clamd_limits(Path(clamd_config)) if clamd_config else {}
        for f in fields(ClamdLimits):
            if "clamd_" + f.name in values:
                limits[f.name] = values["clamd_" + f.name]
        archive = {f.name: values["archive_" + f.name] for f in fields(ArchiveLimits)
                   if "archive_" + f.name in values}
        try:
            return cls(
                # As configured (absolute, normalised): a payload may name a root by this path
                # or by its real path (haosq.handlers.pathguard matches both).
                roots=tuple(Path(os.path.abspath(r)) for r in roots),
                output_root=_path(values.get("output_root")),
                quarantine_dir=_path(values.get("quarantine_dir")),
                max_file_size=parse_size(values.get("max_file_size", cls.max_file_size), "max_file_size"),
                max_memory=parse_size(values.get("max_memory", cls.max_memory), "max_memory"),
                image=ImageLimits(**_limits(values, "max_image_", ImageLimits)),
                video=VideoLimits(**_limits(values, "max_video_", VideoLimits)),
                strip_gps=_flag(values.get("strip_gps", False), "strip_gps"),
                thumbnail_sizes=tuple(int(s) for s in values.get("thumbnail_sizes", cls.thumbnail_sizes)),
                thumbnail_format=str(values.get("thumbnail_format", cls.thumbnail_format)).lower(),
                upload_followups=tuple(values.get("upload_followups", cls.upload_followups)),
                clamd_address=values.get("clamd_address"),
                clamd_config=_path(clamd_config),
                clamd_timeout=float(values.get("clamd_timeout", cls.clamd_timeout)),
                archive=ArchiveLimits(**{
                    k: (parse_size(v, "archive_" + k) if k == "max_total_size" else v)
                    for k, v in archive.items()}),
                clamd_limits=ClamdLimits(**{
                    k: (parse_size(v, "clamd_" + k) if k.endswith(("size", "length")) else int(v))
                    for k, v in limits.items()}),
            )
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"invalid [handlers.files] setting: {exc}") from None

    def require_roots(self) -> tuple[Path, ...]:
        if not self.roots:
            raise PermanentError(
                "no file roots are configured: set [handlers.files] roots or HAOSQ_FILE_ROOTS")
        return self.roots


def _limits(values: Mapping[str, Any], prefix: str, limits: type) -> dict[str, Any]:
    """The `prefix*` keys of a limits table as that dataclass's fields, each a positive number."""
    chosen: dict[str, Any] = {}
    for item in fields(limits):
        key = prefix + item.name
        if key not in values:
            continue
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise PermanentError(f"handlers.files.{key} must be a positive number, not {value!r}")
        chosen[item.name] = float(value) if item.type == "float" else int(value)
    return chosen


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise PermanentError(f"handlers.files.{name} must be true or false, not {value!r}")
    return value


def _path(value: Any) -> Path | None:
    return Path(value).resolve() if value else None


_CLAMD_KEYS = {
    "StreamMaxLength": "stream_max_length",
    "MaxFileSize": "max_file_size",
    "MaxScanSize": "max_scan_size",
    "MaxFiles": "max_files",
    "MaxRecursion": "max_recursion",
}


def read_clamd_limits(path: Path) -> dict[str, Any]:
    """The scan limits set in a clamd.conf (those it does not set keep clamd's defaults)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PermanentError(f"cannot read clamd config {path}: {exc}") from None
    limits: dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in _CLAMD_KEYS:
            limits[_CLAMD_KEYS[parts[0]]] = parts[1].strip()
    return limits
