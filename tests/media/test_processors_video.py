"""VideoProcessor against real ffmpeg: tiny lavfi clips in, files checked with ffprobe."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dramatiq.middleware import TimeLimitExceeded
from dramatiq.threading import raise_thread_exception
from PIL import Image, ImageStat

from media.processors import ffmpeg
from media.processors.base import (
    DecodeBudgetExceeded,
    MediaTooLarge,
    ProcessingError,
    ProcessingTimeout,
    StepLog,
    UnsupportedMedia,
)
from media.processors.video import LADDER, VideoInfo, VideoProcessor, check_limits, plan_renditions

FFMPEG = ["ffmpeg", "-hide_banner", "-v", "error", "-y"]
TESTSRC = "testsrc2=size={size}:rate=25:duration={d}"
SINE = "sine=frequency=440:sample_rate=48000:duration={d}"


def make(path: Path, *args: str) -> Path:
    subprocess.run([*FFMPEG, *args, str(path)], check=True)
    return path


def probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)


def stream(info: dict, kind: str) -> dict:
    return next(s for s in info["streams"] if s["codec_type"] == kind)


def top_level_atoms(path: Path) -> list[str]:
    atoms, data = [], path.read_bytes()
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:
            size = len(data) - pos
        atoms.append(kind)
        pos += size
    return atoms


def ffmpeg_children(workdir: Path) -> list[str]:
    """ffmpeg/ffprobe processes (zombies included) that are our children or work in ``workdir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm in ("ffmpeg", "ffprobe") and (ppid == os.getpid() or str(workdir) in cmdline):
            found.append(f"{entry.name} {comm} {cmdline}")
    return found


