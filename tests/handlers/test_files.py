"""file:process-upload, file:generate-thumbnails and file:compress-media on real files."""

from __future__ import annotations

import grp
import gzip
import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import av
import pytest
from PIL import Image

from haosq.errors import PermanentError
from haosq.handlers.files import compress_media, generate_thumbnails, process_upload
from tests.handlers.file_samples import gps_exif, make_bomb_png, make_image, make_video, make_wav, zip_bytes

pytest_plugins = ["tests.handlers.peers_files"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- file:process-upload ---------------------------------------------------------------------


def test_upload_of_a_photo_reports_metadata_strips_gps_and_enqueues_followups(file_area, job_context, conn):
    photo = make_image(file_area.root / "photo.jpg", (640, 480), exif=gps_exif(orientation=6))
    original_hash = sha256(photo)
    payload = {"fileId": "file_123", "filePath": str(photo), "contentType": "image/jpeg"}
    ctx = job_context("file:process-upload", payload, {"files": file_area.table(strip_gps=True)})

    result = process_upload(payload, ctx)

    assert result["contentType"] == "image/jpeg"
    assert result["sha256"] == original_hash
    assert result["size"] == photo.stat().st_size
    meta = result["metadata"]
    assert (meta["format"], meta["width"], meta["height"], meta["orientation"]) == ("JPEG", 640, 480, 6)
    assert meta["hasGps"] is True
    # The original is untouched; the copy has no GPS block but keeps the rest of the EXIF.
    assert sha256(photo) == original_hash
    sanitized = Path(result["sanitizedPath"])
    assert sanitized.parent == file_area.output
    with Image.open(sanitized) as cleaned:
        exif = cleaned.getexif()
        assert 0x8825 not in exif
        assert exif[0x0112] == 6
    with Image.open(photo) as untouched:
        assert 0x8825 in untouched.getexif()
    assert [f.type for f in ctx.followups] == ["file:generate-thumbnails"]
    assert ctx.followups[0].payload == {"fileId": "file_123", "filePath": str(photo),
                                        "contentType": "image/jpeg"}
    logs = conn.execute("SELECT message FROM haosq.job_logs WHERE job_id = %s ORDER BY id",
                        (ctx.job_id,)).fetchall()
    assert [row["message"].split(":")[0] for row in logs] == [
        "GPS EXIF removed", "no virus scan", "upload checked"]


def test_the_virus_scan_follows_an_upload_only_where_a_clamd_is_configured(file_area, job_context, conn,
                                                                           monkeypatch):
    document = file_area.root / "notes.txt"
    document.write_text("plain words\n")
    payload = {"fileId": "doc-1", "filePath": "notes.txt", "contentType": "text/plain"}

    ctx = job_context("file:process-upload", payload, {"files": file_area.table()})
    result = process_upload(payload, ctx)
    assert result["followups"] == [] and ctx.followups == []
    assert result["virusScan"] == "not configured"
    logged = conn.execute("SELECT level, message, metadata FROM haosq.job_logs WHERE job_id = %s "
                          "AND message LIKE 'no virus scan%%'", (ctx.job_id,)).fetchone()
    assert logged["level"] == "info" and "clamd_address" in logged["message"]
    assert logged["metadata"] == {"file_id": "doc-1"}

    for handlers in ({"files": file_area.table(clamd_address="/run/clamav/clamd.ctl")}, None):
        if handlers is None:  # the address from the environment counts as configured too
            monkeypatch.setenv("HAOSQ_CLAMD_ADDRESS", "127.0.0.1:3310")
            handlers = {"files": file_area.table()}
        ctx = job_context("file:process-upload", payload, handlers)
        result = process_upload(payload, ctx)
        assert result["followups"] == ["file:virus-scan"] and "virusScan" not in result
        assert [(f.type, f.payload["filePath"]) for f in ctx.followups] == [
            ("file:virus-scan", str(document))]


def test_upload_can_strip_gps_in_place_when_the_payload_asks(file_area, job_context):
    photo = make_image(file_area.root / "photo.jpg", (320, 240), exif=gps_exif())
    before = sha256(photo)
    payload = {"file_id": "f1", "file_path": "photo.jpg", "content_type": "image/jpg",
               "modify_original": True, "enqueue_followups": False}
    ctx = job_context("file:process-upload", payload, {"files": file_area.table(strip_gps=True)})

    result = process_upload(payload, ctx)

    assert result["sanitizedPath"] == str(photo)
    assert result["sha256"] == sha256(photo) != before
    with Image.open(photo) as image:
        assert 0x8825 not in image.getexif()
    assert result["followups"] == [] and ctx.followups == []


def test_upload_whose_bytes_lie_about_their_type_is_refused(file_area, job_context):
    liar = make_image(file_area.root / "holiday.jpg", (64, 64), fmt="PNG")
    payload = {"fileId": "f2", "filePath": str(liar), "contentType": "image/jpeg"}
    with pytest.raises(PermanentError, match=r"contentType: .*image/jpeg.*image/png"):
        process_upload(payload, job_context("file:process-upload", payload, {"files": file_area.table()}))

    script = file_area.root / "avatar.png"
    script.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(100))
    payload = {"fileId": "f3", "filePath": str(script), "contentType": "image/png"}
    with pytest.raises(PermanentError, match="application/x-executable"):
        process_upload(payload, job_context("file:process-upload", payload, {"files": file_area.table()}))


