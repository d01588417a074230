"""The image processor, on real files made with Pillow: dimensions, metadata, colours, refusals."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageStat, features

from media.processors.base import (
    DecodeBudgetExceeded,
    MediaTooLarge,
    ProcessingError,
    StepLog,
    UnsupportedMedia,
)
from media.processors.image import (
    ImageProcessor,
    animation_info,
    blurhash_average_colour,
    blurhash_encode,
)
from media.processors.image_specs import RESAMPLE, shrink

RED = (255, 0, 0)
GPS_IFD = 0x8825
ORIENTATION = 0x0112


# --- fixtures: small files written with Pillow --------------------------------------------------------


def photo(size: tuple[int, int]) -> Image.Image:
    """A cheap photo-like picture: gradients in every channel and a few shapes."""
    w, h = size
    r = Image.linear_gradient("L").resize(size)
    g = Image.linear_gradient("L").rotate(90).resize(size)
    b = Image.radial_gradient("L").resize(size)
    img = Image.merge("RGB", (r, g, b))
    draw = ImageDraw.Draw(img)
    draw.ellipse((w // 4, h // 4, w // 2, h // 2), fill=(30, 200, 90))
    return img


def exif_with_gps(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Phone 15"  # Model
    if orientation:
        exif[ORIENTATION] = orientation
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    return exif


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="Paris"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def run(source: Path, workdir: Path, **kwargs):
    workdir.mkdir(exist_ok=True)
    steps = StepLog()
    result = ImageProcessor(**kwargs).process(source=source, workdir=workdir, steps=steps)
    return result, steps


def by_name(result) -> dict:
    return {v.name: v for v in result.variants}


def sizes(result) -> dict[str, tuple[int, int]]:
    out = {}
    for v in result.variants:
        if v.mime_type.startswith("image/"):
            with Image.open(v.path) as img:
                assert (img.width, img.height) == (v.width, v.height)
                out[v.name] = img.size
    return out


def is_red(pixel) -> bool:
    r, g, b = pixel[:3]
    return r > 200 and g < 60 and b < 60


def crc_patched_png(path: Path, width: int, height: int) -> Path:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` pixels."""
    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def swapped_primaries_icc() -> bytes:
    """An RGB profile that is not sRGB: sRGB with its red and green primaries swapped."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (count,) = struct.unpack(">I", icc[128:132])
    tags = {}
    for i in range(count):
        sig, offset, size = struct.unpack(">4sII", icc[132 + 12 * i : 144 + 12 * i])
        tags[sig] = (i, offset, size)
    (ir, off_r, size_r), (ig, off_g, size_g) = tags[b"rXYZ"], tags[b"gXYZ"]
    struct.pack_into(">4sII", icc, 132 + 12 * ir, b"rXYZ", off_g, size_g)
    struct.pack_into(">4sII", icc, 132 + 12 * ig, b"gXYZ", off_r, size_r)
    return bytes(icc).replace("sRGB".encode("utf-16-be"), "xRGB".encode("utf-16-be"))


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)


def assert_no_metadata(result) -> None:
    for v in result.variants:
        if not v.mime_type.startswith("image/"):
            continue
        raw = v.path.read_bytes()
        with Image.open(v.path) as img:
            assert len(img.getexif()) == 0, v.name
            assert not img.getexif().get_ifd(GPS_IFD), v.name
            for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop"):
                assert key not in img.info, (v.name, key)
        for marker in (b"Exif\x00", b"PhoneMaker", b"Paris", b"adobe:ns:meta", b"secret comment"):
            assert marker not in raw, (v.name, marker)


# --- sizes -------------------------------------------------------------------------------------------


def test_large_photo_gets_every_size_derived_without_upscaling(tmp_path):
    src = tmp_path / "photo.jpg"
    photo((2100, 1400)).save(src, quality=90)

    result, steps = run(src, tmp_path / "out")

    assert (result.width, result.height) == (2100, 1400)
    assert result.mime_type == "image/jpeg"
    assert sizes(result) == {
        "large": (2048, 1365),
        "medium": (1280, 853),
        "small": (640, 427),
        "thumb": (320, 320),
    }
    for v in result.variants:
        assert v.mime_type == "image/webp"
        assert v.path.parent == tmp_path / "out"
        assert v.size_bytes == v.path.stat().st_size > 0
        with Image.open(v.path) as img:
            assert img.format == "WEBP"
            assert img.mode == "RGB"
    assert result.metadata["format"] == "JPEG"
    assert result.metadata["animated"] is False
    assert result.metadata["frame_count"] == 1
    assert result.metadata["has_alpha"] is False


def test_sizes_the_original_does_not_reach_are_skipped(tmp_path):
    src = tmp_path / "medium.png"
    photo((900, 600)).save(src)

    result, steps = run(src, tmp_path / "out")

    assert sizes(result) == {"small": (640, 427), "thumb": (320, 320)}
    skipped = {s["name"] for s in steps.as_list() if s["status"] == "skipped"}
    assert skipped == {"variant:large", "variant:medium"}


def test_tiny_original_is_never_upscaled_but_still_gets_a_display_variant_and_a_square_thumb(tmp_path):
    src = tmp_path / "tiny.png"
    photo((200, 120)).save(src)

    result, _ = run(src, tmp_path / "out")

    assert sizes(result) == {"small": (200, 120), "thumb": (120, 120)}


def test_panorama_thumb_is_a_full_size_centre_crop(tmp_path):
    src = tmp_path / "pano.jpg"
    img = Image.new("RGB", (3000, 400), (0, 0, 255))
    ImageDraw.Draw(img).rectangle((1300, 0, 1700, 400), fill=RED)  # the centre is red
    img.save(src, quality=90)

    result, _ = run(src, tmp_path / "out")

    assert sizes(result)["thumb"] == (320, 320)
    assert sizes(result)["large"] == (2048, 273)
    with Image.open(by_name(result)["thumb"].path) as thumb:
        assert is_red(thumb.convert("RGB").getpixel((160, 160)))


# --- metadata and orientation --------------------------------------------------------------------------


def test_every_metadata_block_is_stripped_from_every_variant(tmp_path, settings):
    settings.IMAGE_JPEG_FALLBACK = True
    src = tmp_path / "gps.jpg"
    photo((700, 500)).save(src, quality=90, exif=exif_with_gps(), xmp=XMP, comment=b"secret comment")
    with Image.open(src) as check:  # the fixture really carries what must be removed
        assert check.getexif().get_ifd(GPS_IFD)
        assert "xmp" in check.info and check.info["comment"] == b"secret comment"

    result, _ = run(src, tmp_path / "out")

    assert set(by_name(result)) == {"small", "small_jpeg", "thumb", "thumb_jpeg"}
    assert_no_metadata(result)


def test_metadata_is_stripped_from_png_and_webp_sources_too(tmp_path):
    png, webp = tmp_path / "meta.png", tmp_path / "meta.webp"
    photo((400, 300)).save(png, exif=exif_with_gps(), xmp=XMP)
    photo((400, 300)).save(webp, exif=exif_with_gps(), xmp=XMP)

    for src in (png, webp):
        result, _ = run(src, tmp_path / f"out-{src.suffix[1:]}")
        assert_no_metadata(result)


@pytest.mark.parametrize(
    ("orientation", "corner"),
    [
        (6, "top_right"),  # stored top-left ends up top-right after a 90° clockwise turn
        (8, "bottom_left"),  # ... and bottom-left after a 90° counter-clockwise turn
        (3, "bottom_right"),
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, corner):
    stored = Image.new("RGB", (300, 200), (0, 0, 255))
    ImageDraw.Draw(stored).rectangle((0, 0, 59, 59), fill=RED)
    src = tmp_path / "oriented.jpg"
    stored.save(src, quality=95, exif=exif_with_gps(orientation))

    result, _ = run(src, tmp_path / "out")

    rotated = orientation in (6, 8)
    assert (result.width, result.height) == ((200, 300) if rotated else (300, 200))
    assert result.metadata["orientation_applied"] is True
    with Image.open(by_name(result)["small"].path) as small:
        assert small.size == (result.width, result.height)
        w, h = small.size
        points = {
            "top_left": (10, 10),
            "top_right": (w - 10, 10),
            "bottom_left": (10, h - 10),
            "bottom_right": (w - 10, h - 10),
        }
        rgb = small.convert("RGB")
        for name, xy in points.items():
            assert is_red(rgb.getpixel(xy)) == (name == corner), name
        assert small.getexif().get(ORIENTATION) is None


# --- colour and alpha ------------------------------------------------------------------------------------


def test_alpha_is_kept_in_webp_and_flattened_in_the_jpeg_fallback(tmp_path, settings):
    settings.IMAGE_JPEG_FALLBACK = True
    img = Image.new("RGBA", (800, 600), (255, 0, 0, 255))
    ImageDraw.Draw(img).rectangle((0, 0, 399, 599), fill=(0, 0, 0, 0))  # left half transparent
    src = tmp_path / "alpha.png"
    img.save(src)

    result, _ = run(src, tmp_path / "out")

    assert result.metadata["has_alpha"] is True
    variants = by_name(result)
    with Image.open(variants["small"].path) as small:
        assert small.format == "WEBP" and small.mode == "RGBA"
        assert small.getpixel((20, 20))[3] == 0
        assert small.getpixel((620, 20))[3] == 255 and is_red(small.getpixel((620, 20)))
    with Image.open(variants["small_jpeg"].path) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
        assert min(jpeg.getpixel((20, 20))) > 240  # transparent became white, not black
        assert variants["small_jpeg"].mime_type == "image/jpeg"


def test_opaque_rgba_is_not_reported_as_alpha(tmp_path):
    src = tmp_path / "opaque.png"
    photo((400, 300)).convert("RGBA").save(src)

    result, _ = run(src, tmp_path / "out")

    assert result.metadata["has_alpha"] is False
    with Image.open(by_name(result)["small"].path) as small:
        assert small.mode == "RGB"


def test_cmyk_jpeg_becomes_srgb_with_an_embedded_profile(tmp_path):
    src = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (500, 400), (0, 255, 255, 0)).save(src, quality=95)  # CMYK "red"

    result, _ = run(src, tmp_path / "out")

    assert result.metadata["icc_converted"] is True
    with Image.open(by_name(result)["small"].path) as small:
        assert small.mode == "RGB"
        assert is_red(small.getpixel((100, 100)))
        profile = ImageCms.ImageCmsProfile(io.BytesIO(small.info["icc_profile"]))
        assert "sRGB" in profile.profile.profile_description


def test_non_srgb_profile_is_converted_to_srgb(tmp_path):
    src = tmp_path / "wide.png"
    Image.new("RGB", (400, 300), RED).save(src, icc_profile=swapped_primaries_icc())

    result, _ = run(src, tmp_path / "out")

    assert result.metadata["icc_converted"] is True
    with Image.open(by_name(result)["small"].path) as small:
        r, g, b = small.convert("RGB").getpixel((50, 50))
        assert g > 200 and r < 60  # the profile says "red" means sRGB green
        profile = ImageCms.ImageCmsProfile(io.BytesIO(small.info["icc_profile"]))
        assert "sRGB" in profile.profile.profile_description


def test_srgb_images_carry_no_profile(tmp_path):
    src = tmp_path / "srgb.png"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo((400, 300)).save(src, icc_profile=srgb)

    result, _ = run(src, tmp_path / "out")

    assert result.metadata["icc_converted"] is False
    with Image.open(by_name(result)["small"].path) as small:
        assert "icc_profile" not in small.info


# --- placeholder and steps -----------------------------------------------------------------------------


def test_blurhash_dominant_colour_and_steps(tmp_path):
    src = tmp_path / "red.png"
    Image.new("RGB", (800, 600), RED).save(src)

    result, steps = run(src, tmp_path / "out")

    assert result.blurhash and len(result.blurhash) == 4 + 2 * 4 * 3  # 4x3 components
    assert blurhash_average_colour(result.blurhash) == RED
    assert result.metadata["dominant_color"] == "#ff0000"
    records = steps.as_list()
    names = [s["name"] for s in records]
    for name in ("open", "decode", "normalize", "variant:small", "variant:thumb", "placeholder"):
        assert name in names
    assert all(s["status"] in ("ok", "skipped") for s in records)
    assert all(s["duration_ms"] >= 0 for s in records)


def test_jpeg_fallback_variants_share_the_geometry(tmp_path, settings):
    settings.IMAGE_JPEG_FALLBACK = True
    src = tmp_path / "photo.jpg"
    photo((1400, 1000)).save(src, quality=90)

    result, _ = run(src, tmp_path / "out")

    got = sizes(result)
    assert set(got) == {"medium", "medium_jpeg", "small", "small_jpeg", "thumb", "thumb_jpeg"}
    for name in ("medium", "small", "thumb"):
        assert got[name] == got[f"{name}_jpeg"]
        with Image.open(by_name(result)[f"{name}_jpeg"].path) as img:
            assert img.format == "JPEG"


# --- refusals ------------------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_quickly(tmp_path):
    src = crc_patched_png(tmp_path / "bomb.png", 30000, 30000)

    started = time.perf_counter()
    with pytest.raises(MediaTooLarge) as exc:
        run(src, tmp_path / "out")

    assert time.perf_counter() - started < 1.0
    assert "megapixels" in str(exc.value)
    assert not list((tmp_path / "out").iterdir())


def test_pillow_bomb_warning_range_is_an_error_not_a_warning(tmp_path, settings):
    # 120 MP is between Pillow's MAX_IMAGE_PIXELS and twice that: Pillow would only warn.
    settings.IMAGE_MAX_PIXELS = 10**9
    assert Image.MAX_IMAGE_PIXELS < 12000 * 10000 < 2 * Image.MAX_IMAGE_PIXELS
    src = crc_patched_png(tmp_path / "warn.png", 12000, 10000)

    with pytest.raises(MediaTooLarge):
        run(src, tmp_path / "out")


def test_our_pixel_limit_comes_from_settings(tmp_path, settings):
    settings.IMAGE_MAX_PIXELS = 50_000
    src = tmp_path / "big.png"
    photo((300, 200)).save(src)

    with pytest.raises(MediaTooLarge) as exc:
        run(src, tmp_path / "out")

    assert "300x200" in str(exc.value)
    assert exc.value.code == "media_too_large"


def test_truncated_jpeg_fails_cleanly(tmp_path):
    whole = tmp_path / "whole.jpg"
    photo((800, 600)).save(whole, quality=90)
    src = tmp_path / "truncated.jpg"
    src.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    with pytest.raises(ProcessingError) as exc:
        run(src, tmp_path / "out")

    assert type(exc.value) is ProcessingError
    assert exc.value.retryable is False
    assert "damaged or incomplete" in str(exc.value)


def test_truncated_png_fails_cleanly(tmp_path):
    whole = tmp_path / "whole.png"
    photo((400, 300)).save(whole)
    src = tmp_path / "truncated.png"
    src.write_bytes(whole.read_bytes()[:2000])

    with pytest.raises(ProcessingError) as exc:
        run(src, tmp_path / "out")

    assert type(exc.value) is ProcessingError


def test_text_file_named_jpg_is_unsupported(tmp_path):
    src = tmp_path / "notes.jpg"
    src.write_text("these are my notes, not a picture\n" * 20)

    with pytest.raises(UnsupportedMedia) as exc:
        run(src, tmp_path / "out")

    assert exc.value.code == "unsupported_media_type"
    assert "JPEG, PNG, WebP, GIF, HEIC or AVIF" in str(exc.value)


def test_svg_is_unsupported(tmp_path):
    src = tmp_path / "logo.svg"
    src.write_text(
        '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        '<rect width="10" height="10" fill="red"/></svg>'
    )

    with pytest.raises(UnsupportedMedia) as exc:
        run(src, tmp_path / "out")

    assert "SVG" in str(exc.value)


def test_formats_outside_the_allow_list_are_unsupported(tmp_path):
    for fmt, suffix in (("TIFF", "tif"), ("BMP", "bmp")):
        src = tmp_path / f"picture.{suffix}"
        photo((64, 48)).save(src, fmt)
        with pytest.raises(UnsupportedMedia):
            run(src, tmp_path / f"out-{suffix}")


# --- animation and phone formats ---------------------------------------------------------------------


def animation_frames(size=(161, 121), count=6) -> list[Image.Image]:
    frames = []
    for i in range(count):
        frame = Image.new("RGB", size, (40 * i, 100, 255 - 40 * i))
        ImageDraw.Draw(frame).rectangle((i * 20, 10, i * 20 + 30, 60), fill=RED)
        frames.append(frame)
    return frames


def assert_h264_mp4(variant, frames_min: int = 1) -> dict:
    assert variant.mime_type == "video/mp4"
    info = ffprobe(variant.path)
    (stream,) = info["streams"]  # video only, no audio
    assert stream["codec_name"] == "h264"
    assert stream["pix_fmt"] == "yuv420p"
    assert stream["width"] % 2 == 0 and stream["height"] % 2 == 0
    assert (stream["width"], stream["height"]) == (variant.width, variant.height)
    head = variant.path.read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head  # +faststart
    return info


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffmpeg/ffprobe")
def test_animated_gif_gets_stills_and_an_h264_mp4(tmp_path):
    src = tmp_path / "anim.gif"
    first, *rest = animation_frames()
    first.save(src, save_all=True, append_images=rest, duration=100, loop=0)

    result, steps = run(src, tmp_path / "out")

    assert result.mime_type == "image/gif"
    assert result.metadata["animated"] is True
    assert result.metadata["frame_count"] == 6
    assert result.metadata["duration_seconds"] == pytest.approx(0.6)
    assert result.duration_seconds == pytest.approx(0.6)
    assert sizes(result) == {"small": (161, 121), "thumb": (121, 121)}
    with Image.open(by_name(result)["small"].path) as still:  # the first frame
        assert is_red(still.convert("RGB").getpixel((15, 30)))
    info = assert_h264_mp4(by_name(result)["mp4"])
    assert (by_name(result)["mp4"].width, by_name(result)["mp4"].height) == (160, 120)
    assert float(info["format"]["duration"]) == pytest.approx(0.6, abs=0.15)
    assert next(s for s in steps.as_list() if s["name"] == "mp4")["status"] == "ok"


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffmpeg/ffprobe")
def test_animated_webp_gets_an_h264_mp4(tmp_path):
    src = tmp_path / "anim.webp"
    first, *rest = animation_frames(count=4)
    first.save(src, save_all=True, append_images=rest, duration=200, loop=0)

    result, _ = run(src, tmp_path / "out")

    assert result.metadata["animated"] is True
    assert result.metadata["frame_count"] == 4
    info = assert_h264_mp4(by_name(result)["mp4"])
    assert float(info["format"]["duration"]) == pytest.approx(0.8, abs=0.15)


def test_single_frame_gif_is_a_still(tmp_path):
    src = tmp_path / "still.gif"
    photo((300, 200)).save(src)

    result, _ = run(src, tmp_path / "out")

    assert result.metadata["animated"] is False
    assert "mp4" not in by_name(result)


def test_animation_with_too_many_frames_is_refused(tmp_path, settings):
    settings.IMAGE_MAX_FRAMES = 3
    src = tmp_path / "long.gif"
    first, *rest = animation_frames(count=5)
    first.save(src, save_all=True, append_images=rest, duration=100)

    with pytest.raises(MediaTooLarge):
        run(src, tmp_path / "out")


def test_heic_from_a_phone_becomes_webp(tmp_path, settings):
    settings.IMAGE_JPEG_FALLBACK = True
    src = tmp_path / "IMG_0001.HEIC"
    pillow_heif.from_pillow(photo((800, 600))).save(src, quality=50)

    result, _ = run(src, tmp_path / "out")

    assert result.mime_type == "image/heic"
    assert (result.width, result.height) == (800, 600)
    assert sizes(result) == {
        "small": (640, 480),
        "small_jpeg": (640, 480),
        "thumb": (320, 320),
        "thumb_jpeg": (320, 320),
    }
    with Image.open(by_name(result)["small"].path) as small:
        assert small.format == "WEBP"
    assert result.blurhash


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_avif_becomes_webp(tmp_path):
    src = tmp_path / "photo.avif"
    photo((700, 500)).save(src, "AVIF", quality=50)

    result, _ = run(src, tmp_path / "out")

    assert result.mime_type == "image/avif"
    assert sizes(result) == {"small": (640, 457), "thumb": (320, 320)}


def test_banded_shrink_matches_a_plain_resize():
    img = photo((2000, 1400))
    ImageDraw.Draw(img).line((0, 0, 2000, 1400), fill=RED, width=3)
    for size, box in (((1500, 1050), None), ((1100, 1100), (300, 0, 1700, 1400))):
        banded = shrink(img, size, box=box, reducing_gap=None)
        plain = img.resize(size, RESAMPLE, box=box)
        assert banded.size == plain.size == size
        # Pillow may run the two passes in the other order for a band, which changes rounding (and
        # clipping next to hard edges) a little; a misplaced band would change whole rows.
        diff = ImageChops.difference(banded, plain)
        assert max(ImageStat.Stat(diff).mean) < 0.1
        assert all(high <= 16 for _, high in diff.getextrema())


# --- Issue 9 row 5: decoded-work budgets, checked from headers before any frame is decoded ---------


def gif_bomb(path: Path, *, canvas=(7000, 7000), frames=999) -> Path:
    """The issue's 23 KB GIF: a huge logical screen and many 1x1 frames (hand-written blocks)."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", *canvas, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff")
    for _ in range(frames):
        out += b"\x21\xf9\x04\x00" + struct.pack("<H", 2) + b"\x00\x00"  # graphic control: 20 ms
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # 1x1 pixel
    path.write_bytes(bytes(out + b"\x3b"))
    return path