def _zombie(entry: str) -> bool:
    """Whether the process of an ``ffmpeg_children`` entry has exited (state Z) or is gone."""
    try:
        stat = Path(f"/proc/{entry.split()[0]}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] in ("Z", "X")


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("video-clips")
    small = d / "web.mp4"
    make(
        small,
        *("-f", "lavfi", "-i", TESTSRC.format(size="320x240", d=2)),
        *("-f", "lavfi", "-i", SINE.format(d=2)),
        *("-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high", "-pix_fmt", "yuv420p"),
        *("-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart"),
        *("-metadata", "location=+48.8584+002.2945/", "-shortest"),
    )
    rotated = make(d / "rotated.mp4", "-i", str(small), "-c", "copy", "-metadata:s:v", "rotate=90")
    avi = make(
        d / "old.avi",
        *("-f", "lavfi", "-i", TESTSRC.format(size="320x240", d=2)),
        *("-f", "lavfi", "-i", SINE.format(d=2)),
        *("-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame", "-shortest"),
    )
    hd = make(
        d / "hd.mkv",
        *("-f", "lavfi", "-i", TESTSRC.format(size="1280x720", d=3)),
        *("-f", "lavfi", "-i", SINE.format(d=3)),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", "-c:a", "aac", "-shortest"),
    )
    sound = make(d / "sound.m4a", "-f", "lavfi", "-i", SINE.format(d=1), "-c:a", "aac")
    cover = make(
        d / "cover.m4a",
        *("-i", str(sound), "-f", "lavfi", "-i", "testsrc2=size=64x64:duration=1"),
        *("-map", "0:a", "-map", "1:v", "-c:a", "copy", "-c:v", "mjpeg", "-frames:v", "1"),
        *("-disposition:v:0", "attached_pic"),
    )
    return {"web": small, "rotated": rotated, "avi": avi, "hd": hd, "sound": sound, "cover": cover}


def run(source: Path, workdir: Path):
    steps = StepLog()
    return VideoProcessor().process(source=source, workdir=workdir, steps=steps), steps


def test_web_ready_source_is_remuxed_not_reencoded(clips, tmp_path):
    result, steps = run(clips["web"], tmp_path)

    assert result.metadata["remuxed"] is True
    assert result.mime_type == "video/mp4"
    assert (result.width, result.height, round(result.duration_seconds)) == (320, 240, 2)
    assert [v.name for v in result.variants] == ["360p", "hls", "poster", "poster_thumb"]
    rendition = result.variants[0]
    assert rendition.extra["remuxed"] is True
    assert (rendition.width, rendition.height) == (320, 240)
    out, src = probe(rendition.path), probe(clips["web"])
    keys = ("codec_name", "profile", "level", "width", "height", "pix_fmt", "has_b_frames", "r_frame_rate")
    assert {k: stream(out, "video")[k] for k in keys} == {k: stream(src, "video")[k] for k in keys}

    def packets(path):
        cmd = [*FFMPEG, "-i", str(path), "-map", "0:v", "-c", "copy", "-f", "streamhash", "-"]
        return subprocess.run(cmd, check=True, capture_output=True).stdout

    assert packets(rendition.path) == packets(clips["web"])
    assert top_level_atoms(rendition.path).index("moov") < top_level_atoms(rendition.path).index("mdat")
    assert "location" not in json.dumps(out["format"].get("tags", {}))  # the GPS tag is gone


def test_non_web_source_gets_ladder_up_to_its_height_in_one_run(clips, tmp_path):
    progress = []
    steps = StepLog(on_change=lambda s: progress.append(s[-1]["output"].get("percent")))
    result = VideoProcessor().process(source=clips["hd"], workdir=tmp_path, steps=steps)

    assert result.mime_type == "video/x-matroska"
    assert result.metadata["remuxed"] is False
    assert result.metadata["video_codec"] == "h264" and result.metadata["pix_fmt"] == "yuv444p"
    names = [v.name for v in result.variants]
    assert names == ["720p", "hls", "poster", "poster_thumb"]  # one MP4; never upscaled to 1080p
    assert [r["name"] for r in result.variants[1].extra["renditions"]] == ["360p", "720p"]
    for variant, size in zip(result.variants[:1], [(1280, 720)], strict=True):
        info = probe(variant.path)
        video, audio = stream(info, "video"), stream(info, "audio")
        assert (video["width"], video["height"]) == size == (variant.width, variant.height)
        assert (video["codec_name"], video["pix_fmt"], video["profile"]) == ("h264", "yuv420p", "High")
        assert audio["codec_name"] == "aac"
        assert variant.extra["codec"] == "h264" and variant.extra["bitrate"] > 0
        assert variant.size_bytes == variant.path.stat().st_size
        atoms = top_level_atoms(variant.path)
        assert atoms.index("moov") < atoms.index("mdat"), atoms
    assert [m["name"] for m in result.metadata["renditions"]] == ["360p", "720p"]
    transcode = next(s for s in steps.as_list() if s["name"] == "transcode")
    assert transcode["status"] == "ok" and transcode["output"]["percent"] == 100.0
    assert 100.0 in progress

    poster = result.variants[2]
    with Image.open(poster.path) as image:
        assert image.format == "JPEG" and image.size == (1280, 720)
        assert sum(ImageStat.Stat(image.convert("L")).mean) > 40  # testsrc2 at 10 %: not a black frame
    thumb = result.variants[3]
    with Image.open(thumb.path) as image:
        assert image.size == (thumb.width, thumb.height)
        assert max(image.size) <= 320


def test_rotation_is_applied_and_cleared(clips, tmp_path):
    result, _ = run(clips["rotated"], tmp_path)

    assert result.metadata["rotation"] in (90, 270)
    assert (result.width, result.height) == (240, 320)
    assert result.metadata["remuxed"] is False  # rotation needs a re-encode
    video = stream(probe(result.variants[0].path), "video")
    assert (video["width"], video["height"]) == (240, 320)
    assert not video.get("side_data_list") and "rotate" not in video.get("tags", {})
    with Image.open(result.variants[2].path) as poster:
        assert poster.size == (240, 320)


def test_old_avi_is_reencoded_to_h264_aac(clips, tmp_path):
    result, _ = run(clips["avi"], tmp_path)

    assert result.mime_type == "video/x-msvideo"
    assert (result.metadata["video_codec"], result.metadata["audio_codec"]) == ("mpeg4", "mp3")
    info = probe(result.variants[0].path)
    assert stream(info, "video")["codec_name"] == "h264" and stream(info, "audio")["codec_name"] == "aac"


@pytest.mark.parametrize(
    ("name", "segment"),
    [("hls.avi", "concat:http://x|file:///etc/passwd"), ("hls.mp4", "file:///etc/passwd")],
)
def test_hls_playlist_disguised_as_video_is_refused_and_reads_nothing(tmp_path, name, segment):
    hostile = tmp_path / name
    hostile.write_text(f"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\n{segment}\n#EXT-X-ENDLIST\n")
    workdir = tmp_path / "work"
    steps = StepLog()

    with pytest.raises(UnsupportedMedia) as excinfo:
        VideoProcessor().process(source=hostile, workdir=workdir, steps=steps)

    assert "root:" not in str(excinfo.value) and "root:" not in json.dumps(steps.as_list())
    # Second line of defence: even forcing the claimed demuxer, ffmpeg must not follow the playlist.
    leak = tmp_path / "leak.mkv"
    with pytest.raises(ffmpeg.FFmpegFailed):
        ffmpeg.run_ffmpeg(
            source=hostile,
            demuxer="avi" if name.endswith(".avi") else "mov",
            args=["-map", "0", "-c", "copy", str(leak)],
            timeout=30,
            outputs=[leak],
        )
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != hostile:
            assert b"root:" not in path.read_bytes(), path


@pytest.mark.parametrize(("clip", "words"), [("sound", "no video track"), ("cover", "no video track")])
def test_audio_only_and_cover_picture_are_not_video(clips, tmp_path, clip, words):
    with pytest.raises(UnsupportedMedia, match=words):
        run(clips[clip], tmp_path)


def test_text_file_is_unsupported(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("just some notes, not a video\n" * 50)
    with pytest.raises(UnsupportedMedia):
        run(text, tmp_path / "work")


def test_too_long_video_is_refused_with_a_readable_limit(clips, tmp_path, settings):
    settings.VIDEO_MAX_DURATION_SECONDS = 1
    with pytest.raises(MediaTooLarge, match=r"Video is 2s; the limit is 1s"):
        run(clips["web"], tmp_path)
    assert not list(tmp_path.glob("*.mp4"))


def test_too_many_pixels_is_refused(clips, tmp_path, settings):
    settings.VIDEO_MAX_PIXELS = 640 * 360
    with pytest.raises(MediaTooLarge, match=r"Video is 1280x720"):
        run(clips["hd"], tmp_path)


def test_timeout_kills_ffmpeg_and_removes_partial_outputs(clips, tmp_path, settings):
    settings.VIDEO_TIMEOUT_FACTOR = 0.0
    settings.VIDEO_TIMEOUT_MIN_SECONDS = 0.3
    steps = StepLog()
    with pytest.raises(ProcessingTimeout) as excinfo:
        VideoProcessor().process(source=clips["hd"], workdir=tmp_path, steps=steps)

    # Issue 9 row 5: a time-budget overrun is not retried (the budget already scales with the length).
    assert excinfo.value.retryable is False
    assert ffmpeg_children(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".mp4", ".jpg")]
    assert steps.as_list()[-1]["status"] == "failed"


def test_worker_interrupt_kills_ffmpeg_and_removes_partial_outputs(clips, tmp_path):
    caught: list[BaseException] = []
    # ffmpeg children left by earlier tests in this process (zombies nobody reaped) are not ours to judge.
    earlier = set(ffmpeg_children(tmp_path))

    def work():
        try:
            run(clips["hd"], tmp_path)
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 60  # generous: CI machines may be loaded
    while (
        not any("ffmpeg " in p for p in set(ffmpeg_children(tmp_path)) - earlier)
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    raise_thread_exception(thread.ident, TimeLimitExceeded)  # what dramatiq's TimeLimit middleware does
    thread.join(60)

    assert not thread.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], TimeLimitExceeded)
    # Dead is dead: a killed ffmpeg that the process has not reaped yet (a zombie) holds no CPU or memory.
    assert [p for p in ffmpeg_children(tmp_path) if p not in earlier and not _zombie(p)] == []
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".mp4", ".jpg")]