def test_a_decompression_bomb_header_is_refused_before_decoding(file_area, job_context):
    bomb = make_bomb_png(file_area.root / "bomb.png")
    assert bomb.stat().st_size < 100_000
    payload = {"fileId": "f4", "filePath": str(bomb), "contentType": "image/png"}
    ctx = job_context("file:process-upload", payload, {"files": file_area.table()})
    with pytest.raises(PermanentError, match="decompression bomb"):
        process_upload(payload, ctx)
    thumbs = {"filePath": str(bomb)}
    with pytest.raises(PermanentError, match="decompression bomb"):
        generate_thumbnails(thumbs, job_context("file:generate-thumbnails", thumbs,
                                                {"files": file_area.table()}))
    assert not file_area.output.exists()


@pytest.mark.parametrize(("payload", "message"), [
    ({"fileId": "x", "contentType": "image/png"}, "field 'filePath' is required"),
    ({"fileId": "x", "filePath": "a.png", "contentType": "not a type"}, "field 'contentType'"),
    ({"fileId": "", "filePath": "a.png", "contentType": "image/png"}, "field 'fileId'"),
    ({"fileId": "x", "filePath": "a.png", "contentType": "image/png", "colour": 1},
     "field 'colour' is not a known field"),
])
def test_bad_payloads_fail_naming_the_field(file_area, job_context, payload, message):
    ctx = job_context("file:process-upload", payload, {"files": file_area.table()})
    with pytest.raises(PermanentError, match=message):
        process_upload(payload, ctx)


def test_paths_outside_the_roots_are_refused(file_area, job_context, tmp_path):
    outside = make_image(tmp_path / "secret.png", (16, 16), fmt="PNG")
    (file_area.root / "link.png").symlink_to(outside)
    (file_area.root / "sub").symlink_to(tmp_path, target_is_directory=True)
    cases = [(str(outside), "is not inside a configured file root"),
             (str(file_area.root / ".." / "secret.png"), "contains '..'"),
             ("../secret.png", "contains '..'"),
             ("link.png", "is a symlink, which is never followed"),
             ("sub/secret.png", "goes through 'sub', a symlink, which is never followed")]
    for path, message in cases:
        payload = {"fileId": "x", "filePath": path, "contentType": "image/png"}
        with pytest.raises(PermanentError, match=f"filePath: '.*' {message}"):
            process_upload(payload, job_context("file:process-upload", payload,
                                                {"files": file_area.table()}))
    payload = {"fileId": "x", "filePath": "missing.png", "contentType": "image/png"}
    with pytest.raises(PermanentError, match="does not exist"):
        process_upload(payload, job_context("file:process-upload", payload, {"files": file_area.table()}))
    with pytest.raises(PermanentError, match="no file roots are configured"):
        process_upload(payload, job_context("file:process-upload", payload, {"files": {}}))


def test_upload_over_the_size_limit_is_refused(file_area, job_context):
    photo = make_image(file_area.root / "big.jpg", (200, 200))
    payload = {"fileId": "x", "filePath": str(photo), "contentType": "image/jpeg"}
    ctx = job_context("file:process-upload", payload, {"files": file_area.table(max_file_size="1K")})
    with pytest.raises(PermanentError, match="over the limit of 1024"):
        process_upload(payload, ctx)


