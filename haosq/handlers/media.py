"""Image and video work for the `file:*` job types: metadata, thumbnails, re-encoding.

Images go through Pillow, video and audio through PyAV (whose wheels bundle ffmpeg), both
reading the file object the caller opened below its root (haosq.handlers.pathguard) and
writing to the output file it opened there. Every image is measured before it is decoded,
so that a small file declaring a huge canvas (a decompression bomb) is refused instead of
eating the worker's memory.
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from typing import Any, BinaryIO

import av
from PIL import Image, ImageOps, ImageSequence

from haosq.errors import PermanentError
from haosq.handlers.pathguard import Output

EXIF_ORIENTATION = 0x0112
EXIF_GPS_IFD = 0x8825
IMAGE_FORMATS = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "avif": "AVIF"}
SUFFIXES = {"WEBP": ".webp", "JPEG": ".jpg", "PNG": ".png", "AVIF": ".avif"}
VIDEO_CODECS = ("libx264", "h264", "libopenh264", "mpeg4")


def open_image(source: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """Open (lazily, headers only) and refuse images larger than `max_pixels`."""
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PermanentError(f"image refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PermanentError(f"cannot read image {name}: {exc}") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        image.close()
        raise PermanentError(
            f"image refused as a decompression bomb: {image.width}x{image.height} = {pixels} pixels, "
            f"over the limit of {max_pixels}")
    return image


def image_metadata(source: BinaryIO, name: str, max_pixels: int) -> dict[str, Any]:
    with open_image(source, name, max_pixels) as image:
        exif = image.getexif()
        return {
            "kind": "image",
            "format": image.format,
            "width": image.width,
            "height": image.height,
            "mode": image.mode,
            "orientation": int(exif.get(EXIF_ORIENTATION, 1)),
            "frames": int(getattr(image, "n_frames", 1)),
            "animated": bool(getattr(image, "is_animated", False)),
            "hasGps": bool(exif.get_ifd(EXIF_GPS_IFD)) or EXIF_GPS_IFD in exif,
        }


def write_without_gps(source: BinaryIO, name: str, output: Output, max_pixels: int) -> None:
    """A copy of the image without its GPS EXIF block (JPEG quality tables kept)."""
    with open_image(source, name, max_pixels) as image:
        exif = image.getexif()
        exif.pop(EXIF_GPS_IFD, None)
        options: dict[str, Any] = {"exif": exif.tobytes()}
        if image.format == "JPEG":
            options["quality"] = "keep"
        if getattr(image, "is_animated", False):
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


def image_for_thumbnails(source: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """The first frame, upright (EXIF orientation applied), fully decoded."""
    with open_image(source, name, max_pixels) as image:
        image.seek(0)
        try:
            upright = ImageOps.exif_transpose(image)
            upright.load()
        except (OSError, ValueError) as exc:
            raise PermanentError(f"cannot decode image {name}: {exc}") from None
        return upright.copy()


ANIMATED_FORMATS = ("WEBP", "PNG")  # formats Pillow writes animated (WebP, APNG)


def reencode_image(source: BinaryIO, name: str, output: Output, fmt: str, quality: int,
                   max_width: int | None, max_pixels: int) -> None:
    """Re-encode an image; an animated one keeps every frame (to WebP or APNG)."""
    with open_image(source, name, max_pixels) as probe:
        animated = bool(getattr(probe, "is_animated", False))
    if animated:
        if fmt not in ANIMATED_FORMATS:
            raise PermanentError(
                f"format: {name} is animated; compress it to webp or png to keep its frames")
        frames, durations, loop = _frames(source, name, max_pixels)
    else:
        frames, durations, loop = [image_for_thumbnails(source, name, max_pixels)], [], 0
    frames = [_rgb_for(_fit_width(frame, max_width), fmt) for frame in frames]
    options: dict[str, Any] = {"quality": quality}
    if fmt == "JPEG":
        options.update(optimize=True, progressive=True)
    elif fmt == "PNG":
        options = {"optimize": True}
    if animated:
        options.update(save_all=True, append_images=frames[1:], duration=durations, loop=loop)
    frames[0].save(output.file, format=fmt, **options)


def _frames(source: BinaryIO, name: str, max_pixels: int) -> tuple[list[Image.Image], list[int], int]:
    with open_image(source, name, max_pixels) as image:
        frames, durations = [], []
        for frame in ImageSequence.Iterator(image):
            frames.append(frame.convert("RGBA"))
            durations.append(int(frame.info.get("duration", 100)))
        return frames, durations, int(image.info.get("loop", 0))


def _fit_width(image: Image.Image, max_width: int | None) -> Image.Image:
    if max_width and image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        return image.resize((max_width, height), Image.Resampling.LANCZOS)
    return image


# -- video and audio ------------------------------------------------------------------------


def _open_media(source: BinaryIO, name: str) -> av.container.InputContainer:
    source.seek(0)
    try:
        return av.open(source, mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise PermanentError(f"cannot read media {name}: {exc}") from None


def media_metadata(source: BinaryIO, name: str) -> dict[str, Any]:
    with _open_media(source, name) as container:
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


def video_frame(source: BinaryIO, name: str, offset: float | None) -> tuple[Image.Image, float]:
    """The first frame at or after `offset` seconds (default: 1 s, or mid-way when shorter)."""
    with _open_media(source, name) as container:
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
        fallback = None
        for frame in container.decode(stream):
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
                    codec: str, preset: str) -> dict[str, Any]:
    """Re-encode the first video stream to MP4 (`codec`, CRF, scaled to `width`); audio copied."""
    with _open_media(source, name) as inp:
        if not inp.streams.video:
            raise PermanentError(f"{name} has no video stream")
        vin = inp.streams.video[0]
        src_w, src_h = vin.codec_context.width, vin.codec_context.height
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
                    scaled = frame.reformat(width=out_w, height=out_h, format="yuv420p")
                    scaled.pts = frames
                    scaled.time_base = Fraction(1) / rate
                    frames += 1
                    out.mux(vout.encode(scaled))
            out.mux(vout.encode(None))
    return {"codec": codec, "width": out_w, "height": out_h, "frames": frames}
