"""Video: probe, refuse early, then ONE ffmpeg run that decodes once and writes every output.

Outputs (DESIGN §5, §8):

* **HLS** (``variants.hls``): one fMP4 (CMAF) media playlist per rung of the ladder below, H.264
  (yuv420p, High) with AAC 128k stereo muxed into each rung's segments (what hls.js and Safari both
  play; a video without sound gets video-only segments), segments of ``HLS_SEGMENT_SECONDS`` cut at
  keyframes forced at the same times in every rung, and a master playlist written here. Every file
  sits in one folder and playlists name each other by relative URIs, so one signed prefix grants
  them all.
* **One progressive MP4** fallback: the "720p" rung (a source smaller than 720p: its top rung), the
  very same encode as its HLS rung (ffmpeg's ``tee`` muxer writes both), with ``+faststart``.
* A poster JPEG (at ``POSTER_AT``) and its square thumbnail.

A rung is "up to N p", measured on the short side so portrait videos get the same quality as
landscape ones, and is never upscaled:

* a 1080p source gets 360p, 720p and 1080p; a 4K source the same three;
* a 480p source gets "360p" (360) and "720p" (at its own 480);
* a source smaller than 360p gets a single "360p" at its own size, so every video has one rung;
* a rung that would be within 10 % of the rung below it is skipped (a 380p source: only "360p").

Every rung's bitrate is capped (``maxrate``/``bufsize``) by the rung's cap and by the source's own
video bitrate: re-encoding never adds information. Before scaling, in the same filter graph:

* **interlaced** sources are deinterlaced with ``bwdif`` (one frame per frame): when the stream
  flags its field order, ``deint=interlaced`` with the parity of each frame; when it states none
  (e.g. MPEG-4 in AVI), a short ``idet`` pass over the first ``IDET_FRAMES`` frames decides, and a
  combed source is then deinterlaced whole with the parity idet found;
* **alpha** (VP9/VP8 WebM with an alpha channel, decoded with libvpx since ffmpeg's own VP9 decoder
  drops alpha) is composited on ``ALPHA_BACKGROUND`` (neutral mid-grey #808080), for the poster and
  every rung alike;
* **HDR** (PQ ``smpte2084`` or HLG ``arib-std-b67``) is tone-mapped to SDR BT.709 with zscale
  (libzimg) + ``tonemap=mobius`` (linear up to SDR white, highlights compressed), and the outputs are
  tagged BT.709.

When the source's video already fits the top rung (H.264 ≤ High, yuv420p, SDR, progressive, no
alpha, MP4/MOV, no rotation, square pixels, ≤ 60 fps, under the rung's bitrate cap) and its
keyframes allow segments of about 4–6 s, the top rung is a stream copy (remux) and the other rungs
get their keyframes at the copy's segment boundaries. All metadata (e.g. a phone's GPS location) is
dropped from every output.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import time
from dataclasses import dataclass, replace
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
from .image_specs import HLS, POSTER, POSTER_THUMB, R360P, R720P, R1080P, THUMB, VIDEO_FALLBACK


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
WEB_H264_PROFILES = {"Baseline", "Constrained Baseline", "Main", "High"}
HLS_SEGMENT_SECONDS = 6  # Apple's recommendation; encoded rungs get a keyframe exactly every 6 s
HLS_COPY_SEGMENTS = (3.5, 7.0)  # a stream copy's segments (but the last) must stay "about 4–6 s"
HLS_MIME = "application/vnd.apple.mpegurl"
HLS_FOLDER = "hls"  # in the scratch dir, and in storage: media/{user}/{media}/hls/
HDR_TRANSFERS = {"smpte2084", "arib-std-b67"}  # PQ, HLG
TONEMAP_NPL = 100  # nits of SDR white: HDR's reference white maps to it
ALPHA_BACKGROUND = "0x808080"  # neutral mid-grey under transparent video (poster and renditions)
IDET_FRAMES = 300  # frames the interlace probe decodes when a stream does not state its field order
INTERLACED_FIELD_ORDERS = {"tt", "bb", "tb", "bt"}
PROGRESSIVE_ONLY_CODECS = {"vp8", "vp9", "av1", "theora", "gif", "apng", "png", "webp"}
# H.264 needs about this many times the bits of these codecs for the same picture; a source's bitrate
# caps the rungs only after this allowance.
CODEC_EFFICIENCY = {"hevc": 1.5, "vp9": 1.5, "av1": 2.0}
MIN_CAP_KBPS = 200
_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._%+-]+$")

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
    video_bitrate: int | None = None  # the picture stream's own bit rate, when stated
    color_transfer: str | None = None
    color_primaries: str | None = None
    field_order: str | None = None  # ffprobe's: progressive, tt, bb, tb, bt, unknown (None: unstated)
    alpha: bool = False  # VP8/VP9 with an alpha channel (WebM's alpha_mode tag)

    @property
    def hdr(self) -> bool:
        return self.color_transfer in HDR_TRANSFERS

    @property
    def picture_bitrate(self) -> int | None:
        """The video's bit rate: the stream's own, else the whole file's (an upper bound)."""
        return self.video_bitrate or self.bitrate

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
            "color_transfer": self.color_transfer,
            "field_order": self.field_order,
            "alpha": self.alpha,
        }


