"""Image and video work for the `file:*` job types: metadata, thumbnails, re-encoding.

Images go through Pillow, video and audio through PyAV (whose wheels bundle ffmpeg), both
reading the file object the caller opened below its root (haosq.handlers.pathguard) and
writing to the output file it opened there.

Nothing is decoded before the work it asks for is known and allowed: an image's frames,
canvas and the pixels of all frames together come from its headers (imageheaders), and a
video's resolution, frames and duration from its container, checked
against `[handlers.files] max_image_*` and `max_video_*`; while decoding, ffmpeg refuses
frames over the pixel limit and every decoded frame is counted against the same limits (a
container may understate). A file beyond them fails the job permanently, saying which limit.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import av
from PIL import Image, ImageOps

from haosq.errors import PermanentError
from haosq.handlers.file_settings import ImageLimits, VideoLimits
from haosq.handlers.imageheaders import ImageWork, measure
from haosq.handlers.pathguard import Output

EXIF_ORIENTATION = 0x0112
EXIF_GPS_IFD = 0x8825
IMAGE_FORMATS = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "avif": "AVIF"}
SUFFIXES = {"WEBP": ".webp", "JPEG": ".jpg", "PNG": ".png", "AVIF": ".avif"}
VIDEO_CODECS = ("libx264", "h264", "libopenh264", "mpeg4")
# The formats Pillow may open: those the type sniffer recognises as images (JPEG includes
# MPO). The others (FLI, PSD, ...) are refused, whatever Pillow could make of them.
READ_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "AVIF")


@functools.cache
def _read_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(name for name in READ_FORMATS if name in Image.OPEN)


# -- images -----------------------------------------------------------------------------------


def check_image_work(work: ImageWork, name: str, limits: ImageLimits) -> None:
    """Refuse an image whose decoding would go past a limit (a decompression bomb)."""
    if work.frame_pixels > limits.pixels:
        raise PermanentError(
            f"image refused as a decompression bomb: {name} is {work.width}x{work.height} = "
            f"{work.frame_pixels} pixels per frame, over max_image_pixels = {limits.pixels}")
    if work.frames > limits.frames:
        raise PermanentError(
            f"image refused as a decompression bomb: {name} has {work.frames} frames, over "
            f"max_image_frames = {limits.frames}")
    if work.total_pixels > limits.total_pixels:
        raise PermanentError(
            f"image refused as a decompression bomb: {name} is {work.frames} frames of "
            f"{work.width}x{work.height} = {work.total_pixels} pixels to decode, over "
            f"max_image_total_pixels = {limits.total_pixels}")


def open_image(source: BinaryIO, name: str, limits: ImageLimits) -> tuple[Image.Image, ImageWork]:
    """Open an image (lazily, headers only) whose work is within `limits`, and that work."""
    declared = measure(source)
    if declared is not None:
        check_image_work(declared, name, limits)  # before Pillow so much as parses it
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=_read_formats())
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PermanentError(f"image refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PermanentError(f"cannot read image {name}: {exc}") from None
    try:
        if declared is None:  # single-frame formats, and those whose frame count costs nothing
            frames = int(getattr(image, "n_frames", 1))
            work = ImageWork(frames, image.width, image.height, frames * image.width * image.height)
        else:  # what Pillow reads may be larger than what the header walk found
            width, height = max(declared.width, image.width), max(declared.height, image.height)
            work = ImageWork(declared.frames, width, height,
                             max(declared.total_pixels, declared.frames * width * height))
        check_image_work(work, name, limits)
    except BaseException:
        with image:
            raise
    return image, work


def check_image(source: BinaryIO, name: str, limits: ImageLimits) -> ImageWork:
    """The work of decoding the image, refused past `limits`, without decoding it."""
    image, work = open_image(source, name, limits)
    with image:  # leaves `source` open (Image.close would close it)
        return work


def image_metadata(source: BinaryIO, name: str, limits: ImageLimits) -> dict[str, Any]:
    image, work = open_image(source, name, limits)
    with image:
        exif = image.getexif()
        return {
            "kind": "image",
            "format": image.format,
            "width": image.width,
            "height": image.height,
            "mode": image.mode,
            "orientation": int(exif.get(EXIF_ORIENTATION, 1)),
            "frames": work.frames,
            "animated": work.frames > 1,
            "hasGps": bool(exif.get_ifd(EXIF_GPS_IFD)) or EXIF_GPS_IFD in exif,
        }


def write_without_gps(source: BinaryIO, name: str, output: Output, limits: ImageLimits) -> None:
    """A copy of the image without its GPS EXIF block (JPEG quality tables kept)."""
    image, work = open_image(source, name, limits)
    with image:
        exif = image.getexif()
        exif.pop(EXIF_GPS_IFD, None)
        options: dict[str, Any] = {"exif": exif.tobytes()}
        if image.format == "JPEG":
            options["quality"] = "keep"
        if work.frames > 1:
            options["save_all"] = True
        image.save(output.file, format=image.format or "PNG", **options)


def image_format(name: str) -> str:
    try:
        return IMAGE_FORMATS[name.lower()]
    except KeyError:
        raise PermanentError(
            f"format: {name!r} is not an output format (use {', '.join(sorted(IMAGE_FORMATS))})") from None


def _rgb_for(image: Image.Image, fmt: str) -> Image.Image:
    if fmt in ("WEBP", "PNG", "AVIF") and image.mode in ("RGBA", "LA", "P"):
        return image.convert("RGBA")
    return image.convert("RGB")


def save_thumbnail(image: Image.Image, size: int, output: Output, fmt: str, quality: int) -> tuple[int, int]:
    """Write a thumbnail that fits in size x size; returns its (width, height)."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    thumb = _rgb_for(thumb, fmt)
    thumb.save(output.file, format=fmt, quality=quality)
    return thumb.width, thumb.height


