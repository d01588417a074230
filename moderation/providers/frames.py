"""What the visual providers look at: still images as they are, and frames sampled from videos and
from animated images (GIF, APNG, animated WebP, AVIF sequences).

Every provider (local, hive, and any other) builds its list of pictures with ``visual_sources``, so
they all see the same frames. An animated image is screened like a video (issue 9, row 1): its first
frame may last 100 ms and be harmless while the rest plays for seconds in the public ``mp4``.

Animations are decoded from the **original** with Pillow, not from the ``mp4`` variant: the original
holds every frame with its exact timing, the ``mp4`` is derived from it (so whatever the public can
play is one of the original's frames), but ffmpeg resamples it to a constant frame rate, which can
drop or merge short frames, ffmpeg 5.1 (Debian 12) cannot decode animated WebP at all, and with
processing bypassed there is no ``mp4``. Videos go through ffmpeg, only via the one safe runner in
``media.processors.ffmpeg``.
"""

from __future__ import annotations

import heapq
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from PIL import Image

from media.processors import ffmpeg
from media.processors.base import ProcessingError
from media.processors.image import ANIMATED_FORMATS, DECODERS, open_image

from .base import ProviderError, ReviewInput

# Frame sampling from videos. Measured on 2 cores with 8 frames from 1080p H.264 (keyframe every
# 8.3 s): a 30 s clip takes 2.4 s with the fps filter (decodes every frame, 107 MB) and 2.5 s with an
# accurate `-ss` seek per frame (decodes one GOP per frame, ~350 MB); a 120 s clip 5.4 s vs 2.6 s. So
# short clips use the fps filter and longer ones seek.
SEEK_SAMPLING_MIN_SECONDS = 40.0
FRAME_MAX_SIDE = 640  # the detector looks at 320×320; Hive is fine with 640
FRAME_JPEG_QUALITY = 90
# Scene-change scoring of animation frames: the mean absolute difference of tiny RGB thumbnails,
# in [0, 1] (the measure behind ffmpeg's ``scene`` score, without its motion compensation).
SIGNATURE_SIDE = 64
# Two frames closer than this are the same picture for sampling (a flicker A/B/A/B is two pictures).
DUPLICATE_DISTANCE = 0.005
# Browsers show GIF frames with a delay of 10 ms or less for 100 ms (and so does our mp4 encoder).
MIN_FRAME_MS = 10
DEFAULT_FRAME_MS = 100


@dataclass(frozen=True)
class SampledFrame:
    """One extracted frame as a JPEG: when it shows (seconds from the start) and, for an animation,
    its frame number and why it was picked ("time", "scene" or "last")."""

    path: Path
    time_seconds: float
    index: int | None = None
    reason: str = "time"


@dataclass
class VisualSources:
    """Pictures to score, as (source label, JPEG/PNG/... path), and how many frames each video or
    animation gave (for the review's raw detail)."""

    pictures: list[tuple[str, Path]] = field(default_factory=list)
    frames: dict[str, int] = field(default_factory=dict)
    animations: dict[str, dict] = field(default_factory=dict)


def _timeout_error(path: Path, what: str, *, retryable: bool = True) -> ProviderError:
    return ProviderError(
        f"Sampling frames from {path.name} took longer than its time budget ({what}).", retryable=retryable
    )


# --- Videos (ffmpeg, through the safe runner) ---------------------------------------------------------


