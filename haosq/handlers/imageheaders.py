"""How much decoding an image asks for, read from its headers without decoding anything.

A decoder's work (and the memory it takes) is the number of frames times the canvas each frame
is decoded onto; a small file can declare a lot of both (a GIF of 60 frames of 3000x3000 is
half a megabyte). The image formats that can hold many frames are walked block by block here,
skipping the compressed data: GIF (image descriptors), PNG/APNG (IHDR and acTL chunks), WebP
(VP8X and ANMF chunks) and TIFF (the chain of IFDs, BigTIFF included). Pillow's own frame
count is not used for them: for a GIF it decodes every frame to find the next.

A header that cannot be walked to its end (truncated, looping, inconsistent) gives what was
read so far: the caller compares that with its limits and Pillow refuses the rest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

# Beyond this many frames (or TIFF pages) the walk stops: the caller refuses such a file anyway.
WALK_LIMIT = 100_000


@dataclass(frozen=True)
class ImageWork:
    """What decoding every frame of an image means: how many frames, the largest canvas a
    frame is decoded onto, and the pixels of all frames together."""

    frames: int
    width: int
    height: int
    total_pixels: int

    @property
    def frame_pixels(self) -> int:
        return self.width * self.height


def measure(source: BinaryIO) -> ImageWork | None:
    """The work an image declares, for the formats that can animate or hold pages; None for
    the others (a single frame, whose size Pillow reports before decoding)."""
    source.seek(0)
    head = source.read(16)
    source.seek(0)
    try:
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return _gif(source)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(source)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(source)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff(source)
    finally:
        source.seek(0)
    return None


def _read(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    if len(data) < size:
        raise EOFError
    return data


def _gif(source: BinaryIO) -> ImageWork:
    source.seek(6)
    width, height, packed = struct.unpack("<HHB", _read(source, 5))
    source.seek(2, 1)
    if packed & 0x80:
        source.seek(3 << ((packed & 7) + 1), 1)
    frames = 0
    try:
        while frames < WALK_LIMIT:
            block = source.read(1)
            if block == b"\x2c":  # an image descriptor: one frame
                left, top, frame_width, frame_height, flags = struct.unpack("<HHHHB", _read(source, 9))
                # A frame reaching past the logical screen grows the canvas (Pillow does so).
                width, height = max(width, left + frame_width), max(height, top + frame_height)
                frames += 1
                if flags & 0x80:
                    source.seek(3 << ((flags & 7) + 1), 1)
                source.seek(1, 1)  # LZW minimum code size
                _skip_sub_blocks(source)
            elif block == b"\x21":  # an extension
                source.seek(1, 1)
                _skip_sub_blocks(source)
            else:  # the trailer, the end of the file, or garbage: no more frames
                break
    except EOFError:
        pass
    frames = max(frames, 1)
    return ImageWork(frames, width, height, frames * width * height)


def _skip_sub_blocks(source: BinaryIO) -> None:
    while True:
        size = _read(source, 1)[0]
        if size == 0:
            return
        source.seek(size, 1)


def _png(source: BinaryIO) -> ImageWork:
    # The chunks before the image data say it all: IHDR the canvas, acTL the frame count a
    # decoder goes by (Pillow reads no further when it opens the file, nor decodes more frames).
    source.seek(8)
    width = height = 0
    frames = 1
    try:
        while True:
            length, kind = struct.unpack(">I4s", _read(source, 8))
            if kind == b"IHDR":
                width, height = struct.unpack(">II", _read(source, 8))
                source.seek(length - 8 + 4, 1)
            elif kind == b"acTL":
                frames = max(1, struct.unpack(">I", _read(source, 4))[0])
                source.seek(length - 4 + 4, 1)
            elif kind in (b"IDAT", b"IEND"):
                break
            else:
                source.seek(length + 4, 1)
    except EOFError:
        pass
    return ImageWork(frames, width, height, frames * width * height)


def _webp(source: BinaryIO) -> ImageWork:
    source.seek(12)
    width = height = 0
    frames = 0
    try:
        while frames < WALK_LIMIT:
            kind, length = struct.unpack("<4sI", _read(source, 8))
            padded = length + (length & 1)
            if kind == b"VP8X":
                data = _read(source, 10)
                width = int.from_bytes(data[4:7], "little") + 1
                height = int.from_bytes(data[7:10], "little") + 1
                source.seek(padded - 10, 1)
            elif kind == b"ANMF":
                frames += 1
                source.seek(padded, 1)
            elif kind == b"VP8 " and not width:
                data = _read(source, 10)
                width = int.from_bytes(data[6:8], "little") & 0x3FFF
                height = int.from_bytes(data[8:10], "little") & 0x3FFF
                source.seek(padded - 10, 1)
            elif kind == b"VP8L" and not width:
                bits = int.from_bytes(_read(source, 5)[1:5], "little")
                width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
                source.seek(padded - 5, 1)
            else:
                source.seek(padded, 1)
    except EOFError:
        pass
    frames = max(frames, 1)
    return ImageWork(frames, width, height, frames * width * height)


_TIFF_WIDTH, _TIFF_LENGTH = 256, 257


def _tiff(source: BinaryIO) -> ImageWork:
    order = "<" if _read(source, 2) == b"II" else ">"
    big = struct.unpack(order + "H", _read(source, 2))[0] == 43
    if big:
        source.seek(8)
        offset = struct.unpack(order + "Q", _read(source, 8))[0]
    else:
        offset = struct.unpack(order + "I", _read(source, 4))[0]
    count_format, entry_size, next_format = ("Q", 20, "Q") if big else ("H", 12, "I")
    seen: set[int] = set()
    pages = total = widest = tallest = 0
    try:
        while offset and offset not in seen and pages < WALK_LIMIT:
            seen.add(offset)
            source.seek(offset)
            count_size = struct.calcsize(count_format)
            entries = struct.unpack(order + count_format, _read(source, count_size))[0]
            if entries > 4096:
                break
            table = _read(source, entries * entry_size)
            width = height = 0
            for index in range(entries):
                entry = table[index * entry_size:(index + 1) * entry_size]
                tag, kind = struct.unpack(order + "HH", entry[:4])
                if tag in (_TIFF_WIDTH, _TIFF_LENGTH):
                    value = _tiff_number(entry, order, kind, big)
                    if tag == _TIFF_WIDTH:
                        width = value
                    else:
                        height = value
            pages += 1
            total += width * height
            widest, tallest = max(widest, width), max(tallest, height)
            next_size = struct.calcsize(next_format)
            offset = struct.unpack(order + next_format, _read(source, next_size))[0]
    except EOFError:
        pass
    pages = max(pages, 1)
    return ImageWork(pages, widest, tallest, max(total, widest * tallest))


def _tiff_number(entry: bytes, order: str, kind: int, big: bool) -> int:
    value = entry[12:20] if big else entry[8:12]
    if kind == 3:  # SHORT, left-justified in the value field
        return int(struct.unpack(order + "H", value[:2])[0])
    if kind == 16:  # LONG8 (BigTIFF)
        return int(struct.unpack(order + "Q", value[:8])[0])
    return int(struct.unpack(order + "I", value[:4])[0])