@dataclass(frozen=True)
class Rendition:
    """One rung: always an HLS media playlist; ``mp4`` also writes the progressive fallback."""

    rung: Rung
    width: int
    height: int
    remux: bool = False
    mp4: bool = False

    @property
    def name(self) -> str:
        return self.rung.name

    @property
    def filename(self) -> str:
        return f"{self.rung.name}.mp4"


@dataclass(frozen=True)
class Deinterlace:
    """How bwdif runs: ``parity`` auto/tff/bff, ``deint`` interlaced (flagged frames only) or all."""

    parity: str
    deint: str
    reason: str


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
        video_bitrate=_int(video.get("bit_rate")),
        color_transfer=video.get("color_transfer"),
        color_primaries=video.get("color_primaries"),
        field_order=video.get("field_order"),
        alpha=video.get("codec_name") in ("vp8", "vp9")
        and str(video.get("tags", {}).get("alpha_mode", video.get("tags", {}).get("ALPHA_MODE", ""))) == "1",
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
    """The rungs to make (see the module docstring for the rule), smallest first. One of them is the
    MP4 fallback (``VIDEO_FALLBACK``, else the top rung); the top one is a remux candidate when the
    source fits it (``remuxable``); ``VideoProcessor`` still checks the source's keyframes."""
    short = min(info.width, info.height)
    plan: list[Rendition] = []
    for rung in ladder:
        target = min(rung.height, short)
        if plan and target <= min(plan[-1].width, plan[-1].height) * 1.1:
            continue
        plan.append(Rendition(rung, *_scaled(info, target)))
    fallback = next((i for i, r in enumerate(plan) if r.name == VIDEO_FALLBACK), len(plan) - 1)
    plan[fallback] = replace(plan[fallback], mp4=True)
    top = plan[-1]
    if remuxable(info, top):
        plan[-1] = replace(top, width=info.width, height=info.height, remux=True)
    return plan


def rung_maxrate_kbps(info: VideoInfo, rung: Rung) -> int:
    """A rung's VBV cap: the rung's own, and never above the source's video bitrate (allowing for
    codecs more efficient than H.264, ``CODEC_EFFICIENCY``); at least ``MIN_CAP_KBPS``."""
    source = info.picture_bitrate
    if not source:
        return rung.maxrate_kbps
    allowance = CODEC_EFFICIENCY.get(info.video_codec, 1.0)
    return max(MIN_CAP_KBPS, min(rung.maxrate_kbps, round(source * allowance / 1000)))