def test_upload_of_a_video_reports_duration_codec_and_dimensions(file_area, job_context):
    video = make_video(file_area.root / "clip.mp4", seconds=2.0, size=(320, 240))
    payload = {"fileId": "v1", "filePath": str(video), "contentType": "video/mp4"}
    ctx = job_context("file:process-upload", payload, {"files": file_area.table()})

    result = process_upload(payload, ctx)

    meta = result["metadata"]
    assert meta["kind"] == "video"
    assert meta["duration"] == pytest.approx(2.0, abs=0.1)
    assert (meta["videoCodec"], meta["width"], meta["height"]) == ("mpeg4", 320, 240)
    assert meta["frameRate"] == pytest.approx(24.0)
    assert result["followups"] == ["file:generate-thumbnails"]  # no clamd configured: no scan


def test_upload_of_audio_and_of_video_with_sound(file_area, job_context):
    wav = make_wav(file_area.root / "tone.wav", seconds=1.5)
    payload = {"fileId": "a1", "filePath": str(wav), "contentType": "audio/x-wav"}
    result = process_upload(payload, job_context("file:process-upload", payload,
                                                 {"files": file_area.table()}))
    meta = result["metadata"]
    assert (meta["kind"], meta["audioCodec"], meta["sampleRate"], meta["channels"]) == (
        "audio", "pcm_s16le", 22050, 1)
    assert meta["duration"] == pytest.approx(1.5, abs=0.05)
    assert result["followups"] == []  # no thumbnail for sound, and no clamd for a scan

    video = make_video(file_area.root / "talk.mp4", seconds=1.0, size=(160, 120), audio=True)
    payload = {"fileId": "a2", "filePath": str(video), "contentType": "video/mp4"}
    result = process_upload(payload, job_context("file:process-upload", payload,
                                                 {"files": file_area.table()}))
    assert (result["metadata"]["videoCodec"], result["metadata"]["audioCodec"]) == ("mpeg4", "aac")


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    path.write_bytes(zip_bytes(entries))
    return path


@pytest.mark.parametrize(("entries", "limits", "message"), [
    ({"../evil.sh": b"x"}, {}, r"climbs out of the archive"),
    ({"/etc/cron.d/evil": b"x"}, {}, "absolute path"),
    ({"zeros.bin": bytes(20 * 1024 * 1024)}, {}, r"expands \d+x"),
    ({f"f{i}.txt": b"x" for i in range(6)}, {"archive_max_entries": 5}, "more than 5 entries"),
    ({"a.txt": b"a" * 5000}, {"archive_max_total_size": 4096}, "uncompressed size exceeds 4096"),
])
def test_archive_uploads_beyond_the_caps_are_refused(file_area, job_context, entries, limits, message):
    archive = write_zip(file_area.root / "upload.zip", entries)
    payload = {"fileId": "z", "filePath": str(archive), "contentType": "application/zip"}
    ctx = job_context("file:process-upload", payload, {"files": file_area.table(**limits)})
    with pytest.raises(PermanentError, match=message):
        process_upload(payload, ctx)


def test_archive_links_and_depth_are_refused_and_a_sane_archive_passes(file_area, job_context):
    table = {"files": file_area.table(archive_max_depth=2)}

    def upload(path: Path, content_type: str) -> dict:
        payload = {"fileId": "z", "filePath": str(path), "contentType": content_type}
        return process_upload(payload, job_context("file:process-upload", payload, table))

    linked = file_area.root / "links.tar"
    with tarfile.open(linked, "w") as tar:
        info = tarfile.TarInfo("passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(PermanentError, match="is a link"):
        upload(linked, "application/x-tar")

    zip_link = file_area.root / "links.zip"
    with zipfile.ZipFile(zip_link, "w") as archive:
        info = zipfile.ZipInfo("shadow")
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, "/etc/shadow")
    with pytest.raises(PermanentError, match="is a link"):
        upload(zip_link, "application/zip")

    innermost = zip_bytes({"deep.txt": b"deep"})
    nested = write_zip(file_area.root / "nested.zip",
                       {"level2.zip": zip_bytes({"level3.zip": innermost})})
    with pytest.raises(PermanentError, match="nested deeper than 2"):
        upload(nested, "application/zip")

    fine = write_zip(file_area.root / "fine.zip", {"docs/readme.txt": b"hello " * 100,
                                                   "inner.zip": zip_bytes({"a.txt": b"a"})})
    result = upload(fine, "application/x-zip-compressed")
    assert result["archive"]["entries"] == 3
    assert result["archive"]["depth"] == 2
    assert result["followups"] == []