def _info(width: int, height: int, **overrides) -> VideoInfo:
    values = dict(
        container="mov,mp4,m4a,3gp,3g2,mj2",
        demuxer="mov",
        mime_type="video/mp4",
        stream_index=0,
        duration=10.0,
        width=width,
        height=height,
        rotation=0,
        video_codec="mpeg4",
        profile=None,
        pix_fmt="yuv420p",
        fps=30.0,
        bitrate=2_000_000,
        square_pixels=True,
        has_audio=True,
        audio_codec="aac",
        audio_channels=2,
    )
    return VideoInfo(**(values | overrides))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((3840, 2160), [("360p", 640, 360), ("720p", 1280, 720), ("1080p", 1920, 1080)]),
        ((1920, 1080), [("360p", 640, 360), ("720p", 1280, 720), ("1080p", 1920, 1080)]),
        ((854, 480), [("360p", 640, 360), ("720p", 854, 480)]),
        ((676, 380), [("360p", 640, 360)]),
        ((320, 240), [("360p", 320, 240)]),
        ((1080, 1920), [("360p", 360, 640), ("720p", 720, 1280), ("1080p", 1080, 1920)]),
    ],
)
def test_ladder_rule(size, expected):
    plan = plan_renditions(_info(*size))
    assert [(r.rung.name, r.width, r.height) for r in plan] == expected
    assert not any(r.remux for r in plan)
    # One progressive MP4: the 720p rung, or the only rung of a source smaller than ~400p.
    assert [r.name for r in plan if r.mp4] == (["720p"] if len(plan) > 1 else ["360p"])