def hls_cuts(
    keyframes: list[float], duration: float, target: float = HLS_SEGMENT_SECONDS
) -> list[float] | None:
    """Where ffmpeg's HLS muxer will cut a stream copy with these keyframes (seconds from the first
    keyframe), or None when that gives segments outside ``HLS_COPY_SEGMENTS`` (the last may be shorter).

    The muxer (libavformat/hlsenc.c) starts segment k+1 at the first keyframe at or after k × target
    from the start, so this follows the same rule; the encoded rungs get keyframes at exactly these
    times, so their segments line up with the copy's.
    """
    if not keyframes:
        return None
    first = keyframes[0]
    cuts: list[float] = []
    for t in keyframes[1:]:
        rel = t - first
        if rel >= target * (len(cuts) + 1) - 1e-4:
            cuts.append(rel)
    bounds = [0.0, *cuts, max(duration, cuts[-1] if cuts else 0.0)]
    lo, hi = HLS_COPY_SEGMENTS
    lengths = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    if any(not lo <= length <= hi for length in lengths[:-1]) or lengths[-1] > hi:
        return None
    return cuts


def detect_interlace(info: VideoInfo, source: Path, *, timeout: float) -> Deinterlace | None:
    """Whether (and how) to deinterlace. A stream that flags interlaced fields gets ``bwdif`` on its
    flagged frames, with each frame's own parity; one that says progressive gets nothing. A stream
    that states no field order (MPEG-4 in AVI, some MPEG-2) gets a short ``idet`` pass over its
    first ``IDET_FRAMES`` frames (a bounded extra decode, done only then): if most frames are combed,
    every frame is deinterlaced with the parity idet saw."""
    order = (info.field_order or "unknown").lower()
    if order in INTERLACED_FIELD_ORDERS:
        return Deinterlace("auto", "interlaced", f"stream field order {order}")
    if order == "progressive" or info.video_codec in PROGRESSIVE_ONLY_CODECS:
        return None
    media = ffmpeg.safe_input(source, demuxer=info.demuxer, **_decoder_options(info))
    graph = (
        media[str(info.stream_index)]
        .filter("idet")
        .output("-", f="null", **{"frames:v": IDET_FRAMES, "an": None, "sn": None, "dn": None})
    )
    run = ffmpeg.run_graph(
        graph, timeout=timeout, loglevel="info", failure_message="We could not decode this video."
    )
    # The last summary: ffmpeg may configure (and tear down) the graph once before the real run.
    counts = re.findall(
        r"Multi frame detection: TFF:\s*(\d+)\s+BFF:\s*(\d+)\s+Progressive:\s*(\d+)", run.stderr
    )
    if not counts:
        return None
    tff, bff, progressive = (int(n) for n in counts[-1])
    if tff + bff <= progressive:
        return None
    parity = "tff" if tff >= bff else "bff"
    return Deinterlace(parity, "all", f"idet: tff {tff}, bff {bff}, progressive {progressive}")


def _decoder_options(info: VideoInfo) -> dict[str, str]:
    """Input options: libvpx for VP8/VP9 with alpha (ffmpeg's native decoders drop the alpha plane)."""
    if info.alpha:
        return {"c:v": "libvpx-vp9" if info.video_codec == "vp9" else "libvpx"}
    return {}


def _prepare(info: VideoInfo, picture: Any, deinterlace: Deinterlace | None, size: tuple[int, int]) -> Any:
    """Deinterlace, composite alpha, tone-map: what every output needs before it is scaled."""
    if deinterlace is not None:
        picture = picture.filter(
            "bwdif", mode="send_frame", parity=deinterlace.parity, deint=deinterlace.deint
        )
    if info.alpha:
        parts = picture.split()
        fg, bg = parts[0], parts[1]
        bg = bg.filter("format", "yuv420p").filter(
            "drawbox", x=0, y=0, w="iw", h="ih", color=ALPHA_BACKGROUND, t="fill"
        )
        picture = ffmpeg_python.filter([bg, fg], "overlay", format="yuv420")
    if info.hdr:
        # Linear light at the size of the largest output, BT.2020 → BT.709 primaries, tone-map,
        # then BT.709 transfer, matrix and TV range (zscale is libzimg: the CPU path in Debian's ffmpeg).
        picture = (
            picture.filter("zscale", w=size[0], h=size[1], t="linear", npl=TONEMAP_NPL)
            .filter("format", "gbrpf32le")
            .filter("zscale", p="bt709")
            .filter("tonemap", tonemap="mobius", desat=0)
            .filter("zscale", t="bt709", m="bt709", r="tv")
            .filter("format", "yuv420p")
        )
    return picture