def image_for_thumbnails(source: BinaryIO, name: str, limits: ImageLimits) -> Image.Image:
    """The first frame, upright (EXIF orientation applied), fully decoded."""
    image, _ = open_image(source, name, limits)
    with image:
        return _upright(image, name)


def _upright(image: Image.Image, name: str) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(image)
        upright.load()
    except (OSError, ValueError) as exc:
        raise PermanentError(f"cannot decode image {name}: {exc}") from None
    return upright.copy()


ANIMATED_FORMATS = ("WEBP", "PNG")  # formats Pillow writes animated (WebP, APNG)


def reencode_image(source: BinaryIO, name: str, output: Output, fmt: str, quality: int,
                   max_width: int | None, limits: ImageLimits) -> None:
    """Re-encode an image; an animated one keeps every frame (to WebP or APNG)."""
    image, work = open_image(source, name, limits)
    with image:
        animated = work.frames > 1
        if animated and fmt not in ANIMATED_FORMATS:
            raise PermanentError(
                f"format: {name} is animated; compress it to webp or png to keep its frames")
        durations: list[int] = []
        frames = []
        # Each frame is shrunk and converted as soon as it is decoded: only the outputs are kept.
        for frame in (_frames(image, work, name, limits) if animated else iter([_upright(image, name)])):
            frames.append(_rgb_for(_fit_width(frame, max_width), fmt))
            durations.append(int(frame.info.get("duration", 100)))
        loop = int(image.info.get("loop", 0))
    options: dict[str, Any] = {"quality": quality}
    if fmt == "JPEG":
        options.update(optimize=True, progressive=True)
    elif fmt == "PNG":
        options = {"optimize": True}
    if animated:
        options.update(save_all=True, append_images=frames[1:], duration=durations, loop=loop)
    frames[0].save(output.file, format=fmt, **options)


def _frames(image: Image.Image, work: ImageWork, name: str, limits: ImageLimits) -> Iterator[Image.Image]:
    """Every frame, decoded one at a time, each counted against what the headers declared."""
    decoded = 0
    pixels = 0
    while True:
        try:
            image.seek(decoded)
        except EOFError:
            return
        except (OSError, ValueError) as exc:
            raise PermanentError(f"cannot decode image {name}: {exc}") from None
        decoded += 1
        pixels += image.width * image.height
        if decoded > work.frames or image.width * image.height > work.frame_pixels:
            check_image_work(ImageWork(decoded, image.width, image.height, pixels), name, limits)
            raise PermanentError(f"image refused: {name} decodes to more than its headers declare "
                                 f"({work.frames} frames of {work.width}x{work.height})")
        try:
            yield image.convert("RGBA")
        except (OSError, ValueError) as exc:
            raise PermanentError(f"cannot decode image {name}: {exc}") from None


def _fit_width(image: Image.Image, max_width: int | None) -> Image.Image:
    if max_width and image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        return image.resize((max_width, height), Image.Resampling.LANCZOS)
    return image


