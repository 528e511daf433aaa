"""Files made by the tests: images (with GPS EXIF, a decompression bomb), video, archives, malware
markers, a directory tree deeper than PATH_MAX."""

from __future__ import annotations

import io
import math
import os
import struct
import time
import wave
import zipfile
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
HAOSQ_MARKER = b"HAOSQ-TEST-MALWARE-7f3a9c1e-DO-NOT-SHIP"
HAOSQ_SIGNATURE = "Haosq.Test.Marker"


def make_image(path: Path, size: tuple[int, int] = (640, 480), fmt: str = "JPEG",
               exif: Image.Exif | None = None) -> Path:
    image = Image.new("RGB", size)
    # A gradient with detail, so that encoders have something to compress.
    pixels = image.load()
    for x in range(size[0]):
        for y in range(0, size[1], 4):
            for dy in range(4):
                if y + dy < size[1]:
                    pixels[x, y + dy] = (x * 255 // size[0], y * 255 // size[1], (x ^ y) & 255)
    options: dict[str, Any] = {"quality": 95} if fmt == "JPEG" else {}
    if exif is not None:
        options["exif"] = exif.tobytes()
    image.save(path, format=fmt, **options)
    return path


def gps_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "haosq-test-camera"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})
    return exif


def make_bomb_png(path: Path, width: int = 40_000, height: int = 40_000, *, complete: bool = False) -> Path:
    """A small PNG whose header declares a huge canvas (1.6 billion pixels by default).

    `complete` writes every row (all black, so still tiny on disk): a file that decodes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height if complete else 64)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))
    return path


def make_video(path: Path, seconds: float = 2.0, fps: int = 24, size: tuple[int, int] = (320, 240),
               codec: str = "mpeg4", bit_rate: int = 4_000_000, audio: bool = False) -> Path:
    """A short MP4 made with PyAV: a moving gradient, one colour per second; with `audio`, a
    440 Hz tone in AAC alongside."""
    import av  # imported here: only the video tests pay for it

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.bit_rate = bit_rate
        # Every stream is added before the first packet is muxed (the header is written then).
        sound = _tone_stream(container) if audio else None
        base = Image.new("RGB", size)
        make_gradient = base.load()
        for x in range(size[0]):
            for y in range(size[1]):
                make_gradient[x, y] = (x & 255, y & 255, (x * y) & 255)
        for index in range(int(seconds * fps)):
            second = index // fps
            tint = Image.new("RGB", size, ((second * 90) % 256, 40, 200 - second * 60 % 200))
            frame_image = Image.blend(base, tint, 0.5).rotate(index * 3)
            frame = av.VideoFrame.from_image(frame_image)
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if sound is not None:
            _write_tone(container, sound, seconds)
    return path


def tone_samples(count: int, start: int = 0, rate: int = 44_100) -> bytes:
    """16-bit mono samples of a 440 Hz sine."""
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * (start + i) / rate)))
                    for i in range(count))


def _tone_stream(container: Any, rate: int = 44_100) -> Any:
    stream = container.add_stream("aac", rate=rate)
    stream.layout = "mono"
    return stream


def _write_tone(container: Any, stream: Any, seconds: float, rate: int = 44_100) -> None:
    import av

    block = 1024
    for index in range(int(seconds * rate) // block):
        frame = av.AudioFrame(format="s16", layout="mono", samples=block)
        frame.sample_rate = rate
        frame.planes[0].update(tone_samples(block, index * block, rate))
        frame.pts, frame.time_base = index * block, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_wav(path: Path, seconds: float = 1.0, rate: int = 22_050) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(tone_samples(int(seconds * rate), rate=rate))
    return path


def make_zip_of_zeros(path: Path, size: int) -> Path:
    """A zip holding one stored entry of `size` zero bytes, written sparsely (a hole on disk)."""
    name = b"zeros.bin"
    crc = 0
    chunk = bytes(1024 * 1024)
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(bytes(size % len(chunk)), crc)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crc, size, size, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, size, size,
                          len(name), 0, 0, 0, 0, 0, 0) + name
    with open(path, "wb") as handle:
        handle.write(local)
        handle.seek(len(local) + size)
        offset = handle.tell()
        handle.write(central)
        handle.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), offset, 0))
    return path


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


DEEP = "directory-with-a-long-name"


def make_deep_tree(root: Path, depth: int, old_file_every: int, age_days: float) -> int:
    """Directories named DEEP nested `depth` deep below root, made by descriptor (the whole path is
    longer than PATH_MAX); an old file every `old_file_every` levels. Returns the files made."""
    stamp = time.time() - age_days * 86_400
    made = 0
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            if level % old_file_every == 0:
                file_fd = os.open(f"old-{level}.log", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(file_fd, b"x")
                os.utime(file_fd, (stamp, stamp))
                os.close(file_fd)
                made += 1
            os.mkdir(DEEP, dir_fd=fd)
            child = os.open(DEEP, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        file_fd = os.open("bottom.log", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.utime(file_fd, (stamp, stamp))
        os.close(file_fd)
    finally:
        os.close(fd)
    return made + 1


def files_in_tree(root: Path) -> int:
    """Regular files left in the tree, counted by descriptor (iteratively)."""
    left = 0
    pending = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    while pending:
        fd = pending.pop()
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                pending.append(os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd))
            elif entry.is_file(follow_symlinks=False):
                left += 1
        os.close(fd)
    return left


def remove_deep_tree(root: Path) -> None:
    """Remove the deep tree bottom-up by descriptor (shutil.rmtree would recurse as deep)."""
    chain = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    while True:
        names = os.listdir(chain[-1])
        below = [n for n in names if n == DEEP]
        for name in names:
            if name not in below:
                os.unlink(name, dir_fd=chain[-1])
        if not below:
            break
        chain.append(os.open(below[0], os.O_RDONLY | os.O_DIRECTORY, dir_fd=chain[-1]))
    while len(chain) > 1:
        os.close(chain.pop())
        os.rmdir(DEEP, dir_fd=chain[-1])
    os.close(chain[0])
    root.rmdir()


def _lzw_constant(pixels: int, min_code_size: int = 2) -> bytes:
    """GIF LZW data for `pixels` pixels of colour 0, as a GIF encoder would write them: runs
    of growing length, so that 9 million pixels take a few kilobytes."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    out = bytearray()
    bits = nbits = 0

    def emit(code: int, width: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    width, next_code = min_code_size + 1, end + 1
    emit(clear, width)
    run, left = 1, pixels  # the run of zeros the next code stands for
    while left:
        length = min(run, left)
        emit(0 if length == 1 else end + length - 1, width)  # runs of 2, 3, ... are codes 6, 7, ...
        left -= length
        if not left:
            break
        # Each code but the last adds a table entry (the run one longer); the decoder adds it
        # one code later, and widens its codes when its table reaches a power of two.
        next_code += 1
        run += 1
        if next_code == 4096:  # the table is full: start again
            emit(clear, width)
            width, next_code, run = min_code_size + 1, end + 1, 1
        elif next_code == (1 << width) + 1 and width < 12:
            width += 1
    emit(end, width)
    if nbits:
        out.append(bits & 0xFF)
    return bytes(out)


def make_gif_bomb(path: Path, width: int = 3000, height: int = 3000, frames: int = 60) -> Path:
    """An animated GIF of `frames` frames of width x height, every pixel set (it decodes in
    full), written without encoding an image: about half a megabyte for the defaults."""
    data = _lzw_constant(width * height)
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    frame = (b"\x21\xf9\x04\x00\x0a\x00\x00\x00"                     # graphic control: 100 ms
             + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
             + b"\x02" + blocks + b"\x00")
    header = (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x81, 0, 0)   # 4-colour global table
              + b"\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00\xff"
              + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")              # loop forever
    path.write_bytes(header + frame * frames + b"\x3b")
    return path


def _jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=50)
    return buffer.getvalue()


