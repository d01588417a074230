"""The real-world media corpus (issue 11): every kind of file phones, cameras and browsers make, built
at test time (``generate``), sent through the real path — multipart attach, the Dramatiq worker over
the StubBroker, the kind's processor, storage — and checked for what a user sees: the final status
(or a clear ``processing_error`` / 415), dimensions and orientation, colours at known points, the
duration, outputs ffprobe reads, no GPS or other metadata in any output, no traceback in the logs.

Video cases are marked ``slow``: they run in the README's test command; ``-m "not slow"`` leaves
them out locally. ``xfail`` marks a case whose expected outcome the pipeline does not meet yet
(strict: it fails the suite the moment it starts passing); none today.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from media import storage
from media.models import Media, ProcessorRun
from tests.conftest import client_for
from tests.factories import PostFactory, UserFactory
from tests.media.corpus import generate as g

Point = tuple[float, float]
Colour = tuple[int, int, int]


@dataclass
class Case:
    """One kind of file and what a user must see after posting it."""

    id: str
    build: Callable[[Path], Path]
    post_type: str  # image | video | audio
    outcome: str = "ready"  # ready | failed | refused (415 at attach)
    kind: str | None = None  # the medium's kind (default: the post type)
    size: tuple[int, int] | None = None  # width, height shown (after orientation)
    duration: float | None = None  # seconds (±0.15 s, or 5 % for long files)
    duration_slack: float | None = None  # when the container only estimates it
    colours: dict[Point, Colour] = field(default_factory=dict)  # in the display variant or poster
    tolerance: int = 40
    error: str = ""  # text in processing_error or the 415 detail
    mime: str | None = None
    cover: bool = False  # an embedded cover becomes a thumbnail medium
    check: Callable[[Media], None] | None = None
    xfail: str | None = None

    @property
    def slow(self) -> bool:
        return self.post_type == "video" and self.outcome == "ready"


# Where the quadrant colours of ``g.test_picture``/``g.quadrants_video`` are after each rotation. A
# display matrix's rotation (as ffprobe prints it) is counter-clockwise: 90 shows the stored picture
# turned a quarter to the left, as ffmpeg's own autorotate does.
UPRIGHT = g.QUADRANTS
CCW90 = {(0.25, 0.75): g.RED, (0.25, 0.25): g.GREEN, (0.75, 0.5): g.BLUE}
CCW180 = {(0.75, 0.75): g.RED, (0.25, 0.75): g.GREEN, (0.5, 0.25): g.BLUE}
CCW270 = {(0.75, 0.25): g.RED, (0.75, 0.75): g.GREEN, (0.25, 0.5): g.BLUE}
SMPTE_GREY, SMPTE_RED = (0.5 / 7, 0.3), (5.5 / 7, 0.3)  # the 75 % grey and red bars


def _ffprobe(path: Path, *entries: str) -> dict:
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout)


def _idet(path: Path) -> dict[str, int]:
    """ffmpeg's interlace detector over a rendition: frames it calls TFF, BFF and progressive."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-i", str(path), "-vf", "idet", "-f", "null", "-"]
    log = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stderr
    match = re.findall(r"Multi frame detection: TFF:\s*(\d+) BFF:\s*(\d+) Progressive:\s*(\d+)", log)[-1]
    return dict(zip(("tff", "bff", "progressive"), map(int, match), strict=True))


def _progressive_renditions(media: Media) -> None:
    for name in ("360p", "720p", "1080p"):
        if name not in media.variants:
            continue
        path = storage.local_path(media.variants[name]["key"])
        stream = _ffprobe(path)["streams"][0]
        assert stream.get("field_order", "progressive") == "progressive", (name, stream.get("field_order"))
        counts = _idet(path)
        assert counts["progressive"] > 4 * (counts["tff"] + counts["bff"]), (name, counts)


def _sdr_bt709_renditions(media: Media) -> None:
    """Tone-mapped to SDR: the poster's bars keep their colour (a saturated red, a neutral grey, not
    the washed-out (136, 54, 33) of an untone-mapped HLG/PQ picture; brightness is the tone-mapper's
    choice: zscale straight back gives grey 190, hable 123) and every rendition is tagged BT.709."""
    with Image.open(storage.local_path(media.variants["poster"]["key"])) as poster:
        rgb = poster.convert("RGB")
        grey = rgb.getpixel((int(SMPTE_GREY[0] * rgb.width), int(SMPTE_GREY[1] * rgb.height)))
        red = rgb.getpixel((int(SMPTE_RED[0] * rgb.width), int(SMPTE_RED[1] * rgb.height)))
    assert red[0] >= 100 and max(red[1:]) <= red[0] // 4, ("red bar washed out", red)
    assert min(grey) >= 100 and max(grey) - min(grey) <= 12, ("grey bar", grey)
    for name in ("360p", "720p", "1080p"):
        if name in media.variants:
            stream = _ffprobe(storage.local_path(media.variants[name]["key"]))["streams"][0]
            assert stream.get("color_transfer") in (None, "bt709"), stream.get("color_transfer")
            assert stream.get("color_primaries") in (None, "bt709"), stream.get("color_primaries")