# -- video and audio ------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoWork:
    """What a video's container declares about its (first) video stream; None: not declared."""

    width: int
    height: int
    frames: int | None
    duration: float | None


def _declared(container: av.container.InputContainer, stream: av.VideoStream) -> VideoWork:
    duration = container.duration / av.time_base if container.duration else None
    if duration is None and stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    frames = stream.frames or None
    if frames is None and duration is not None and stream.average_rate:
        frames = math.ceil(duration * float(stream.average_rate))
    return VideoWork(stream.codec_context.width, stream.codec_context.height, frames, duration)


def check_video_work(work: VideoWork, name: str, limits: VideoLimits) -> None:
    """Refuse a video whose decoding would go past a limit, from what its container declares."""
    pixels = work.width * work.height
    if pixels > limits.pixels:
        raise PermanentError(
            f"video refused: {name} declares {work.width}x{work.height} = {pixels} pixels per frame, "
            f"over max_video_pixels = {limits.pixels}")
    if work.duration is not None and work.duration > limits.duration:
        raise PermanentError(f"video refused: {name} declares {work.duration:.0f} s, over "
                             f"max_video_duration = {limits.duration:g}")
    if work.frames is not None and work.frames > limits.frames:
        raise PermanentError(f"video refused: {name} declares {work.frames} frames, over "
                             f"max_video_frames = {limits.frames}")
    if work.frames is not None and work.frames * pixels > limits.total_pixels:
        raise PermanentError(
            f"video refused: {name} declares {work.frames} frames of {work.width}x{work.height} = "
            f"{work.frames * pixels} pixels to decode, over max_video_total_pixels = {limits.total_pixels}")


class FrameBudget:
    """Decoded frames counted against the limits, for containers that understate."""

    def __init__(self, name: str, limits: VideoLimits) -> None:
        self.name = name
        self.limits = limits
        self.frames = 0
        self.pixels = 0

    def spend(self, frame: av.VideoFrame) -> None:
        self.frames += 1
        self.pixels += frame.width * frame.height
        limits = self.limits
        if frame.width * frame.height > limits.pixels:
            raise PermanentError(f"video refused while decoding: {self.name} has a frame of "
                                 f"{frame.width}x{frame.height}, over max_video_pixels = {limits.pixels}")
        if self.frames > limits.frames:
            raise PermanentError(f"video refused while decoding: {self.name} has more than "
                                 f"max_video_frames = {limits.frames} frames")
        if self.pixels > limits.total_pixels:
            raise PermanentError(f"video refused while decoding: {self.name} decodes to more than "
                                 f"max_video_total_pixels = {limits.total_pixels} pixels")


# While ffmpeg probes the streams for their parameters, its decoders skip every frame: what
# the container declares is read, nothing is decoded before it is checked.
_PROBE = {"skip_frame": "all"}


@contextlib.contextmanager
def _open_media(source: BinaryIO, name: str, limits: VideoLimits) -> Iterator[av.container.InputContainer]:
    """The container, its video streams checked against `limits`, their decoders set to
    refuse frames over the pixel limit."""
    source.seek(0)
    guard = {"max_pixels": str(min(limits.pixels, 2**31 - 1))}
    try:
        container = av.open(source, mode="r", options=_PROBE)
    except MemoryError:
        raise
    except (av.FFmpegError, OSError) as exc:
        raise PermanentError(f"cannot read media {name} (frames over max_video_pixels = {limits.pixels} "
                             f"are refused while reading): {exc}") from None
    with container:
        for stream in container.streams.video:
            check_video_work(_declared(container, stream), name, limits)
            stream.codec_context.options = dict(guard)
        try:
            yield container
        except MemoryError:
            raise
        except av.FFmpegError as exc:
            raise PermanentError(f"cannot decode or encode video {name} (frames over max_video_pixels = "
                                 f"{limits.pixels} are refused while decoding): {exc}") from None


def check_video(source: BinaryIO, name: str, limits: VideoLimits) -> None:
    """Refuse a video whose container declares more work than `limits`, without decoding it."""
    with _open_media(source, name, limits):
        pass