class _WriteOnly:
    """A file that can only be written to: a muxer cannot go back to fill in durations."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        return int(self._handle.write(data))


def make_mjpeg_mkv(path: Path, frame_sizes: list[tuple[int, int]], *, declared: tuple[int, int] = (64, 64),
                   seekable: bool = True) -> Path:
    """A Matroska file of Motion-JPEG frames, one JPEG per frame at the sizes given, under a
    track that declares `declared`. Written as a stream (`seekable=False`), it declares
    neither its duration nor its frame count."""
    import av

    with open(path, "wb") as raw, \
            av.open(raw if seekable else _WriteOnly(raw), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = declared[0], declared[1], "yuvj420p"
        for index, size in enumerate(frame_sizes):
            packet = av.Packet(_jpeg(size, (200, 40, 40)))
            packet.stream = stream
            packet.pts = packet.dts = index
            packet.time_base = Fraction(1, 10)
            out.mux(packet)
    return path


def make_avi_declaring(path: Path, width: int, height: int) -> Path:
    """An AVI of three 64x64 raw frames whose headers declare width x height."""
    import av

    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 64), "red")).reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    main = data.index(b"avih") + 8
    data[main + 32:main + 40] = struct.pack("<II", width, height)      # dwWidth, dwHeight
    bitmap = data.index(b"strf") + 8
    data[bitmap + 4:bitmap + 12] = struct.pack("<ii", width, height)   # biWidth, biHeight
    path.write_bytes(data)
    return path