def test_the_issue_gif_bomb_is_refused_in_a_moment_without_retry(tmp_path):
    src = gif_bomb(tmp_path / "bomb.gif")
    assert src.stat().st_size < 30_000

    started = time.perf_counter()
    steps = StepLog()
    with pytest.raises(DecodeBudgetExceeded) as exc:
        ImageProcessor().process(source=src, workdir=tmp_path / "out", steps=steps)
    elapsed = time.perf_counter() - started

    assert elapsed < 3  # was 151 s of frame scanning, then 69 s of ffmpeg
    assert exc.value.retryable is False and exc.value.code == "decode_budget_exceeded"
    assert "7000x7000 with 999 frames" in str(exc.value) and "upload it again" in str(exc.value)
    names = [s["name"] for s in steps.as_list()]
    assert names == ["open", "inspect"] and steps.as_list()[-1]["status"] == "failed"


def save_animation(path: Path, fmt: str, *, size=(400, 300), count=12, duration=100) -> Path:
    first, *rest = animation_frames(size=size, count=count)
    first.save(path, fmt, save_all=True, append_images=rest, duration=duration, loop=0)
    return path


ANIMATED = [("GIF", "gif"), ("PNG", "png"), ("WEBP", "webp")] + (
    [("AVIF", "avif")] if features.check("avif") else []
)


