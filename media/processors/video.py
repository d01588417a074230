"""Video: probe, refuse early, then ONE ffmpeg run that decodes once and writes every rendition + the poster.

Renditions are H.264 (yuv420p, High profile) + AAC 128k MP4 with ``+faststart``, on the ladder
below. A rung is "up to N p", measured on the short side so portrait videos get the same quality
as landscape ones, and is never upscaled:

* a 1080p source gets 360p, 720p and 1080p; a 4K source the same three;
* a 480p source gets "360p" (360) and "720p" (at its own 480);
* a source smaller than 360p gets a single "360p" at its own size, so every video has "360p";
* a rung that would be within 10 % of the rung below it is skipped (a 380p source: only "360p").

When the source already is web-ready (H.264 yuv420p + AAC or no audio, in MP4/MOV, no rotation,
square pixels, ≤ 60 fps, a sane bitrate) its top rendition is a stream copy (remux), not a re-encode.
All metadata (e.g. a phone's GPS location) is dropped from every output.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python
from django.conf import settings

from . import ffmpeg
from .base import (
    DecodeBudgetExceeded,
    MediaTooLarge,
    ProcessingError,
    Processor,
    ProcessorResult,
    StepLog,
    UnsupportedMedia,
    VariantFile,
)
from .image_specs import POSTER, POSTER_THUMB, R360P, R720P, R1080P, THUMB


@dataclass(frozen=True)
class Rung:
    name: str
    height: int  # the short side
    maxrate_kbps: int  # VBV cap on top of CRF so a noisy source cannot blow up the file
    level: str  # H.264 level for ≤ 30 fps
    level_hfr: str  # … and for up to 60 fps


LADDER = (
    Rung(R360P, 360, 1_000, "3.0", "3.1"),
    Rung(R720P, 720, 3_000, "3.1", "3.2"),
    Rung(R1080P, 1080, 6_000, "4.0", "4.2"),
)
AUDIO_BITRATE = "128k"
POSTER_AT = 0.10  # fraction of the duration: past a fade-in, still representative
POSTER_THUMB_SIZE = 320
MAX_FPS = 60
REMUX_MAX_BITRATE_FACTOR = 2  # remux only if the source bitrate ≤ 2 × the rung's cap
WEB_H264_PROFILES = {"Baseline", "Constrained Baseline", "Main", "High"}

_MIME_BY_DEMUXER = {
    "avi": "video/x-msvideo",
    "mpegts": "video/mp2t",
    "flv": "video/x-flv",
    "ogg": "video/ogg",
    "mpeg": "video/mpeg",
    "asf": "video/x-ms-asf",
}


@dataclass(frozen=True)
class VideoInfo:
    """The facts ffprobe gave us, normalised. ``width``/``height`` are display sizes (after rotation)."""

    container: str
    demuxer: str
    mime_type: str
    stream_index: int  # the picture stream (not an attached cover) as ffmpeg numbers it
    duration: float
    width: int
    height: int
    rotation: int  # clockwise degrees the player must rotate: 0, 90, 180, 270
    video_codec: str
    profile: str | None
    pix_fmt: str | None
    fps: float | None
    bitrate: int | None
    square_pixels: bool
    has_audio: bool
    audio_codec: str | None
    audio_channels: int | None
    frames: int | None = None  # the stream's frame count when the container states it (nb_frames)

    @property
    def decoded_frames(self) -> float:
        """Frames a full decode produces: the stated count, else fps × duration (60 fps if unknown)."""
        return self.frames or math.ceil((self.fps or MAX_FPS) * self.duration)

    @property
    def decoded_pixels(self) -> float:
        return self.width * self.height * self.decoded_frames

    def facts(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
            "fps": self.fps,
            "bitrate": self.bitrate,
            "rotation": self.rotation,
            "has_audio": self.has_audio,
            "pix_fmt": self.pix_fmt,
            "profile": self.profile,
        }


@dataclass(frozen=True)
class Rendition:
    rung: Rung
    width: int
    height: int
    remux: bool = False

    @property
    def filename(self) -> str:
        return f"{self.rung.name}.mp4"


def probe_video(source: Path) -> VideoInfo:
    """ffprobe ``source`` through the safe runner and refuse anything that is not a real video."""
    probe = ffmpeg.ffprobe(source, demuxers=ffmpeg.VIDEO_DEMUXERS, kind="video")
    demuxer = ffmpeg.demuxer_of(probe, ffmpeg.VIDEO_DEMUXERS)
    streams = probe.get("streams", [])
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
        ),
        None,
    )
    if video is None:
        raise UnsupportedMedia(
            "This file has no video track (only sound or a cover picture); upload it as audio."
        )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    coded_w, coded_h = int(video.get("width") or 0), int(video.get("height") or 0)
    if coded_w < 2 or coded_h < 2:
        raise UnsupportedMedia("This video's picture size could not be read; it may be damaged.")
    duration = ffmpeg.parse_duration(probe, video)
    if duration is None:
        raise UnsupportedMedia("This video's length could not be read; it may be damaged or incomplete.")

    sar = _fraction(video.get("sample_aspect_ratio"))
    width = round(coded_w * sar) if sar else coded_w
    height = coded_h
    rotation = _rotation(video)
    if rotation in (90, 270):
        width, height = height, width
    fps = _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate"))
    bitrate = _int(probe["format"].get("bit_rate")) or _int(video.get("bit_rate"))
    return VideoInfo(
        container=probe["format"]["format_name"],
        demuxer=demuxer,
        mime_type=_mime_type(demuxer, probe, video, audio),
        stream_index=int(video["index"]),
        duration=duration,
        width=width,
        height=height,
        rotation=rotation,
        video_codec=video.get("codec_name", "unknown"),
        profile=video.get("profile"),
        pix_fmt=video.get("pix_fmt"),
        fps=round(float(fps), 3) if fps else None,
        bitrate=bitrate,
        square_pixels=sar in (None, 1),
        has_audio=audio is not None,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_channels=_int(audio.get("channels")) if audio else None,
        frames=_int(video.get("nb_frames")) or None,
    )


def check_limits(info: VideoInfo) -> None:
    """Refuse, from the probe alone, a video too long, too large, or with too much to decode.

    Limits (config/settings.py): ``VIDEO_MAX_DURATION_SECONDS``, ``VIDEO_MAX_PIXELS`` per frame and
    ``MEDIA_MAX_VIDEO_DECODED_PIXELS`` for width × height × frames (issue 9 row 5: a 205 KB 4K60
    clip took 135 s to transcode). Raises ``MediaTooLarge``/``DecodeBudgetExceeded``, never retried.
    """
    max_duration = settings.VIDEO_MAX_DURATION_SECONDS
    if info.duration > max_duration:
        raise MediaTooLarge(
            f"Video is {ffmpeg.human_duration(info.duration)}; "
            f"the limit is {ffmpeg.human_duration(max_duration)}."
        )
    max_pixels = settings.VIDEO_MAX_PIXELS
    if info.width * info.height > max_pixels:
        raise MediaTooLarge(
            f"Video is {info.width}x{info.height}; the limit is {max_pixels / 1e6:.1f} megapixels "
            "(3840x2160 is 8.3). Export it at a smaller size and upload it again."
        )
    budget = settings.MEDIA_MAX_VIDEO_DECODED_PIXELS
    if info.decoded_pixels > budget:
        fps = f" at {info.fps:g} fps" if info.fps else ""
        raise DecodeBudgetExceeded(
            f"Video is {info.width}x{info.height}{fps} for {ffmpeg.human_duration(info.duration)}: "
            f"{info.decoded_pixels / 1e9:,.0f} gigapixels to decode; the limit is {budget / 1e9:,.0f} "
            "(1080p at 30 fps for 1h is 224). Export it shorter, smaller or at a lower frame rate "
            "and upload it again."
        )


def plan_renditions(info: VideoInfo, ladder: tuple[Rung, ...] = LADDER) -> list[Rendition]:
    """The renditions to make (see the module docstring for the rule); the top one may be a remux."""
    short = min(info.width, info.height)
    plan: list[Rendition] = []
    for rung in ladder:
        target = min(rung.height, short)
        if plan and target <= min(plan[-1].width, plan[-1].height) * 1.1:
            continue
        plan.append(Rendition(rung, *_scaled(info, target)))
    top = plan[-1]
    if _web_ready(info, top):
        plan[-1] = Rendition(top.rung, info.width, info.height, remux=True)
    return plan


def transcode_graph(
    info: VideoInfo, source: Path, renditions: list[Rendition], workdir: Path, *, poster: bool = True
) -> tuple[Any, list[Path]]:
    """One ffmpeg-python graph that decodes ``source`` once and writes ``renditions`` (+ the poster);
    and the output paths. Run it with ``ffmpeg.run_graph``.

    Scaling is a cascade (1080p → 720p → 360p is cheaper than three scales from the source, and the
    filter thread is the serial part of the run); the poster is split off the largest picture and
    trimmed to POSTER_AT.
    """
    media = ffmpeg.safe_input(source, demuxer=info.demuxer)
    picture, audio = media[str(info.stream_index)], media["a:0?"]
    cascade = sorted((r for r in renditions if not r.remux), key=lambda r: r.width * r.height, reverse=True)
    top = renditions[-1] if renditions else None
    poster_size = (top.width, top.height) if top else _scaled(info, LADDER[-1].height)
    poster_from_cascade = bool(poster and cascade and (cascade[0].width, cascade[0].height) == poster_size)

    scaled: dict[str, Any] = {}
    poster_in = None
    current = picture
    if poster and not poster_from_cascade:  # e.g. the top rendition is a remux: poster at source size
        if cascade:
            parts = current.split()
            current, poster_in = parts[0], parts[1]
        else:
            poster_in = current
    for i, rendition in enumerate(cascade):
        chain = current
        if i == 0 and info.fps and info.fps > MAX_FPS:
            chain = chain.filter("fps", MAX_FPS)
        chain = chain.filter("scale", rendition.width, rendition.height).filter("setsar", 1)
        chain = chain.filter("format", "yuv420p")
        uses = 1 + (i + 1 < len(cascade)) + (i == 0 and poster_from_cascade)
        parts = chain.split() if uses > 1 else [chain]
        scaled[rendition.rung.name] = parts[0]
        if i + 1 < len(cascade):
            current = parts[1]
        if i == 0 and poster_from_cascade:
            poster_in = parts[uses - 1]

    common = {"map_metadata": "-1", "map_chapters": "-1", "sn": None, "dn": None}
    outputs: list[Path] = []
    nodes = []
    for rendition in renditions:
        path = workdir / rendition.filename
        outputs.append(path)
        if rendition.remux:
            options: dict[str, Any] = {"c": "copy"}
            streams = [picture, audio]
        else:
            rung = rendition.rung
            high_fps = bool(info.fps and info.fps > 30)
            options = {
                "c:v": "libx264",
                "preset": settings.VIDEO_PRESET,
                "crf": settings.VIDEO_CRF,
                "profile:v": "high",
                "level:v": rung.level_hfr if high_fps else rung.level,
                "maxrate": f"{rung.maxrate_kbps}k",
                "bufsize": f"{rung.maxrate_kbps * 2}k",
                "c:a": "aac",
                "b:a": AUDIO_BITRATE,
            }
            if info.audio_channels and info.audio_channels > 2:
                options["ac"] = 2
            streams = [scaled[rung.name], audio]
        options.update(common, movflags="+faststart")
        nodes.append(ffmpeg_python.output(*streams, str(path), f="mp4", **options))
    if poster:
        path = workdir / "poster.jpg"
        outputs.append(path)
        still = poster_in.trim(start=round(info.duration * POSTER_AT, 3)).setpts("PTS-STARTPTS")
        if not poster_from_cascade:
            still = still.filter("scale", *poster_size).filter("setsar", 1)
        still = still.filter("format", "yuvj420p")
        nodes.append(_still_output(still, path))
    return ffmpeg_python.merge_outputs(*nodes), outputs


def _still_output(stream: Any, path: Path) -> Any:
    """One JPEG frame (quality 3 of 31), no metadata."""
    return ffmpeg_python.output(
        stream, str(path), f="image2", update=1, map_metadata="-1", **{"frames:v": 1, "q:v": 3}
    )


class VideoProcessor(Processor):
    key = "video"
    kind = "video"

    def process(self, *, source: Path, workdir: Path, steps: StepLog) -> ProcessorResult:
        with steps.step("probe", source=source) as s:
            info = probe_video(source)
            s.output = info.facts() | {
                "duration": info.duration,
                "width": info.width,
                "height": info.height,
            }
            check_limits(info)
        budget = ffmpeg.time_budget(
            info.duration,
            factor=settings.VIDEO_TIMEOUT_FACTOR,
            minimum=settings.VIDEO_TIMEOUT_MIN_SECONDS,
        )
        deadline = time.monotonic() + budget  # one budget for every ffmpeg run of this video
        renditions = plan_renditions(info)
        workdir.mkdir(parents=True, exist_ok=True)
        graph, outputs = transcode_graph(info, source, renditions, workdir)

        with steps.step(
            "transcode",
            renditions=[r.rung.name for r in renditions],
            remux=[r.rung.name for r in renditions if r.remux],
            budget_s=round(budget, 1),
        ) as s:

            def report(block: dict[str, str]) -> None:
                steps.progress(s, **ffmpeg.progress_values(block, info.duration))

            try:
                run = ffmpeg.run_graph(
                    graph,
                    timeout=deadline - time.monotonic(),
                    outputs=outputs,
                    on_progress=report,
                    failure_message=(
                        "We could not decode this video; it may be damaged or use a codec we do not support."
                    ),
                )
            except ffmpeg.FFmpegFailed as exc:
                s.output["ffmpeg_log"] = exc.log[-2000:]
                raise
            s.output.update(elapsed_s=round(run.elapsed_s, 2), peak_rss_mb=round(run.peak_rss_mb, 1))
            s.output["realtime_factor"] = round(info.duration / run.elapsed_s, 2) if run.elapsed_s else None

        poster = workdir / "poster.jpg"
        if not poster.exists() or poster.stat().st_size == 0:
            # The 10 % mark had no frame (a duration that lied); take the first frame instead.
            with steps.step("poster_fallback"):
                top = renditions[-1]
                still = ffmpeg.safe_input(source, demuxer=info.demuxer)[str(info.stream_index)]
                still = still.filter("scale", top.width, top.height).filter("setsar", 1)
                ffmpeg.run_graph(
                    _still_output(still.filter("format", "yuvj420p"), poster),
                    timeout=deadline - time.monotonic(),
                    outputs=[poster],
                    failure_message="We could not take a poster picture from this video.",
                )

        variants = []
        for rendition in renditions:
            path = workdir / rendition.filename
            size = path.stat().st_size
            variants.append(
                VariantFile(
                    name=rendition.rung.name,
                    path=path,
                    mime_type="video/mp4",
                    width=rendition.width,
                    height=rendition.height,
                    size_bytes=size,
                    extra={
                        "codec": "h264",
                        "audio_codec": "aac" if info.has_audio else None,
                        "bitrate": round(size * 8 / info.duration),
                        "remuxed": rendition.remux,
                    },
                )
            )
        top = renditions[-1]
        variants.append(
            VariantFile(
                name=POSTER,
                path=poster,
                mime_type="image/jpeg",
                width=top.width,
                height=top.height,
                extra={"codec": "mjpeg", "at_seconds": round(info.duration * POSTER_AT, 3)},
            )
        )
        with steps.step(POSTER_THUMB) as s:
            thumb = poster_thumbnail(poster, workdir, s.output)
            s.output.update(width=thumb.width, height=thumb.height, mime_type=thumb.mime_type)
        variants.append(thumb)

        return ProcessorResult(
            width=info.width,
            height=info.height,
            duration_seconds=round(info.duration, 3),
            mime_type=info.mime_type,
            metadata=info.facts()
            | {
                "remuxed": any(r.remux for r in renditions),
                "renditions": [
                    {
                        "name": v.name,
                        "width": v.width,
                        "height": v.height,
                        "bitrate": v.extra["bitrate"],
                        "remuxed": v.extra["remuxed"],
                    }
                    for v in variants
                    if v.mime_type == "video/mp4"
                ],
            },
            variants=variants,
        )


def poster_thumbnail(poster: Path, workdir: Path, notes: dict[str, Any]) -> VariantFile:
    """The poster's square thumbnail: ImageProcessor's "thumb" when that module exists, else Pillow."""
    try:
        from media.processors.image import ImageProcessor
    except ImportError:
        ImageProcessor = None  # noqa: N806

    if ImageProcessor is not None:
        image_steps = StepLog()
        image_workdir = workdir / "poster-image"
        image_workdir.mkdir(exist_ok=True)
        try:
            result = ImageProcessor().process(source=poster, workdir=image_workdir, steps=image_steps)
        except ProcessingError as exc:  # our own JPEG; if the image pipeline balks, Pillow will do
            notes["image_error"] = f"{type(exc).__name__}: {exc}"
            result = None
        notes["image_steps"] = [step["name"] for step in image_steps.as_list()]
        thumb = next((v for v in result.variants if v.name == THUMB), None) if result else None
        if thumb is not None:
            notes["via"] = "ImageProcessor"
            return VariantFile(
                name=POSTER_THUMB,
                path=thumb.path,
                mime_type=thumb.mime_type,
                width=thumb.width,
                height=thumb.height,
                size_bytes=thumb.size_bytes,
                extra=dict(thumb.extra),
            )

    from PIL import Image, ImageOps

    notes["via"] = "Pillow"
    path = workdir / "poster_thumb.jpg"
    with Image.open(poster) as image:
        side = min(POSTER_THUMB_SIZE, *image.size)  # a centre square crop, never upscaled
        ImageOps.fit(image.convert("RGB"), (side, side), Image.LANCZOS).save(path, "JPEG", quality=85)
    return VariantFile(name=POSTER_THUMB, path=path, mime_type="image/jpeg", width=side, height=side)


def _web_ready(info: VideoInfo, top: Rendition) -> bool:
    """Can the source itself serve as the top rendition (a stream copy)?"""
    max_bitrate = top.rung.maxrate_kbps * 1000 * REMUX_MAX_BITRATE_FACTOR
    return (
        info.demuxer == "mov"
        and info.video_codec == "h264"
        and info.pix_fmt == "yuv420p"
        and info.profile in WEB_H264_PROFILES
        and info.audio_codec in (None, "aac")
        and info.rotation == 0
        and info.square_pixels
        and (info.fps or 0) <= MAX_FPS
        and (top.width, top.height) == (info.width, info.height)
        and info.width % 2 == 0
        and info.height % 2 == 0
        and (info.bitrate is None or info.bitrate <= max_bitrate)
    )


def _scaled(info: VideoInfo, short_side: int) -> tuple[int, int]:
    """Even width and height with the display aspect ratio, the short side being ``short_side``."""
    short_side = max(2, short_side - short_side % 2)
    if info.width >= info.height:
        return max(2, round(info.width * short_side / info.height / 2) * 2), short_side
    return short_side, max(2, round(info.height * short_side / info.width / 2) * 2)


def _rotation(stream: dict[str, Any]) -> int:
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            # ffprobe prints the display matrix's counter-clockwise angle.
            return round(-float(side_data["rotation"]) / 90) * 90 % 360
    rotate = stream.get("tags", {}).get("rotate")  # older muxers/ffprobe: clockwise degrees
    if rotate is not None:
        try:
            return round(float(rotate) / 90) * 90 % 360
        except ValueError:
            return 0
    return 0


def _mime_type(
    demuxer: str, probe: dict[str, Any], video: dict[str, Any], audio: dict[str, Any] | None
) -> str:
    if demuxer == "mov":
        brand = probe["format"].get("tags", {}).get("major_brand", "").strip()
        if brand == "qt":
            return "video/quicktime"
        if brand.startswith("3g"):
            return "video/3gpp"
        return "video/mp4"
    if demuxer == "matroska":
        webm_audio = audio is None or audio.get("codec_name") in ("opus", "vorbis")
        if video.get("codec_name") in ("vp8", "vp9", "av1") and webm_audio:
            return "video/webm"
        return "video/x-matroska"
    return _MIME_BY_DEMUXER.get(demuxer, "application/octet-stream")


def _fraction(value: Any) -> Fraction | None:
    try:
        fraction = Fraction(str(value).replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        return None
    return fraction if fraction > 0 else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