def transcode_graph(
    info: VideoInfo,
    source: Path,
    renditions: list[Rendition],
    workdir: Path,
    *,
    poster: bool = True,
    hls: bool = True,
    deinterlace: Deinterlace | None = None,
    cuts: list[float] | None = None,
    start_time: float = 0.0,
) -> tuple[Any, list[Path]]:
    """One ffmpeg-python graph that decodes ``source`` once and writes ``renditions`` (+ the poster);
    and the output paths (HLS files are written under ``workdir/hls``). Run it with ``ffmpeg.run_graph``.

    ``hls=False`` writes only MP4s (each rendition whose ``mp4`` is set), as before HLS existed (the
    benchmark's baseline). ``cuts``: a remuxed rung's segment boundaries (seconds from its first
    keyframe; ``start_time`` is the file's); the encoded rungs get their keyframes there, else every
    ``HLS_SEGMENT_SECONDS``.

    Scaling is a cascade (1080p → 720p → 360p is cheaper than three scales from the source, and the
    filter thread is the serial part of the run); the poster is split off the largest picture and
    trimmed to POSTER_AT.
    """
    media = ffmpeg.safe_input(source, demuxer=info.demuxer, **_decoder_options(info))
    picture, audio = media[str(info.stream_index)], media["a:0?"]
    cascade = sorted((r for r in renditions if not r.remux), key=lambda r: r.width * r.height, reverse=True)
    top = renditions[-1] if renditions else None
    poster_size = (top.width, top.height) if top else _scaled(info, LADDER[-1].height)
    poster_from_cascade = bool(poster and cascade and (cascade[0].width, cascade[0].height) == poster_size)
    prepared = _prepare(
        info, picture, deinterlace, (cascade[0].width, cascade[0].height) if cascade else poster_size
    )

    scaled: dict[str, Any] = {}
    poster_in = None
    current = prepared
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
        scaled[rendition.name] = parts[0]
        if i + 1 < len(cascade):
            current = parts[1]
        if i == 0 and poster_from_cascade:
            poster_in = parts[uses - 1]

    if cuts is not None:
        keyframes = ",".join(f"{max(0.0, c - start_time - 0.0005):.4f}" for c in cuts) or "0"
    else:
        keyframes = f"expr:gte(t,n_forced*{HLS_SEGMENT_SECONDS})"
    common = {"map_metadata": "-1", "map_chapters": "-1", "sn": None, "dn": None}
    audio_options: dict[str, Any] = {"c:a": "aac", "b:a": AUDIO_BITRATE}
    if info.audio_channels and info.audio_channels > 2:
        audio_options["ac"] = 2
    hls_dir = workdir / HLS_FOLDER
    if hls:
        hls_dir.mkdir(parents=True, exist_ok=True)
    outputs: list[Path] = []
    nodes = []
    for rendition in renditions:
        if not hls and not rendition.mp4:
            continue
        if rendition.remux:
            options: dict[str, Any] = {"c:v": "copy", **audio_options}
            streams = [picture, audio]
        else:
            rung = rendition.rung
            high_fps = bool(info.fps and info.fps > 30)
            maxrate = rung_maxrate_kbps(info, rung)
            options = {
                "c:v": "libx264",
                "preset": settings.VIDEO_PRESET,
                "crf": settings.VIDEO_CRF,
                "profile:v": "high",
                "level:v": rung.level_hfr if high_fps else rung.level,
                "maxrate": f"{maxrate}k",
                "bufsize": f"{maxrate * 2}k",
                **audio_options,
            }
            if hls:  # the same keyframes in every rung, and only there: aligned segments
                options.update(force_key_frames=keyframes, sc_threshold=0, g=MAX_FPS * 10)
            if info.hdr:
                options.update(color_primaries="bt709", color_trc="bt709", colorspace="bt709")
            streams = [scaled[rendition.name], audio]
        options.update(common)
        targets: list[tuple[dict[str, Any], Path]] = []
        if rendition.mp4:
            targets.append(({"f": "mp4", "movflags": "+faststart"}, workdir / rendition.filename))
        if hls:
            targets.append((_hls_options(rendition.name, hls_dir), hls_dir / f"{rendition.name}.m3u8"))
        outputs.extend(path for _, path in targets)
        if len(targets) == 1:
            muxer, path = targets[0]
            nodes.append(ffmpeg_python.output(*streams, str(path), **muxer, **options))
        else:  # one encode, two files: the tee muxer hands the same packets to both
            nodes.append(ffmpeg_python.output(*streams, _tee(targets), f="tee", **options))
    if poster:
        path = workdir / "poster.jpg"
        outputs.append(path)
        still = poster_in.trim(start=round(info.duration * POSTER_AT, 3)).setpts("PTS-STARTPTS")
        if not poster_from_cascade:
            still = still.filter("scale", *poster_size).filter("setsar", 1)
        still = still.filter("format", "yuvj420p")
        nodes.append(_still_output(still, path))
    return ffmpeg_python.merge_outputs(*nodes), outputs