@pytest.mark.parametrize(("fmt", "ext"), ANIMATED)
def test_animation_info_matches_pillow_without_decoding(tmp_path, fmt, ext):
    src = save_animation(tmp_path / f"anim.{ext}", fmt, count=7, duration=120)
    with Image.open(src) as img:
        info = animation_info(src, img)
        assert (info.frames, info.width, info.height) == (7, 400, 300)
        if fmt != "AVIF":  # AVIF gives its durations only by decoding: read after the budget check
            assert info.duration_ms == pytest.approx(840, abs=7)
        assert info.frames == img.n_frames


@pytest.mark.parametrize(("fmt", "ext"), ANIMATED)
def test_every_animated_format_is_held_to_the_decoded_pixel_budget(tmp_path, settings, fmt, ext):
    src = save_animation(tmp_path / f"anim.{ext}", fmt, count=12)  # 400x300x12 = 1.44 MP decoded
    settings.MEDIA_MAX_IMAGE_DECODED_PIXELS = 1_000_000
    steps = StepLog()
    with pytest.raises(DecodeBudgetExceeded, match="400x300 with 12 frames"):
        ImageProcessor().process(source=src, workdir=tmp_path / "out", steps=steps)
    assert "decode" not in [s["name"] for s in steps.as_list()]  # refused before decoding

    settings.MEDIA_MAX_IMAGE_DECODED_PIXELS = 4_000_000  # the 1.2 s MP4 is 400x300x30 = 3.6 MP
    result, _ = run(src, tmp_path / "ok")
    assert result.metadata["frame_count"] == 12 and "mp4" in by_name(result)


