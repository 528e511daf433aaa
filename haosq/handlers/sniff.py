"""The real type of a file, from its first bytes, and whether a claimed type agrees.

A small table of signatures covers what uploads carry (images, video, audio, documents,
archives). The claimed content type is checked against it: a PNG uploaded as
`image/jpeg`, or an executable uploaded as a picture, is refused.
"""

from __future__ import annotations

from typing import BinaryIO

OCTET_STREAM = "application/octet-stream"
HEAD_BYTES = 4096

_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "audio/mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/x-flac": "audio/flac",
    "application/x-zip-compressed": "application/zip",
    "application/x-gzip": "application/gzip",
    "application/x-bzip": "application/x-bzip2",
    "application/x-rar-compressed": "application/vnd.rar",
    "video/x-m4v": "video/mp4",
    "audio/x-m4a": "audio/mp4",
    "image/x-ms-bmp": "image/bmp",
}

# Detected type -> claimed types that name the same bytes.
_COMPATIBLE = {
    "video/mp4": {"audio/mp4", "video/quicktime"},
    "video/quicktime": {"video/mp4"},
    "audio/mp4": {"video/mp4"},
    "video/webm": {"audio/webm", "video/x-matroska"},
    "video/x-matroska": {"video/webm", "audio/x-matroska"},
    "audio/ogg": {"video/ogg", "application/ogg"},
    "application/zip": {"application/java-archive", "application/epub+zip"},
    "application/gzip": {"application/x-gtar", "application/x-compressed-tar", "application/x-tgz"},
    "application/x-bzip2": {"application/x-bzip-compressed-tar"},
    "application/x-xz": {"application/x-xz-compressed-tar"},
    "text/plain": {"text/csv", "text/markdown", "application/json", "text/html", "application/xml",
                   "text/xml", "image/svg+xml", "text/calendar"},
}


def normalise(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def detect_bytes(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(
            head[8:12], OCTET_STREAM)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF, BigTIFF
        return "image/tiff"
    if head[:2] == b"BM" and len(head) > 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1"):
            return "image/heic"
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "application/x-bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "application/x-xz"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "application/x-7z-compressed"
    if head.startswith(b"Rar!\x1a\x07"):
        return "application/vnd.rar"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "application/x-tar"
    if head.startswith((b"\x7fELF", b"MZ")):
        return "application/x-executable"
    if _looks_like_text(head):
        return "text/plain"
    return OCTET_STREAM


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the sample is still text.
        return exc.start >= len(head) - 3
    return True


def detect_file(source: BinaryIO) -> str:
    """The type of an opened file, from its first bytes (the position is left at the start)."""
    source.seek(0)
    head = source.read(HEAD_BYTES)
    source.seek(0)
    return detect_bytes(head)


def claim_agrees(claimed: str, detected: str) -> bool:
    """Whether bytes of type `detected` may be stored as `claimed`."""
    claimed = normalise(claimed)
    if claimed in (detected, OCTET_STREAM):
        return True
    if claimed in _COMPATIBLE.get(detected, ()):
        return True
    if detected == "application/zip" and (
        claimed.startswith("application/vnd.openxmlformats") or claimed.startswith(
            "application/vnd.oasis.opendocument")):
        return True
    if detected == "text/plain" and claimed.startswith("text/"):
        return True
    # Bytes we do not recognise may be whatever the producer says, unless the claim is a
    # type we would have recognised.
    return detected == OCTET_STREAM and claimed not in _RECOGNISED


_RECOGNISED = {
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/tiff", "image/bmp", "image/heic",
    "image/avif", "video/mp4", "video/quicktime", "video/webm", "video/x-matroska", "video/x-msvideo",
    "audio/mp4", "audio/ogg", "audio/flac", "audio/mpeg", "audio/wav", "application/pdf",
    "application/zip", "application/gzip", "application/x-tar", "application/x-bzip2", "application/x-xz",
    "application/x-7z-compressed", "application/vnd.rar",
}