def _hls_options(name: str, hls_dir: Path) -> dict[str, Any]:
    return {
        "f": "hls",
        "hls_time": HLS_SEGMENT_SECONDS,
        "hls_segment_type": "fmp4",
        "hls_playlist_type": "vod",
        "hls_flags": "independent_segments",
        "hls_fmp4_init_filename": f"{name}_init.mp4",
        "hls_segment_filename": str(hls_dir / f"{name}_%05d.m4s"),
    }


def _tee(targets: list[tuple[dict[str, Any], Path]]) -> str:
    """The tee muxer's output spec: ``[opt=value:…]path|…``. Our own scratch paths only; anything
    with a character the spec would need escaped is refused rather than escaped."""
    slaves = []
    for options, path in targets:
        values = [str(v) for v in options.values()] + [str(path)]
        if not all(_SAFE_PATH.match(v) for v in values):
            raise ProcessingError("Scratch path not usable for ffmpeg's tee muxer.", retryable=True)
        slaves.append("[" + ":".join(f"{k}={v}" for k, v in options.items()) + f"]{path}")
    return "|".join(slaves)


def _still_output(stream: Any, path: Path) -> Any:
    """One JPEG frame (quality 3 of 31), no metadata."""
    return ffmpeg_python.output(
        stream, str(path), f="image2", update=1, map_metadata="-1", **{"frames:v": 1, "q:v": 3}
    )


def write_master_playlist(
    hls_dir: Path, renditions: list[Rendition], info: VideoInfo
) -> list[dict[str, Any]]:
    """Write ``hls_dir/master.m3u8`` (RFC 8216 §4.3.4.2) naming each rung's media playlist by a
    relative URI, the MP4 fallback's rung first (players start with the first variant); return one
    entry per rung: name, width, height, playlist, bandwidth (peak segment bit/s), average_bandwidth,
    codecs, segments (EXTINF seconds)."""
    entries = []
    for rendition in renditions:
        playlist = hls_dir / f"{rendition.name}.m3u8"
        segments = _media_segments(playlist)
        if not segments:
            raise ProcessingError(f"The {rendition.name} HLS playlist came out empty.", retryable=True)
        sizes = [(hls_dir / uri).stat().st_size for _, uri in segments]
        durations = [d for d, _ in segments]
        peak = max(size * 8 / max(d, 0.5) for size, d in zip(sizes, durations, strict=True))
        average = sum(sizes) * 8 / max(sum(durations), 0.001)
        codecs = [_avc1(hls_dir / f"{rendition.name}_init.mp4")] + (["mp4a.40.2"] if info.has_audio else [])
        entries.append(
            {
                "name": rendition.name,
                "width": rendition.width,
                "height": rendition.height,
                "playlist": playlist.name,
                "bandwidth": math.ceil(peak),
                "average_bandwidth": math.ceil(average),
                "codecs": ",".join(codecs),
                "segments": [round(d, 3) for d in durations],
                "remuxed": rendition.remux,
            }
        )
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    fps = min(info.fps, MAX_FPS) if info.fps else None
    for entry, _rendition in sorted(zip(entries, renditions, strict=True), key=lambda e: not e[1].mp4):
        attributes = (
            f"BANDWIDTH={entry['bandwidth']},AVERAGE-BANDWIDTH={entry['average_bandwidth']},"
            f'RESOLUTION={entry["width"]}x{entry["height"]},CODECS="{entry["codecs"]}"'
        )
        if fps:
            attributes += f",FRAME-RATE={fps:.3f}"
        lines += [f"#EXT-X-STREAM-INF:{attributes}", entry["playlist"]]
    (hls_dir / "master.m3u8").write_text("\n".join(lines) + "\n")
    return entries