def test_a_long_animation_is_held_to_the_budget_of_the_mp4_it_makes(tmp_path, settings):
    # Two frames, but one lasts 10 minutes: 15,000 MP4 frames at 25 fps.
    src = tmp_path / "slow.webp"
    first, second = animation_frames(size=(400, 300), count=2)
    first.save(src, "WEBP", save_all=True, append_images=[second], duration=[100, 600_000])
    with pytest.raises(DecodeBudgetExceeded, match="plays for 10m"):
        run(src, tmp_path / "out")


def test_the_per_frame_pixel_cap_applies_to_the_gif_canvas(tmp_path, settings):
    settings.IMAGE_MAX_PIXELS = 1_000_000
    src = gif_bomb(tmp_path / "wide.gif", canvas=(2000, 1000), frames=2)
    with pytest.raises(MediaTooLarge, match="2000x1000"):
        run(src, tmp_path / "out")


def test_a_still_passes_the_budget_whatever_its_size(tmp_path, settings):
    settings.MEDIA_MAX_IMAGE_DECODED_PIXELS = 10
    src = tmp_path / "big.png"
    photo((800, 600)).save(src)
    result, _ = run(src, tmp_path / "out")
    assert result.metadata["frame_count"] == 1


# --- Issue 9 row 10: long steps report progress so the runner can heartbeat ------------------------