def test_compressed_streams_and_compressed_tars_are_measured(file_area, job_context):
    table = {"files": file_area.table()}

    def upload(path: Path, content_type: str) -> dict:
        payload = {"fileId": "c", "filePath": str(path), "contentType": content_type}
        return process_upload(payload, job_context("file:process-upload", payload, table))

    bomb = file_area.root / "zeros.bin.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        for _ in range(40):
            out.write(bytes(1024 * 1024))
    with pytest.raises(PermanentError, match=r"expands \d+x, over the ratio limit of 100"):
        upload(bomb, "application/gzip")

    notes = file_area.root / "notes.txt.gz"
    notes.write_bytes(gzip.compress(b"".join(b"line %d of some notes\n" % i for i in range(2000))))
    result = upload(notes, "application/gzip")
    assert result["archive"]["entries"] == 1 and result["archive"]["totalSize"] > 40_000

    for mode, content_type in (("w:xz", "application/x-xz"), ("w:bz2", "application/x-bzip2")):
        linked = file_area.root / f"links.tar.{mode[2:]}"
        with tarfile.open(linked, mode) as tar:
            info = tarfile.TarInfo("etc")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc"
            tar.addfile(info)
        with pytest.raises(PermanentError, match="is a link"):
            upload(linked, content_type)

    sane = file_area.root / "site.tar.gz"
    with tarfile.open(sane, "w:gz") as tar:
        for name in ("index.html", "css/site.css"):
            data = b"<p>hello</p>" * 50
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = upload(sane, "application/x-compressed-tar")
    assert result["archive"]["entries"] == 2


# -- file:generate-thumbnails ----------------------------------------------------------------


def test_image_thumbnails_respect_exif_orientation(file_area, job_context):
    photo = make_image(file_area.root / "rotated.jpg", (640, 480), exif=gps_exif(orientation=6))
    payload = {"fileId": "t1", "filePath": str(photo), "sizes": [128, 256]}
    ctx = job_context("file:generate-thumbnails", payload, {"files": file_area.table()})

    result = generate_thumbnails(payload, ctx)

    assert [(t["size"], t["width"], t["height"]) for t in result["thumbnails"]] == [
        (128, 96, 128), (256, 192, 256)]
    for thumb in result["thumbnails"]:
        path = Path(thumb["path"])
        assert path.parent == file_area.output and path.suffix == ".webp"
        with Image.open(path) as image:
            assert (image.format, image.size) == ("WEBP", (thumb["width"], thumb["height"]))
    assert not [p for p in file_area.output.iterdir() if p.name.endswith(".part")]


def test_animated_gif_thumbnail_uses_the_first_frame_as_jpeg(file_area, job_context):
    frames = [Image.new("RGB", (200, 100), colour) for colour in ("red", "lime", "blue")]
    gif = file_area.root / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    payload = {"filePath": str(gif), "sizes": [64], "format": "jpeg"}
    ctx = job_context("file:generate-thumbnails", payload, {"files": {"roots": [str(file_area.root)]}})

    result = generate_thumbnails(payload, ctx)

    thumb = result["thumbnails"][0]
    assert Path(thumb["path"]) == file_area.root / "anim.thumb-64.jpg"  # next to the original
    with Image.open(thumb["path"]) as image:
        assert image.format == "JPEG" and image.size == (64, 32)
        red, green, blue = image.convert("RGB").getpixel((32, 16))
        assert red > 200 and green < 60 and blue < 60