def _media_segments(playlist: Path) -> list[tuple[float, str]]:
    segments, duration = [], None
    for line in playlist.read_text().splitlines():
        line = line.strip()
        if line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:") :].split(",")[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append((duration, line))
            duration = None
    return segments


def _avc1(init: Path) -> str:
    """RFC 6381 codec string from the init segment's avcC box: avc1.PPCCLL."""
    data = init.read_bytes()
    at = data.find(b"avcC")
    if at < 0 or len(data) < at + 8:
        return "avc1.640028"
    return "avc1." + data[at + 5 : at + 8].hex()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


_RUNG_KEYS = ("name", "width", "height", "playlist", "bandwidth", "codecs", "remuxed")
_HLS_FILE_TYPES = {".m3u8": HLS_MIME, ".m4s": "video/iso.segment", ".mp4": "video/mp4"}


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

        deinterlace = None
        if info.field_order not in ("progressive",) and info.video_codec not in PROGRESSIVE_ONLY_CODECS:
            with steps.step("interlace", field_order=info.field_order) as s:
                deinterlace = detect_interlace(info, source, timeout=deadline - time.monotonic())
                s.output = {"deinterlace": deinterlace.reason if deinterlace else None}
        cuts, start_time = None, 0.0
        if renditions[-1].remux:
            with steps.step("remux_check") as s:
                cuts, start_time = self._copy_cuts(info, source, s.output)
                if cuts is None:  # its keyframes do not allow 4–6 s segments: encode that rung too
                    renditions[-1] = replace(renditions[-1], remux=False)
        hls_dir = workdir / HLS_FOLDER
        graph, outputs = transcode_graph(
            info, source, renditions, workdir, deinterlace=deinterlace, cuts=cuts, start_time=start_time
        )

        with steps.step(
            "transcode",
            renditions=[r.name for r in renditions],
            mp4=[r.name for r in renditions if r.mp4],
            remux=[r.name for r in renditions if r.remux],
            hdr_tonemap=info.hdr,
            alpha_background=ALPHA_BACKGROUND if info.alpha else None,
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
                shutil.rmtree(hls_dir, ignore_errors=True)
                raise
            except BaseException:
                shutil.rmtree(hls_dir, ignore_errors=True)  # partial segments never reach storage
                raise
            s.output.update(elapsed_s=round(run.elapsed_s, 2), peak_rss_mb=round(run.peak_rss_mb, 1))
            s.output["realtime_factor"] = round(info.duration / run.elapsed_s, 2) if run.elapsed_s else None

        poster = workdir / "poster.jpg"
        if not poster.exists() or poster.stat().st_size == 0:
            # The 10 % mark had no frame (a duration that lied); take the first frame instead.
            with steps.step("poster_fallback"):
                top = renditions[-1]
                media = ffmpeg.safe_input(source, demuxer=info.demuxer, **_decoder_options(info))
                still = _prepare(info, media[str(info.stream_index)], deinterlace, (top.width, top.height))
                still = still.filter("scale", top.width, top.height).filter("setsar", 1)
                ffmpeg.run_graph(
                    _still_output(still.filter("format", "yuvj420p"), poster),
                    timeout=deadline - time.monotonic(),
                    outputs=[poster],
                    failure_message="We could not take a poster picture from this video.",
                )

        with steps.step("hls_master") as s:
            rungs = write_master_playlist(hls_dir, renditions, info)
            s.output = {"rungs": [{k: r[k] for k in ("name", "bandwidth", "codecs")} for r in rungs]}
        hls = self._hls_variant(hls_dir, renditions, rungs)

        variants = []
        for rendition in renditions:
            if not rendition.mp4:
                continue
            path = workdir / rendition.filename
            size = path.stat().st_size
            variants.append(
                VariantFile(
                    name=rendition.name,
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
                        "sha256": _sha256(path),
                    },
                )
            )
        variants.append(hls)
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
                "deinterlaced": deinterlace.reason if deinterlace else None,
                "tone_mapped": info.hdr,
                "renditions": [
                    {
                        "name": rung["name"],
                        "width": rung["width"],
                        "height": rung["height"],
                        "bitrate": rung["average_bandwidth"],
                        "remuxed": rung["remuxed"],
                        "mp4": rendition.mp4,
                    }
                    for rung, rendition in zip(rungs, renditions, strict=True)
                ],
            },
            variants=variants,
        )

    @staticmethod
    def _copy_cuts(info: VideoInfo, source: Path, notes: dict[str, Any]) -> tuple[list[float] | None, float]:
        """The segment boundaries a stream copy of the source would get, or None (encode instead)."""
        try:
            keyframes, start = ffmpeg.probe_keyframes(
                source, demuxer=info.demuxer, stream_index=info.stream_index
            )
        except UnsupportedMedia as exc:
            notes["fallback"] = str(exc)
            return None, 0.0
        cuts = hls_cuts(keyframes, info.duration)
        notes.update(keyframes=len(keyframes), segments=None if cuts is None else len(cuts) + 1)
        if cuts is None:
            gaps = [round(b - a, 2) for a, b in zip(keyframes, keyframes[1:], strict=False)]
            notes["fallback"] = f"keyframe gaps {sorted(set(gaps))[-3:]} s do not give 4–6 s segments"
            return None, 0.0
        # The cut times are relative to the first keyframe; the encoder's clock starts at the file's start.
        return [c + (keyframes[0] if keyframes else 0.0) for c in cuts], start

    @staticmethod
    def _hls_variant(hls_dir: Path, renditions: list[Rendition], rungs: list[dict[str, Any]]) -> VariantFile:
        master = hls_dir / "master.m3u8"
        files = sorted(p for p in hls_dir.iterdir() if p.is_file() and p != master)
        companions = [VariantFile(name=p.name, path=p, mime_type=_HLS_FILE_TYPES[p.suffix]) for p in files]
        top = renditions[-1]
        return VariantFile(
            name=HLS,
            path=master,
            mime_type=HLS_MIME,
            width=top.width,
            height=top.height,
            extra={
                "sha256": _sha256(master),
                "segment_seconds": HLS_SEGMENT_SECONDS,
                "audio": "muxed" if any("mp4a" in r["codecs"] for r in rungs) else None,
                "renditions": [{k: r[k] for k in _RUNG_KEYS} for r in rungs],
                "total_bytes": master.stat().st_size + sum(c.size_bytes or 0 for c in companions),
                "files": {
                    c.path.name: {"size_bytes": c.size_bytes, "sha256": _sha256(c.path)} for c in companions
                },
            },
            files=companions,
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


def remuxable(info: VideoInfo, top: Rendition) -> bool:
    """Can the source's video itself be the top rung (a stream copy)? H.264 ≤ High, yuv420p, SDR,
    progressive, no alpha, in MP4/MOV (so it copies into MP4 and fMP4 as is), no rotation, square
    pixels, ≤ 60 fps, even sizes, the rung's size, and under the rung's bitrate cap. Its keyframes are
    checked later (``hls_cuts``)."""
    bitrate = info.picture_bitrate
    return (
        info.demuxer == "mov"
        and info.video_codec == "h264"
        and info.pix_fmt == "yuv420p"
        and info.profile in WEB_H264_PROFILES
        and not info.hdr
        and info.color_primaries in (None, "unknown", "bt709", "bt470bg", "smpte170m")
        and info.field_order in (None, "progressive")
        and not info.alpha
        and info.rotation == 0
        and info.square_pixels
        and (info.fps or 0) <= MAX_FPS
        and min(info.width, info.height) == min(top.width, top.height)
        and info.width % 2 == 0
        and info.height % 2 == 0
        and (bitrate is None or bitrate <= top.rung.maxrate_kbps * 1000)
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