def test_the_mp4_step_reports_progress_while_it_runs(tmp_path):
    src = save_animation(tmp_path / "anim.webp", "WEBP", size=(640, 480), count=40, duration=100)
    seen = []

    def on_change(records):
        if records[-1]["status"] == "running":
            seen.append((records[-1]["name"], dict(records[-1]["output"])))

    steps = StepLog(on_change, heartbeat_seconds=0)
    (tmp_path / "out").mkdir()
    ImageProcessor().process(source=src, workdir=tmp_path / "out", steps=steps)

    # ffmpeg's progress reaches the runner while the step runs (regularity: test_processors_ffmpeg.py)
    mp4_reports = [output for name, output in seen if name == "mp4"]
    assert mp4_reports and max(r.get("out_time_s", 0) for r in mp4_reports) > 0
    assert mp4_reports[-1]["percent"] == 100.0


# --- Issue 10: blurhash computed here (blurhash-python used an API Pillow 13 deprecates) ----------


@pytest.mark.parametrize("colour", [(30, 144, 200), (255, 255, 255), (0, 0, 0), (12, 200, 7)])
def test_blurhash_of_a_flat_image_decodes_to_its_colour(colour):
    pixels = np.full((48, 64, 3), colour, dtype=np.uint8)
    hash_ = blurhash_encode(pixels, 4, 3)
    assert len(hash_) == 28 and hash_[0] == "L"  # size flag: (4-1) + (3-1)*9 = 21 = "L"
    assert blurhash_average_colour(hash_) == colour