def media_metadata(source: BinaryIO, name: str, limits: VideoLimits) -> dict[str, Any]:
    with _open_media(source, name, limits) as container:
        duration = container.duration / av.time_base if container.duration else None
        result: dict[str, Any] = {
            "kind": "video" if container.streams.video else "audio",
            "format": container.format.name,
            "duration": round(duration, 3) if duration is not None else None,
            "bitRate": container.bit_rate or None,
        }
        if container.streams.video:
            video = container.streams.video[0]
            result.update(
                videoCodec=video.codec_context.name, width=video.codec_context.width,
                height=video.codec_context.height,
                frameRate=float(video.average_rate) if video.average_rate else None)
            if duration is None and video.duration and video.time_base:
                result["duration"] = round(float(video.duration * video.time_base), 3)
        if container.streams.audio:
            audio = container.streams.audio[0]
            result.update(audioCodec=audio.codec_context.name, sampleRate=audio.codec_context.sample_rate,
                          channels=audio.codec_context.channels)
        return result


def video_frame(source: BinaryIO, name: str, offset: float | None,
                limits: VideoLimits) -> tuple[Image.Image, float]:
    """The first frame at or after `offset` seconds (default: 1 s, or mid-way when shorter)."""
    with _open_media(source, name, limits) as container:
        if not container.streams.video:
            raise PermanentError(f"{name} has no video stream")
        stream = container.streams.video[0]
        duration = container.duration / av.time_base if container.duration else None
        if offset is None:
            offset = min(1.0, duration / 2) if duration else 0.0
        if duration is not None and offset > duration:
            raise PermanentError(f"offsetSeconds: {offset} is past the end of the video ({duration:.2f} s)")
        if offset > 0 and stream.time_base:
            container.seek(int(offset / stream.time_base), stream=stream, backward=True)
        budget = FrameBudget(name, limits)
        fallback = None
        for frame in container.decode(stream):
            budget.spend(frame)
            fallback = frame
            if frame.time is None or frame.time >= offset - 1e-3:
                return frame.to_image(), float(frame.time or 0.0)
        if fallback is not None:
            return fallback.to_image(), float(fallback.time or 0.0)
        raise PermanentError(f"{name}: no video frame could be decoded")


def video_codec(preferred: str | None) -> str:
    candidates = (preferred, *VIDEO_CODECS) if preferred else VIDEO_CODECS
    for name in candidates:
        if name and name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
            except (av.FFmpegError, ValueError):
                continue
            return name
    raise PermanentError("no H.264 or MPEG-4 encoder is available in this PyAV build")


def transcode_video(source: BinaryIO, name: str, output: Output, *, width: int | None, crf: int,
                    codec: str, preset: str, limits: VideoLimits) -> dict[str, Any]:
    """Re-encode the first video stream to MP4 (`codec`, CRF, scaled to `width`); audio copied."""
    with _open_media(source, name, limits) as inp:
        if not inp.streams.video:
            raise PermanentError(f"{name} has no video stream")
        vin = inp.streams.video[0]
        src_w, src_h = vin.codec_context.width, vin.codec_context.height
        if src_w < 2 or src_h < 2:
            raise PermanentError(f"{name}: the video's frame size is unknown ({src_w}x{src_h})")
        budget = FrameBudget(name, limits)
        out_w = min(width or src_w, src_w)
        out_h = round(src_h * out_w / src_w)
        out_w, out_h = out_w - out_w % 2, max(2, out_h - out_h % 2)
        rate = vin.average_rate or Fraction(25)
        with av.open(output.file, mode="w", format="mp4") as out:
            vout = out.add_stream(codec, rate=rate)
            vout.width, vout.height, vout.pix_fmt = out_w, out_h, "yuv420p"
            if codec == "libx264":
                vout.options = {"crf": str(crf), "preset": preset}
            streams = [vin]
            aout = None
            if inp.streams.audio:
                ain = inp.streams.audio[0]
                aout = out.add_stream_from_template(ain)
                streams.append(ain)
            frames = 0
            for packet in inp.demux(*streams):
                if packet.stream.type == "audio" and aout is not None:
                    if packet.dts is not None:
                        packet.stream = aout
                        out.mux(packet)
                    continue
                for frame in packet.decode():
                    budget.spend(frame)
                    scaled = frame.reformat(width=out_w, height=out_h, format="yuv420p")
                    scaled.pts = frames
                    scaled.time_base = Fraction(1) / rate
                    frames += 1
                    out.mux(vout.encode(scaled))
            out.mux(vout.encode(None))
    return {"codec": codec, "width": out_w, "height": out_h, "frames": frames}