def test_video_thumbnail_is_taken_at_the_requested_offset(file_area, job_context):
    video = make_video(file_area.root / "clip.mp4", seconds=2.0, size=(320, 240))
    payload = {"filePath": str(video), "sizes": [160], "offsetSeconds": 1.5}
    ctx = job_context("file:generate-thumbnails", payload, {"files": file_area.table()})

    result = generate_thumbnails(payload, ctx)

    assert 1.5 <= result["frameTime"] < 1.6
    thumb = result["thumbnails"][0]
    assert (thumb["width"], thumb["height"]) == (160, 120)
    with pytest.raises(PermanentError, match="past the end"):
        late = {"filePath": str(video), "offsetSeconds": 9}
        generate_thumbnails(late, job_context("file:generate-thumbnails", late,
                                              {"files": file_area.table()}))


def test_thumbnail_payload_is_validated(file_area, job_context):
    for payload, field in [({"filePath": "a.jpg", "sizes": [8]}, "sizes"),
                           ({"filePath": "a.jpg", "format": "bmp"}, "format"),
                           ({"filePath": "a.jpg", "quality": 0}, "quality")]:
        with pytest.raises(PermanentError, match=field):
            generate_thumbnails(payload, job_context("file:generate-thumbnails", payload,
                                                     {"files": file_area.table()}))


# -- file:compress-media ---------------------------------------------------------------------


def test_image_is_reencoded_smaller_and_the_original_kept(file_area, job_context):
    photo = make_image(file_area.root / "photo.jpg", (800, 600))
    before = sha256(photo)
    payload = {"fileId": "c1", "filePath": str(photo), "format": "webp", "quality": 50, "maxWidth": 400}
    ctx = job_context("file:compress-media", payload, {"files": file_area.table()})

    result = compress_media(payload, ctx)

    assert result["kept"] == "compressed"
    assert result["sizeBefore"] == photo.stat().st_size
    assert result["sizeAfter"] < result["sizeBefore"]
    assert result["savedBytes"] == result["sizeBefore"] - result["sizeAfter"]
    with Image.open(result["output"]) as image:
        assert (image.format, image.size) == ("WEBP", (400, 300))
    assert sha256(photo) == before


def test_compression_that_does_not_shrink_keeps_the_original(file_area, job_context):
    tiny = file_area.root / "dot.png"
    Image.new("RGB", (16, 16), "white").save(tiny, optimize=True)
    payload = {"filePath": str(tiny), "format": "jpeg", "quality": 100}
    ctx = job_context("file:compress-media", payload, {"files": file_area.table()})

    result = compress_media(payload, ctx)

    assert result["kept"] == "original" and result["output"] is None
    assert result["sizeAfter"] >= result["sizeBefore"]
    assert not file_area.output.exists() or not any(file_area.output.iterdir())


def test_video_is_transcoded_to_h264_at_the_target_width(file_area, job_context):
    video = make_video(file_area.root / "clip.mp4", seconds=2.0, size=(320, 240), bit_rate=6_000_000)
    payload = {"filePath": str(video), "maxWidth": 160, "crf": 32, "replaceOriginal": True}
    ctx = job_context("file:compress-media", payload, {"files": file_area.table()})

    result = compress_media(payload, ctx)

    assert result["kept"] == "compressed"
    assert result["output"] == str(video)  # replaced, as the payload asked
    assert result["sizeAfter"] < result["sizeBefore"]
    assert result["frames"] == 48
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)
    assert os.stat(video).st_size == result["sizeAfter"]


def test_an_animated_gif_keeps_its_frames_when_compressed(file_area, job_context):
    frames = [Image.new("RGB", (300, 200), colour) for colour in ("red", "lime", "blue", "white")]
    for index, frame in enumerate(frames):  # some detail, so that the GIF is not trivially small
        for x in range(0, 300, 7):
            frame.putpixel((x, (x * 3 + index * 11) % 200), (x % 256, 90, 180))
    gif = file_area.root / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[100, 200, 100, 300], loop=0)

    payload = {"filePath": str(gif), "format": "webp", "quality": 60, "maxWidth": 150}
    result = compress_media(payload, job_context("file:compress-media", payload,
                                                 {"files": file_area.table()}))

    assert result["kept"] == "compressed"
    with Image.open(result["output"]) as webp:
        assert webp.format == "WEBP" and webp.n_frames == 4 and webp.size == (150, 100)
        webp.seek(2)
        red, green, blue = webp.convert("RGB").getpixel((75, 50))
        assert blue > 200 and red < 60 and green < 60
    payload = {"filePath": str(gif), "format": "jpeg"}
    with pytest.raises(PermanentError, match="animated"):
        compress_media(payload, job_context("file:compress-media", payload, {"files": file_area.table()}))