def test_blurhash_averages_in_linear_light():
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, 16:] = 255  # half black, half white: linear mean 0.5 is sRGB 188, not 128
    assert blurhash_average_colour(blurhash_encode(pixels, 4, 4)) == (188, 188, 188)


def test_blurhash_matches_the_reference_encoder_for_a_known_image():
    # What the C reference encoder (woltapp/blurhash, as wrapped by blurhash-python 1.2.2) gives.
    pixels = np.full((48, 64, 3), (30, 144, 200), dtype=np.uint8)
    assert blurhash_encode(pixels, 4, 3) == "L33f%Mk[fQk[lCfkfQfkfQfQfQfQ"


def test_image_processing_raises_no_deprecation_warning(tmp_path):
    src = tmp_path / "p.jpg"
    photo((700, 500)).save(src)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        result, _ = run(src, tmp_path / "out")
    assert result.blurhash


# --- high bit depth (issue 11 row 1) ------------------------------------------------------------------


def _ramp_columns(img: Image.Image) -> np.ndarray:
    """The mean grey of each column of an RGB image (the ramp runs left to right)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float64).mean(axis=2)
    return arr.mean(axis=0)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_grey_ramp_is_scaled_not_clipped(tmp_path, mode):
    """512×256 ``I;16`` PNG with a 0…65535 ramp: the variants show the ramp, 0…255, not white."""
    ramp = np.tile(np.linspace(0, 65535, 512).round().astype(np.uint16), (256, 1))
    if mode == "I;16":
        img = Image.fromarray(ramp)
    else:
        img = Image.frombytes("I;16B", (512, 256), ramp.astype(">u2").tobytes())
    assert img.mode == mode
    src = tmp_path / "ramp.png"
    img.save(src)
    with Image.open(src) as opened:
        assert opened.mode.startswith("I;16")  # what Pillow 13 opens a 16-bit grey PNG as
    result, steps = run(src, tmp_path / "out")
    assert (result.width, result.height) == (512, 256)
    with Image.open(by_name(result)["small"].path) as small:
        assert small.size == (512, 256)
        columns = _ramp_columns(small)
    for x in (0, 64, 128, 256, 384, 448, 511):
        assert abs(columns[x] - x * 255 / 511) <= 3, (x, columns[x])
    assert np.all(np.diff(columns[4:-4]) >= -1.5)  # monotonic, apart from encoder noise


@pytest.mark.parametrize("alpha", [False, True])
def test_16bit_rgb_png_keeps_its_colours(tmp_path, alpha):
    """16-bit RGB/RGBA PNG (ffmpeg rgb48be/rgba64be): Pillow 13 opens them as 8-bit RGB/RGBA."""
    from tests.media.corpus import generate as g

    src = g.png_16bit_rgb(tmp_path, alpha=alpha)
    result, _ = run(src, tmp_path / "out")
    assert result.metadata["has_alpha"] is alpha
    with Image.open(by_name(result)["small"].path) as small:
        rgba = small.convert("RGBA")
        w, h = rgba.size
        right_top, bottom_right = rgba.getpixel((3 * w // 4, h // 4)), rgba.getpixel((3 * w // 4, 3 * h // 4))
        left_top = rgba.getpixel((w // 4, h // 4))
    assert all(abs(a - b) <= 12 for a, b in zip(right_top[:3], g.GREEN, strict=True)), right_top
    assert all(abs(a - b) <= 12 for a, b in zip(bottom_right[:3], g.BLUE, strict=True)), bottom_right
    if alpha:
        assert left_top[3] == 0
    else:
        assert all(abs(a - b) <= 12 for a, b in zip(left_top[:3], g.RED, strict=True)), left_top


@pytest.mark.parametrize("mode", ["I", "F", "F01"])
def test_32bit_int_and_float_modes_are_scaled(mode):
    """``I`` (32-bit int, 16-bit range) and ``F`` (0…1 floats, or 16-bit range) to 8-bit grey."""
    from media.processors.image import to_8bit

    values = np.linspace(0, 65535, 256)
    if mode == "I":
        img = Image.fromarray(np.tile(values.astype(np.int32), (4, 1)))
    elif mode == "F":
        img = Image.fromarray(np.tile(values.astype(np.float32), (4, 1)))
    else:
        img = Image.fromarray(np.tile((values / 65535).astype(np.float32), (4, 1)))
    assert img.mode == mode[0]
    out = to_8bit(img)
    assert out.mode == "L"
    got = np.asarray(out)[0]
    assert np.abs(got.astype(int) - np.arange(256)).max() <= 1


def test_values_outside_the_16bit_range_are_clamped():
    from media.processors.image import to_8bit

    img = Image.fromarray(np.array([[-5, 0, 70000, 65535]], dtype=np.int32))
    assert list(np.asarray(to_8bit(img))[0]) == [0, 0, 255, 255]