def test_only_the_top_rendition_of_a_web_ready_source_is_a_remux():
    info = _info(1920, 1080, video_codec="h264", profile="High")
    plan = plan_renditions(info)
    assert [r.remux for r in plan] == [False, False, True]
    too_fat = _info(1920, 1080, video_codec="h264", profile="High", bitrate=40_000_000)
    assert not any(r.remux for r in plan_renditions(too_fat))
    assert LADDER[-1].name == "1080p"


def test_processing_error_is_the_base_of_every_refusal():
    assert issubclass(UnsupportedMedia, ProcessingError) and issubclass(ProcessingTimeout, ProcessingError)


# --- Issue 9 row 5: the decoded-pixel budget, from the probe, before any decode -------------------


def test_a_phone_video_passes_the_decoded_pixel_budget_and_4k60_for_two_hours_does_not():
    check_limits(_info(1920, 1080, fps=30.0, duration=600.0))  # 1080p30, 10 minutes
    check_limits(_info(1080, 1920, fps=60.0, duration=1800.0))  # portrait 1080p60, 30 minutes

    with pytest.raises(DecodeBudgetExceeded) as exc:
        check_limits(_info(3840, 2160, fps=60.0, duration=7200.0))
    assert exc.value.retryable is False and exc.value.code == "decode_budget_exceeded"
    assert str(exc.value).startswith("Video is 3840x2160 at 60 fps for 2h: 3,583 gigapixels to decode")


def test_the_stated_frame_count_and_a_missing_frame_rate_count_against_the_budget(settings):
    settings.MEDIA_MAX_VIDEO_DECODED_PIXELS = 1920 * 1080 * 300
    check_limits(_info(1920, 1080, fps=30.0, duration=10.0))
    with pytest.raises(DecodeBudgetExceeded):  # the container says 301 frames
        check_limits(_info(1920, 1080, fps=30.0, duration=10.0, frames=301))
    with pytest.raises(DecodeBudgetExceeded):  # no frame rate: assume the 60 fps we accept
        check_limits(_info(1920, 1080, fps=None, duration=10.0))


def test_a_video_over_the_budget_is_refused_before_ffmpeg_decodes_it(clips, tmp_path, settings):
    settings.MEDIA_MAX_VIDEO_DECODED_PIXELS = 1280 * 720 * 25 * 2  # hd.mkv is 3 s of 720p25
    steps = StepLog()
    with pytest.raises(DecodeBudgetExceeded, match="Video is 1280x720 at 25 fps for 3s"):
        VideoProcessor().process(source=clips["hd"], workdir=tmp_path, steps=steps)
    assert [s["name"] for s in steps.as_list()] == ["probe"]
    assert list(tmp_path.iterdir()) == []


def test_variant_names_are_declared_once_beside_the_image_specs():
    from media.processors import image_specs as specs

    assert tuple(rung.name for rung in LADDER) == specs.VIDEO_RENDITIONS
    video = set(specs.VIDEO_RENDITIONS)
    assert set(specs.VIDEO_REVIEW_PREFERENCE) == set(specs.VIDEO_DISPLAY_PREFERENCE) == video
    names = {spec.name for spec in specs.IMAGE_VARIANTS}
    assert names == set(specs.IMAGE_REVIEW_PREFERENCE) == set(specs.IMAGE_DISPLAY_PREFERENCE)
    assert set(specs.IMAGE_PREVIEW_PREFERENCE) <= names
    assert {f.name for f in specs.JPEG_FALLBACKS} == {n + specs.JPEG_SUFFIX for n in names}
    assert {f.fallback_for for f in specs.JPEG_FALLBACKS} == names