def probe_duration(path: Path) -> float | None:
    """Duration of the first video stream (or the container) in seconds; None when unknown.
    ProviderError when ffprobe cannot read it as a video in an allowed container."""
    try:
        probe = ffmpeg.ffprobe(Path(path), demuxers=ffmpeg.VIDEO_DEMUXERS, kind="video")
    except ProcessingError as exc:
        raise ProviderError(f"ffprobe could not read {Path(path).name}: {exc}") from exc
    streams = [s for s in probe.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        raise ProviderError(f"{Path(path).name} has no video stream to sample frames from.")
    return ffmpeg.parse_duration(probe, streams[0])


def sample_video_frames(
    path: Path, *, count: int, workdir: Path, method: str | None = None
) -> list[SampledFrame]:
    """Extract ``count`` frames spread evenly over the video (the midpoints of ``count`` equal slices)
    as JPEGs in ``workdir``. ``method`` forces "fps" (one ffmpeg run that decodes everything) or
    "seek" (one short run per frame); by default clips of ``SEEK_SAMPLING_MIN_SECONDS`` or more seek.
    The whole sampling has ``settings.AI_FRAME_TIMEOUT_SECONDS``. ProviderError when it fails."""
    path = Path(path)
    if count < 1:
        return []
    deadline = time.monotonic() + float(settings.AI_FRAME_TIMEOUT_SECONDS)
    try:
        probe = ffmpeg.ffprobe(path, demuxers=ffmpeg.VIDEO_DEMUXERS, kind="video")
        demuxer = ffmpeg.demuxer_of(probe, ffmpeg.VIDEO_DEMUXERS)
    except ProcessingError as exc:
        raise ProviderError(f"ffprobe could not read {path.name}: {exc}") from exc
    streams = [s for s in probe.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        raise ProviderError(f"{path.name} has no video stream to sample frames from.")
    duration = ffmpeg.parse_duration(probe, streams[0])
    width, height = int(streams[0].get("width") or 0), int(streams[0].get("height") or 0)
    # A box of this side keeps the aspect ratio (rotated clips too) and never upscales.
    side = min(FRAME_MAX_SIDE, max(width, height)) if width and height else FRAME_MAX_SIDE

    def frames_of(video: Any, *, fps: str | None = None) -> Any:
        if fps:
            video = video.filter("fps", fps)
        return video.filter("scale", side, side, force_original_aspect_ratio="decrease")

    def jpegs(video: Any, pattern: str, n: int) -> Any:
        return video.output(str(workdir / pattern), **{"frames:v": n, "q:v": 3})

    graphs: list[Any] = []  # one ffmpeg-python graph per ffmpeg run, all on the first video stream
    if duration is None:
        # No duration (a live-style stream): one frame a second from the start is the best we can do.
        times = [float(i) for i in range(count)]
        video = ffmpeg.safe_input(path, demuxer=demuxer)["v:0"]
        graphs.append(jpegs(frames_of(video, fps="1"), "frame_%03d.jpg", count))
    else:
        step = duration / count
        times = [step * (i + 0.5) for i in range(count)]
        method = method or ("seek" if duration >= SEEK_SAMPLING_MIN_SECONDS else "fps")
        if method == "fps":
            # The fps filter emits, for output slot k, the last frame before (k + 0.5) slices: the midpoints.
            video = ffmpeg.safe_input(path, demuxer=demuxer)["v:0"]
            graphs.append(jpegs(frames_of(video, fps=f"{count}/{duration:.6f}"), "frame_%03d.jpg", count))
        elif method == "seek":
            for i, t in enumerate(times):
                video = ffmpeg.safe_input(path, demuxer=demuxer, ss=f"{t:.3f}", threads=2)["v:0"]
                graphs.append(jpegs(frames_of(video), f"frame_{i + 1:03d}.jpg", 1))
        else:
            raise ValueError(f"Unknown frame sampling method {method!r}.")
    for graph in graphs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(path, f"{settings.AI_FRAME_TIMEOUT_SECONDS}s")
        try:
            ffmpeg.run_graph(
                graph,
                timeout=remaining,
                failure_message=f"ffmpeg could not sample frames from {path.name}",
            )
        except ffmpeg.FFmpegFailed as exc:
            tail = " | ".join(exc.log.strip().splitlines()[-3:]) or "no error output"
            raise ProviderError(f"ffmpeg could not sample frames from {path.name}: {tail}") from exc
        except ProcessingError as exc:
            raise ProviderError(f"ffmpeg could not sample frames from {path.name}: {exc}") from exc
    frames = [
        SampledFrame(path=workdir / f"frame_{i + 1:03d}.jpg", time_seconds=round(t, 3))
        for i, t in enumerate(times)
        if (workdir / f"frame_{i + 1:03d}.jpg").is_file()
    ]
    if not frames:
        raise ProviderError(f"ffmpeg produced no frames from {path.name}.")
    return frames


# --- Animated images (Pillow, on the original) ----------------------------------------------------------


def is_animation(path: Path) -> bool:
    """True when ``path`` is an image with more than one frame in a format that animates (GIF, APNG,
    WebP, AVIF); MPO and HEIF extra pictures are stills. Unreadable files are not animations here:
    the scorer that opens them next fails closed."""
    try:
        with Image.open(path, formats=DECODERS) as img:
            return img.format in ANIMATED_FORMATS and bool(getattr(img, "is_animated", False))
    except Exception:
        return False


def _flatten(frame: Image.Image) -> Image.Image:
    """The frame as RGB over white, as the public ``mp4`` shows it."""
    if frame.mode == "RGB":
        return frame.copy()
    rgba = frame.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _signature(rgb: Image.Image) -> np.ndarray:
    tiny = rgb.resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BOX)
    return np.asarray(tiny, dtype=np.float32) / 255.0


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _small(rgb: Image.Image) -> Image.Image:
    small = rgb.copy()
    small.thumbnail((FRAME_MAX_SIDE, FRAME_MAX_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return small


def _or_setting(value, name: str):
    return getattr(settings, name) if value is None else value


@dataclass
class _Kept:
    index: int
    start_ms: float
    signature: np.ndarray
    image: Image.Image
    reason: str
    score: float = 0.0


def _is_new(signature: np.ndarray, index: int, kept: list[_Kept]) -> bool:
    """Not a frame already kept, nor (nearly) the same picture as one."""
    return all(k.index != index and _distance(signature, k.signature) > DUPLICATE_DISTANCE for k in kept)


def _frames(img: Image.Image, path: Path, deadline: float) -> Iterator[tuple[int, float, float, Image.Image]]:
    """(index, start ms, shown ms, RGB frame) for every frame, composed as a viewer sees it."""
    start = 0.0
    index = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        while True:
            if time.monotonic() > deadline:
                # Not retried (issue 9, row 5: overruns are not retried): a moderator looks at it.
                raise _timeout_error(path, f"stopped at frame {index}", retryable=False)
            try:
                img.seek(index)
            except EOFError:
                return
            img.load()
            shown = float(img.info.get("duration") or 0)
            shown = shown if shown > MIN_FRAME_MS else DEFAULT_FRAME_MS
            yield index, start, shown, _flatten(img)
            start += shown
            index += 1


@dataclass
class AnimationSample:
    """The frames picked from one animation and what the sampler saw on the way."""

    frames: list[SampledFrame]
    frame_count: int
    duration_seconds: float
    scene_changes: int  # frames that differed from the last scene by at least the threshold

    def summary(self) -> dict:
        return {
            "frames_total": self.frame_count,
            "duration_s": round(self.duration_seconds, 3),
            "scene_changes": self.scene_changes,
            "sampled": {r: sum(f.reason == r for f in self.frames) for r in ("time", "scene", "last")},
        }


def sample_animation_frames(
    path: Path,
    *,
    workdir: Path,
    time_frames: int | None = None,
    scene_frames: int | None = None,
    scene_threshold: float | None = None,
    timeout: float | None = None,
    max_decoded_pixels: int | None = None,
) -> AnimationSample:
    """Sample an animated image across its whole length, in one decoding pass, as JPEGs in ``workdir``.

    * **By time:** the frame on show at evenly spaced instants 0, w, 2w … covering the whole animation
      (between ``time_frames``/2 and ``time_frames`` of them; the grid doubles its step as the
      animation turns out longer, so no frame is kept in memory for long).
    * **By scene change:** every frame whose picture differs from the last scene's by at least
      ``scene_threshold`` (mean absolute difference of 64×64 thumbnails, 0–1) is a candidate, however
      short it is shown; the ``scene_frames`` most different distinct ones are kept.
    * The last frame always; near-identical pictures once.

    Defaults come from ``settings.AI_ANIMATION_*``. Cost is bounded before decoding (canvas pixels ×
    frames ≤ ``max_decoded_pixels``) and while decoding (``timeout`` seconds); both overruns raise a
    non-retryable ProviderError, so the post waits for a human (fail closed). Unreadable files raise
    ProviderError too.
    """
    path = Path(path)
    time_frames = max(1, int(_or_setting(time_frames, "AI_ANIMATION_TIME_FRAMES")))
    scene_frames = max(0, int(_or_setting(scene_frames, "AI_ANIMATION_SCENE_FRAMES")))
    threshold = float(_or_setting(scene_threshold, "AI_SCENE_THRESHOLD"))
    timeout = float(_or_setting(timeout, "AI_ANIMATION_TIMEOUT_SECONDS"))
    budget = int(_or_setting(max_decoded_pixels, "AI_ANIMATION_MAX_DECODED_PIXELS"))
    deadline = time.monotonic() + timeout
    try:
        img = open_image(path, max_pixels=int(settings.IMAGE_MAX_PIXELS))
    except ProcessingError as exc:
        raise ProviderError(f"Cannot read {path.name} as an animation: {exc}") from exc
    with img:
        try:
            frame_count = int(getattr(img, "n_frames", 1))
        except Exception as exc:
            raise ProviderError(f"Cannot read the frames of {path.name}: {exc}") from exc
        decoded = img.width * img.height * frame_count
        if decoded > budget:
            raise ProviderError(
                f"{path.name} is {img.width}x{img.height} with {frame_count} frames "
                f"({decoded / 1e6:.0f} megapixels to decode; the limit is {budget / 1e6:.0f}): "
                "too much to screen automatically, a moderator must look at it.",
                retryable=False,
            )
        try:
            sample = _sample(img, path, workdir, time_frames, scene_frames, threshold, deadline)
        except ProviderError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            message = f"A frame of {path.name} is larger than allowed: {exc}"
            raise ProviderError(message, retryable=False) from exc
        except Exception as exc:  # a damaged frame must not pass the animation (fail closed)
            raise ProviderError(f"Cannot decode the frames of {path.name}: {exc}") from exc
    return sample


def _sample(
    img: Image.Image,
    path: Path,
    workdir: Path,
    time_frames: int,
    scene_frames: int,
    threshold: float,
    deadline: float,
) -> AnimationSample:
    step_ms = 1.0  # grid step; points j * step_ms for j < time_frames
    grid: dict[int, _Kept] = {}
    scenes: list[tuple[float, int, _Kept]] = []  # min-heap on score: the most different survive
    scene_changes = 0
    reference: np.ndarray | None = None
    last: tuple[int, float, Image.Image, np.ndarray] | None = None
    end_ms = 0.0
    for index, start, shown, rgb in _frames(img, path, deadline):
        end_ms = start + shown
        signature = _signature(rgb)
        kept: _Kept | None = None
        while end_ms > time_frames * step_ms:  # the animation is longer than the grid: coarsen it
            step_ms *= 2
            grid = {j // 2: frame for j, frame in grid.items() if j % 2 == 0}
        first_point = math.ceil(start / step_ms)
        for j in range(first_point, time_frames):
            if j * step_ms >= end_ms:
                break
            kept = kept or _Kept(index, start, signature, _small(rgb), "time")
            grid[j] = kept
        if reference is None:
            reference = signature
        else:
            score = _distance(signature, reference)
            if score >= threshold:
                scene_changes += 1
                reference = signature
                # Deduplicated against other scenes only: a time sample may be dropped later.
                if scene_frames and _is_new(signature, index, [entry[2] for entry in scenes]):
                    image = kept.image if kept else _small(rgb)
                    candidate = _Kept(index, start, signature, image, "scene", score)
                    entry = (score, index, candidate)
                    if len(scenes) < scene_frames:
                        heapq.heappush(scenes, entry)
                    elif score > scenes[0][0]:
                        heapq.heapreplace(scenes, entry)
        last = (index, start, rgb, signature)
    if last is None:
        raise ProviderError(f"{path.name} has no frames.")

    chosen: list[_Kept] = []
    time_kept = sorted({id(k): k for k in grid.values()}.values(), key=lambda k: k.index)
    for candidate in time_kept + sorted((entry[2] for entry in scenes), key=lambda k: k.index):
        if _is_new(candidate.signature, candidate.index, chosen):
            chosen.append(candidate)
    index, start, rgb, signature = last
    if _is_new(signature, index, chosen):
        chosen.append(_Kept(index, start, signature, _small(rgb), "last"))

    frames: list[SampledFrame] = []
    for kept in sorted(chosen, key=lambda k: k.index):
        out = workdir / f"frame_{kept.index:05d}.jpg"
        kept.image.save(out, "JPEG", quality=FRAME_JPEG_QUALITY)
        frames.append(SampledFrame(out, round(kept.start_ms / 1000, 3), kept.index, kept.reason))
    return AnimationSample(
        frames=frames, frame_count=last[0] + 1, duration_seconds=end_ms / 1000, scene_changes=scene_changes
    )


# --- Everything a provider looks at -------------------------------------------------------------------------


def visual_sources(item: ReviewInput, workdir: Path) -> VisualSources:
    """The pictures of ``item`` to score, frames extracted into ``workdir``: each still image and
    poster as is; each animated image (whatever list it came in) and each video as sampled frames.
    Every sampled frame is scored and the highest score wins, as for any picture."""
    found = VisualSources()
    for label, paths in (("image", item.image_paths), ("poster", item.poster_paths)):
        for i, raw_path in enumerate(paths, 1):
            path = Path(raw_path)
            source = f"{label} {i}"
            if not is_animation(path):
                found.pictures.append((source, path))
                continue
            frames_dir = workdir / f"{label}_{i}"
            frames_dir.mkdir()
            sample = sample_animation_frames(path, workdir=frames_dir)
            found.frames[source] = len(sample.frames)
            found.animations[source] = sample.summary()
            found.pictures += [
                (f"{source} frame {f.index} @{f.time_seconds:g}s", f.path) for f in sample.frames
            ]
    count = int(settings.AI_VIDEO_FRAMES)
    for i, video in enumerate(item.video_paths, 1):
        frames_dir = workdir / f"video_{i}"
        frames_dir.mkdir()
        frames = sample_video_frames(Path(video), count=count, workdir=frames_dir)
        found.frames[f"video {i}"] = len(frames)
        found.pictures += [(f"video {i} @{f.time_seconds:g}s", f.path) for f in frames]
    return found