def _alpha_on_neutral_background(media: Media) -> None:
    with Image.open(storage.local_path(media.variants["poster"]["key"])) as poster:
        r, gr, b = poster.convert("RGB").getpixel((poster.width // 4, poster.height // 2))
    assert (r + gr + b) / 3 > 60, "the transparent area turned black"
    assert max(r, gr, b) - min(r, gr, b) < 25, "the background is not neutral"
    # The renditions share the poster's background.
    rendition = storage.local_path(media.variants["360p"]["key"])
    with tempfile.TemporaryDirectory() as scratch:
        frame = Path(scratch) / "first-frame.png"
        cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(rendition), "-frames:v", "1", str(frame)]
        subprocess.run(cmd, check=True, timeout=60)
        with Image.open(frame) as first:
            pixel = first.convert("RGB").getpixel((first.width // 4, first.height // 2))
    assert all(abs(a - c) <= 12 for a, c in zip(pixel, (r, gr, b), strict=True)), (pixel, (r, gr, b))


def _image_ramp(media: Media) -> None:
    with Image.open(storage.local_path(media.variants["small"]["key"])) as small:
        grey = small.convert("L")
        row = grey.height // 2
        for x in (0, 128, 256, 384, 511):
            expected = x * 255 / 511
            assert abs(grey.getpixel((x, row)) - expected) <= 4, (x, grey.getpixel((x, row)))


def _animated(media: Media) -> None:
    assert media.metadata["animated"] and "mp4" in media.variants
    stream = _ffprobe(storage.local_path(media.variants["mp4"]["key"]))["streams"][0]
    assert stream["codec_name"] == "h264"


def _audio_facts(codec: str | None = None, channels: int | None = None, sample_rate: int | None = None):
    def check(media: Media) -> None:
        if codec:
            assert media.metadata["codec"] == codec, media.metadata["codec"]
        if channels:
            assert media.metadata["channels"] == channels
        if sample_rate:
            assert media.metadata["sample_rate"] == sample_rate
        out = _ffprobe(storage.local_path(media.variants["m4a"]["key"]))["streams"][0]
        assert out["codec_name"] == "aac" and int(out["channels"]) <= 2

    return check


def _two_tracks(media: Media) -> None:
    assert media.metadata["has_audio"]


def _silent(media: Media) -> None:
    assert media.metadata["loudness"]["normalization_type"] == "none"


def _adobe(colorants, gamma) -> dict[Point, Colour]:
    """The test picture's colours as sRGB, the file's being in a wide-gamut profile."""
    points = {(0.25, 0.25): g.RED, (0.75, 0.25): g.GREEN, (0.15, 0.8): g.BLUE, (0.5, 0.8): g.WIDE_PATCH}
    return {point: g.wide_to_srgb(colour, colorants, gamma) for point, colour in points.items()}


def orientation_case(n: int) -> Case:
    return Case(
        f"jpeg-exif-orientation-{n}",
        lambda d: g.jpeg_orientation(d, n),
        "image",
        size=(320, 200),
        colours=UPRIGHT,
        check=lambda m: m.metadata["orientation_applied"] is (n != 1) or pytest.fail("orientation"),
    )


CASES: list[Case] = [
    # --- issue 11's table ---------------------------------------------------------------------------
    Case("png-16bit-grey-ramp", g.png_16bit_grey, "image", size=(512, 256), check=_image_ramp),
    Case(
        "png-16bit-grey-big-endian",
        lambda d: g.png_16bit_grey(d, big_endian=True),
        "image",
        size=(512, 256),
        check=_image_ramp,
    ),
    Case(
        "png-16bit-rgb", lambda d: g.png_16bit_rgb(d, alpha=False), "image", size=(320, 240), colours=UPRIGHT
    ),
    Case(
        "png-16bit-rgba",
        lambda d: g.png_16bit_rgb(d, alpha=True),
        "image",
        size=(320, 240),
        colours={(0.75, 0.25): g.GREEN, (0.75, 0.75): g.BLUE},
        check=lambda m: m.metadata["has_alpha"] or pytest.fail("alpha lost"),
    ),
    Case(
        "hevc-main10-hlg-mov",
        lambda d: g.mov_hdr(d, "arib-std-b67"),
        "video",
        size=(320, 180),
        duration=1.0,
        check=_sdr_bt709_renditions,
    ),
    Case(
        "hevc-main10-pq-mov",
        lambda d: g.mov_hdr(d, "smpte2084"),
        "video",
        size=(320, 180),
        duration=1.0,
        check=_sdr_bt709_renditions,
    ),
    Case(
        "h264-1080i-tff-ac3-m2ts",
        lambda d: g.interlaced(d, height=1080, field_order="tff", container="m2ts"),
        "video",
        size=(1920, 1080),
        duration=1.0,
        check=_progressive_renditions,
    ),
    Case(
        "mpeg2-480i-bff-program-stream",
        lambda d: g.interlaced(d, height=480, field_order="bff", container="ps"),
        "video",
        duration=1.0,
        check=_progressive_renditions,
    ),
    Case(
        "vp9-alpha-webm",
        g.webm_alpha,
        "video",
        size=(320, 180),
        check=_alpha_on_neutral_background,
    ),
    Case(
        # MPEG-PS durations are estimates: ffprobe gives 0.8 s for the video stream, 1.008 s for the file.
        "mpeg2-anamorphic-vob",
        g.mpeg2_anamorphic,
        "video",
        size=(1024, 576),
        duration=1.0,
        duration_slack=0.25,
        colours=UPRIGHT,
    ),
    Case("wmv-asf", g.wmv, "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("wma-asf-audio-only", g.wma, "audio", duration=2.0, check=_audio_facts("wmav2")),
    Case("aiff", g.aiff, "audio", duration=2.0, check=_audio_facts("pcm_s16be", 2)),
    Case("caf", g.caf, "audio", duration=2.0, check=_audio_facts("pcm_s16le")),
    Case("flv", g.flv, "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("theora-ogv", g.ogv, "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("sun-au-refused", g.au, "audio", outcome="refused", error="Sun AU"),
    Case("mxf-refused", g.mxf, "video", outcome="refused", error="MXF"),
    Case(
        "webm-opus-voice-note",
        g.webm_opus_voice,
        "audio",
        duration=2.0,
        mime="audio/webm",
        check=_audio_facts("opus", 1),
    ),
    Case(
        "webm-opus-voice-note-on-video-post",
        g.webm_opus_voice,
        "video",
        outcome="refused",
        error="This file has no video track; post it as audio.",
    ),
    Case(
        "mp4-audio-only", g.mp4_audio_only, "audio", duration=2.0, mime="audio/mp4", check=_audio_facts("aac")
    ),
    Case("mkv-audio-only", g.mka, "audio", duration=2.0, check=_audio_facts("vorbis")),
    Case("mpegts-audio-only", g.ts_audio_only, "audio", duration=2.0, check=_audio_facts("mp2")),
    # --- kinds that worked and must keep working ---------------------------------------------------
    Case("heic", g.heic, "image", size=(640, 480), colours=UPRIGHT),
    Case("jpeg-cmyk", g.jpeg_cmyk, "image", size=(400, 300), colours=UPRIGHT),
    Case(
        "jpeg-adobe-rgb",
        g.jpeg_adobe_rgb,
        "image",
        size=(400, 300),
        colours=_adobe(g.ADOBE_RGB, 563 / 256),
        tolerance=12,
    ),
    *(orientation_case(n) for n in range(1, 9)),
    Case("apng", g.apng, "image", size=(160, 120), check=_animated),
    Case("webp-animated", g.webp_animated, "image", size=(160, 120), check=_animated),
    Case("gif-animated", g.gif_animated, "image", size=(160, 120), check=_animated, colours=UPRIGHT),
    Case("h264-vfr-mp4", g.vfr, "video", size=(320, 180), duration=2.0, colours=UPRIGHT),
    Case("h264-one-frame", g.one_frame, "video", size=(320, 180), colours=UPRIGHT),
    Case(
        "obs-mkv-two-audio-tracks",
        g.obs_two_tracks,
        "video",
        size=(320, 180),
        duration=1.5,
        check=_two_tracks,
    ),
    Case("mp3-with-cover", g.mp3_cover, "audio", duration=2.0, cover=True, check=_audio_facts("mp3")),
    Case("flac-with-cover", g.flac_cover, "audio", duration=2.0, cover=True, check=_audio_facts("flac")),
    Case("opus-ogg", g.opus_ogg, "audio", duration=2.0, check=_audio_facts("opus")),
    Case("vorbis-ogg", g.vorbis_ogg, "audio", duration=2.0, check=_audio_facts("vorbis")),
    Case("wav-float32", g.wav_float, "audio", duration=2.0, check=_audio_facts("pcm_f32le")),
    Case("flac-ten-minutes-of-silence", g.long_silence, "audio", duration=600.0, check=_silent),
    # --- others users meet ---------------------------------------------------------------------------
    Case("jpeg-huge-exif-thumbnail", g.jpeg_huge_exif_thumbnail, "image", size=(640, 480), colours=UPRIGHT),
    Case("jpeg-progressive", g.jpeg_progressive, "image", size=(800, 600), colours=UPRIGHT),
    Case("png-gamma-iccp", g.png_gamma_iccp, "image", size=(300, 200), colours=UPRIGHT),
    Case(
        "heic-display-p3",
        g.heic_display_p3,
        "image",
        size=(400, 300),
        colours=_adobe(g.DISPLAY_P3, None),
        tolerance=12,
    ),
    Case("heic-12bit", g.heic_high_depth, "image", size=(320, 240), colours=UPRIGHT),
    Case("avif-8bit", g.avif, "image", size=(320, 240), colours=UPRIGHT),
    Case(
        "webp-lossless-alpha",
        g.webp_lossless_alpha,
        "image",
        size=(300, 200),
        check=lambda m: m.metadata["has_alpha"] or pytest.fail("alpha lost"),
    ),
    Case("gif-local-palettes", g.gif_local_palettes, "image", size=(160, 120), check=_animated),
    Case("tiff-refused", g.tiff, "image", outcome="refused", error="TIFF images are not accepted"),
    Case("prores-mov", g.prores, "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("dnxhr-mov", g.dnxhd, "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("mpeg4-part2-avi", g.avi_mpeg4, "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("h263-3gp", g.h263_3gp, "video", size=(176, 144), duration=1.0, colours=UPRIGHT),
    Case("av1-mp4", lambda d: g.av1(d, "mp4"), "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("av1-webm", lambda d: g.av1(d, "webm"), "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("vp8-webm", g.vp8_webm, "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case("h264-mpegts", g.mpegts, "video", size=(320, 180), duration=1.0, colours=UPRIGHT),
    Case(
        "h264-rotation-90",
        lambda d: g.mp4_rotated(d, 90),
        "video",
        size=(180, 320),
        duration=1.0,
        colours=CCW90,
    ),
    Case(
        "h264-rotation-180",
        lambda d: g.mp4_rotated(d, 180),
        "video",
        size=(320, 180),
        duration=1.0,
        colours=CCW180,
    ),
    Case(
        "h264-rotation-270",
        lambda d: g.mp4_rotated(d, 270),
        "video",
        size=(180, 320),
        duration=1.0,
        colours=CCW270,
    ),
    Case("png-odd-641x361", lambda d: g.png_odd(d, 641, 361), "image", size=(641, 361), colours=UPRIGHT),
    Case("png-1x4000", lambda d: g.png_odd(d, 1, 4000), "image", size=(1, 4000)),
    Case(
        "h264-444-odd-641x361",
        lambda d: g.odd_video(d, 641, 361),
        "video",
        size=(641, 361),
        duration=1.0,
        colours=UPRIGHT,
    ),
    Case("ac3-5.1-mp4", lambda d: g.ac3_51(d, "ac3"), "audio", duration=2.0, check=_audio_facts("ac3", 6)),
    Case("eac3-5.1-mp4", lambda d: g.ac3_51(d, "eac3"), "audio", duration=2.0, check=_audio_facts("eac3", 6)),
    Case("flac-24bit-96khz", g.flac_24_96, "audio", duration=2.0, check=_audio_facts("flac", 2, 96000)),
    Case(
        "amr-nb-voice-memo-3gp",
        lambda d: g.amr_nb(d, "3gp"),
        "audio",
        duration=2.0,
        mime="audio/mp4",
        check=_audio_facts("amr_nb", 1),
    ),
    Case(
        "amr-nb-raw",
        lambda d: g.amr_nb(d, "amr"),
        "audio",
        duration=2.0,
        mime="audio/amr",
        check=_audio_facts("amr_nb", 1),
    ),
    Case("mp3-broken-id3-frame", g.mp3_broken_id3, "audio", duration=2.0, check=_audio_facts("mp3")),
    Case("alac-m4a", g.alac_m4a, "audio", duration=2.0, check=_audio_facts("alac")),
    Case("wavpack", g.wavpack, "audio", duration=2.0, check=_audio_facts("wavpack")),
    Case("wave64", g.w64, "audio", duration=2.0, check=_audio_facts("pcm_s16le")),
    Case("aac-adts", g.adts, "audio", duration=2.0, check=_audio_facts("aac")),
]


def _param(case: Case):
    marks = []
    if case.slow:
        marks.append(pytest.mark.slow)
    if case.xfail:
        marks.append(pytest.mark.xfail(strict=True, reason=case.xfail))
    return pytest.param(case, id=case.id, marks=marks)


def _drain(broker, worker) -> None:
    for queue in ("media.image", "media.video", "media.audio"):
        if queue in broker.queues:
            broker.join(queue, fail_fast=False)
    worker.join()


def _near(got, want: Colour, tolerance: int) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got[:3], want, strict=True))


def _display_image(media: Media) -> Path:
    name = "poster" if media.kind == "video" else "small"
    return storage.local_path(media.variants[name]["key"])


def _assert_no_metadata(path: Path) -> None:
    raw = path.read_bytes()
    for marker in (g.GPS_MARK, b"PostflowCam"):
        assert marker not in raw, (path.name, marker)
    if path.suffix in (".webp", ".jpg", ".jpeg", ".png"):
        with Image.open(path) as img:
            assert len(img.getexif()) == 0, path.name
    else:
        tags = {k.lower() for k in _ffprobe(path)["format"].get("tags", {})}
        assert not tags & {"location", "location-eng", "com.apple.quicktime.location.iso6709", "comment"}, (
            tags
        )


def test_the_corpus_has_at_least_45_kinds():
    assert len(CASES) >= 45
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_corpus(case: Case, tmp_path, broker, worker, caplog):
    caplog.set_level(logging.WARNING)
    source = case.build(tmp_path)
    user = UserFactory()
    post = PostFactory(author=user, type=case.post_type, body="")
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media", {"file": source.open("rb")}, format="multipart"
    )
    if case.outcome == "refused":
        assert r.status_code == 415, r.content
        assert r.json()["code"] == "unsupported_media_type" and case.error in r.json()["detail"]
        return
    assert r.status_code == 201, r.content
    _drain(broker, worker)
    media = Media.objects.get(pk=r.json()["id"])
    assert media.kind == (case.kind or case.post_type)
    if case.outcome == "failed":
        assert media.processing_status == "failed"
        assert case.error in media.processing_error and "Traceback" not in media.processing_error
        return
    assert media.processing_status == "ready", media.processing_error
    run = ProcessorRun.objects.filter(media=media).latest("started_at")
    assert run.result == "succeeded" and not run.error_class
    if case.mime:
        assert media.mime_type == case.mime
    if case.size:
        assert (media.width, media.height) == case.size
    if case.duration:
        slack = case.duration_slack or max(0.15, case.duration * 0.05)
        assert abs(media.duration_seconds - case.duration) <= slack, media.duration_seconds

    # Every output: stored, readable by ffprobe, with no metadata left.
    outputs = [storage.local_path(v["key"]) for v in media.variants.values()]
    # Transcripts (issue 17) are text made on their own queue and tested in tests/media/test_speech.py.
    derived = list(Media.objects.filter(parent=media).exclude(kind="transcript"))
    for child in derived:
        outputs += [storage.local_path(child.original_key)]
        outputs += [storage.local_path(v["key"]) for v in child.variants.values()]
    assert outputs
    for path in outputs:
        assert path.exists() and path.stat().st_size > 0, path
        streams = _ffprobe(path)["streams"]
        assert streams, path
        _assert_no_metadata(path)
    if case.cover:
        assert [c.kind for c in derived] == ["thumbnail"]

    if case.colours:
        with Image.open(_display_image(media)) as img:
            rgb = img.convert("RGB")
            for (fx, fy), want in case.colours.items():
                x, y = min(rgb.width - 1, int(fx * rgb.width)), min(rgb.height - 1, int(fy * rgb.height))
                got = rgb.getpixel((x, y))
                assert _near(got, want, case.tolerance), (case.id, (fx, fy), got, want)
    if case.check:
        case.check(media)

    tracebacks = [rec for rec in caplog.records if rec.exc_info or "Traceback" in rec.getMessage()]
    assert not tracebacks, [rec.getMessage() for rec in tracebacks]