def test_video_transcode_keeps_the_sound(file_area, job_context):
    video = make_video(file_area.root / "talk.mp4", seconds=1.0, size=(320, 240), audio=True)
    payload = {"filePath": str(video), "maxWidth": 160}
    result = compress_media(payload, job_context("file:compress-media", payload,
                                                 {"files": file_area.table()}))
    assert result["kept"] == "compressed"
    with av.open(result["output"]) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.duration / av.time_base == pytest.approx(1.0, abs=0.1)


def test_sniffed_type_not_extension_decides(file_area, job_context):
    # A JPEG named .bin is still compressed as an image.
    make_image(file_area.root / "tmp.jpg", (300, 200)).rename(file_area.root / "blob.bin")
    payload = {"filePath": str(file_area.root / "blob.bin"), "format": "webp", "quality": 40}
    result = compress_media(payload, job_context("file:compress-media", payload,
                                                 {"files": file_area.table()}))
    assert result["kind"] == "image" and result["format"] == "webp"
    assert result["sizeAfter"] < result["sizeBefore"]


def _another_group_of_this_process(current: int) -> int:
    groups = [g for g in os.getgroups() if g != current]
    if os.geteuid() == 0:  # root may give a file any group
        groups += [g.gr_gid for g in grp.getgrall() if g.gr_gid != current]
    if not groups:
        pytest.skip("this process belongs to one group only")
    return groups[0]


def test_thumbnails_and_compressed_copies_keep_the_originals_mode_and_group(file_area, job_context):
    (file_area.root / "album").mkdir()
    photo = make_image(file_area.root / "album" / "photo.jpg", (400, 300), exif=gps_exif())
    group = _another_group_of_this_process(photo.stat().st_gid)
    os.chown(photo, -1, group)
    os.chmod(photo, 0o640)
    video = make_video(file_area.root / "album" / "clip.mp4", seconds=1.0, size=(160, 120),
                       bit_rate=6_000_000)
    os.chown(video, -1, group)
    os.chmod(video, 0o604)

    outputs = []
    for table in (file_area.table(strip_gps=True), {"roots": [str(file_area.root)], "strip_gps": True}):
        upload = {"fileId": "m", "filePath": "album/photo.jpg", "contentType": "image/jpeg",
                  "enqueueFollowups": False}
        outputs.append(process_upload(upload, job_context("file:process-upload", upload,
                                                          {"files": table}))["sanitizedPath"])
        thumbs = {"filePath": "album/photo.jpg", "sizes": [64]}
        outputs += [t["path"] for t in generate_thumbnails(
            thumbs, job_context("file:generate-thumbnails", thumbs, {"files": table}))["thumbnails"]]
        compress = {"filePath": "album/photo.jpg", "format": "webp", "quality": 30}
        outputs.append(compress_media(compress, job_context("file:compress-media", compress,
                                                            {"files": table}))["output"])
    assert len({Path(p).parent for p in outputs}) == 2  # mirrored under output_root, and next to the original
    for output in outputs:
        info = os.stat(output)
        assert (oct(stat.S_IMODE(info.st_mode)), info.st_gid) == (oct(0o640), group), output

    payload = {"filePath": "album/clip.mp4", "maxWidth": 80, "crf": 40}
    ctx = job_context("file:compress-media", payload, {"files": file_area.table()})
    info = os.stat(compress_media(payload, ctx)["output"])
    assert (oct(stat.S_IMODE(info.st_mode)), info.st_gid) == (oct(0o604), group)


def test_a_root_configured_through_a_symlink_takes_paths_through_it_or_through_its_target(
        file_area, job_context, tmp_path):
    alias = tmp_path / "uploads-link"
    alias.symlink_to(file_area.root, target_is_directory=True)
    photo = make_image(file_area.root / "photo.jpg", (64, 48))
    table = {"files": {"roots": [str(alias)]}}
    for path in (str(alias / "photo.jpg"), str(photo), "photo.jpg"):
        payload = {"fileId": "l", "filePath": path, "contentType": "image/jpeg", "enqueueFollowups": False}
        assert process_upload(payload, job_context("file:process-upload", payload, table))["size"] == (
            photo.stat().st_size)
