"""The ``local`` provider: NudeNet's bundled ONNX detector on images, posters and sampled video
frames, and alt-profanity-check on the text. Both models ship inside their PyPI packages, so nothing
is downloaded at run time; they are loaded once per worker process and shared by its threads."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from media.processors import ffmpeg as ffmpeg_safety

from .base import Provider, ProviderError, ProviderResult, ReviewInput

logger = logging.getLogger(__name__)

# NudeNet detection class -> (our category, weight). A detection scores confidence × weight and a
# category scores the max over its detections. Weights encode how far a finding alone should move a
# post against the default thresholds (review 0.3, revoke 0.7):
#   1.0  exposed genitals/anus: a confident hit quarantines on its own.
#   0.9 / 0.8  exposed female breast / buttocks: quarantines at confidence ≥ 0.78 / ≥ 0.88; the detector
#        is less sure of these (nursing, art, beachwear), so weaker hits go to a human.
#   ≤ 0.5  covered or non-sexual body parts (`sexual`, i.e. suggestive): never quarantine alone; lingerie
#        or a covered crotch at high confidence reaches the human review band, swimwear and bare
#        feet, armpits, belly or a male chest stay below it.
# FACE_FEMALE / FACE_MALE are not findings and are left out.
NUDENET_WEIGHTS: dict[str, tuple[str, float]] = {
    "FEMALE_GENITALIA_EXPOSED": ("nudity_explicit", 1.0),
    "MALE_GENITALIA_EXPOSED": ("nudity_explicit", 1.0),
    "ANUS_EXPOSED": ("nudity_explicit", 1.0),
    "FEMALE_BREAST_EXPOSED": ("nudity_explicit", 0.9),
    "BUTTOCKS_EXPOSED": ("nudity_explicit", 0.8),
    "FEMALE_GENITALIA_COVERED": ("sexual", 0.5),
    "ANUS_COVERED": ("sexual", 0.4),
    "FEMALE_BREAST_COVERED": ("sexual", 0.3),
    "BUTTOCKS_COVERED": ("sexual", 0.3),
    "BELLY_EXPOSED": ("sexual", 0.15),
    "MALE_BREAST_EXPOSED": ("sexual", 0.1),
    "ARMPITS_EXPOSED": ("sexual", 0.1),
    "FEET_EXPOSED": ("sexual", 0.1),
    "BELLY_COVERED": ("sexual", 0.05),
    "ARMPITS_COVERED": ("sexual", 0.05),
    "FEET_COVERED": ("sexual", 0.05),
}
# alt-profanity-check's probability is used as is (weight 1.0).
CATEGORIES = ("nudity_explicit", "sexual", "profanity")
MODEL_NAME = "nudenet-320n+profanity-check"

DETECT_BATCH_SIZE = 8  # images per ONNX run; 8 × 3×320×320 floats is ~10 MB
MAX_LABELS = 20
MAX_RAW_DETECTIONS = 50

# Frame sampling. Both strategies run ONE ffmpeg process. Measured on 2 cores with 8 frames from 1080p
# H.264 (keyframe every 8.3 s): a 30 s clip takes 2.4 s with the fps filter (decodes every frame, 107 MB)
# and 2.5 s with one accurate `-ss` seek per frame (decodes one GOP per frame, ~350 MB); a 120 s clip
# 5.4 s vs 2.6 s. So short clips use the fps filter and longer ones seek.
SEEK_SAMPLING_MIN_SECONDS = 40.0
FRAME_MAX_SIDE = 640  # the detector looks at 320×320; Hive is fine with 640
# Only the demuxers our renditions (and common uploads) need; mov covers mp4/m4v/3gp, matroska covers webm.
# The one allow-list of containers ffmpeg may open (media/processors/ffmpeg.py).
VIDEO_DEMUXERS = ",".join(sorted(ffmpeg_safety.VIDEO_DEMUXERS))
_TEXT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


# --- Models: loaded lazily, once per process, under a lock -------------------------------------------


@dataclass
class _Models:
    detector: Any  # nudenet.NudeDetector
    predict_prob: Any  # profanity_check.predict_prob
    version: str
    load_ms: float
    pid: int


_models: _Models | None = None
_models_lock = threading.Lock()


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def models() -> _Models:
    """The process's detector and profanity model, loaded on first use. A forked child reloads: an ONNX
    session's thread pool does not survive fork."""
    global _models
    current = _models
    if current is not None and current.pid == os.getpid():
        return current
    with _models_lock:
        if _models is not None and _models.pid == os.getpid():
            return _models
        started = time.perf_counter()
        try:
            from nudenet import NudeDetector
            from profanity_check import predict_prob

            detector = NudeDetector()  # the 320n.onnx bundled in the package
            predict_prob(["warm up"])  # loads the vectoriser and classifier from the package
        except Exception as exc:  # a broken install must not pass posts
            raise ProviderError(f"The local AI models could not be loaded: {exc}") from exc
        model_version = "; ".join(
            f"{name} {_package_version(name)}" for name in ("nudenet", "alt-profanity-check", "onnxruntime")
        )
        _models = _Models(
            detector=detector,
            predict_prob=predict_prob,
            version=model_version,
            load_ms=(time.perf_counter() - started) * 1000,
            pid=os.getpid(),
        )
        logger.info("local AI models loaded in %.0f ms (%s)", _models.load_ms, model_version)
        return _models


# --- Video frames -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampledFrame:
    path: Path
    time_seconds: float


def _ffprobe_binary() -> str:
    return getattr(settings, "FFPROBE_BINARY", "ffprobe")


def _ffmpeg_timeout() -> float:
    return float(getattr(settings, "AI_FRAME_TIMEOUT_SECONDS", 120.0))


def probe_duration(path: Path) -> float | None:
    """Duration of the first video stream (or the container) in seconds; None when unknown."""
    command = [
        _ffprobe_binary(),
        "-v",
        "error",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        VIDEO_DEMUXERS,
        "-select_streams",
        "v:0",
        "-show_entries",
        "format=duration:stream=duration,codec_type",
        "-of",
        "json",
        str(path),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, timeout=_ffmpeg_timeout(), check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(f"ffprobe could not read {path.name}: {exc}") from exc
    if completed.returncode != 0:
        raise ProviderError(f"ffprobe could not read {path.name}: {_stderr_tail(completed.stderr)}")
    try:
        info = json.loads(completed.stdout or b"{}")
    except ValueError as exc:
        raise ProviderError(f"ffprobe gave unreadable output for {path.name}") from exc
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        raise ProviderError(f"{path.name} has no video stream to sample frames from.")
    for candidate in (streams[0].get("duration"), info.get("format", {}).get("duration")):
        try:
            duration = float(candidate)
        except (TypeError, ValueError):
            continue
        if duration > 0:
            return duration
    return None


def _stderr_tail(stderr: bytes, lines: int = 3) -> str:
    text = stderr.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "no error output"


def sample_video_frames(
    path: Path, *, count: int, workdir: Path, method: str | None = None
) -> list[SampledFrame]:
    """Extract ``count`` frames spread evenly over the video (the midpoints of ``count`` equal slices)
    as JPEGs in ``workdir``, with one ffmpeg run. ``method`` forces "fps" or "seek" (benchmarks)."""
    path = Path(path)
    if count < 1:
        return []
    duration = probe_duration(path)
    scale = (
        f"scale='min({FRAME_MAX_SIDE},iw)':'min({FRAME_MAX_SIDE},ih)':force_original_aspect_ratio=decrease"
    )
    base = [getattr(settings, "FFMPEG_BINARY", "ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin"]
    safe_input = ["-protocol_whitelist", "file", "-format_whitelist", VIDEO_DEMUXERS]
    if duration is None:
        # No duration (a live-style stream): one frame a second from the start is the best we can do.
        times = [float(i) for i in range(count)]
        command = [*base, *safe_input, "-i", str(path), "-an", "-sn", "-dn", "-vf", f"fps=1,{scale}"]
        command += ["-frames:v", str(count), "-q:v", "3", str(workdir / "frame_%03d.jpg")]
    else:
        step = duration / count
        times = [step * (i + 0.5) for i in range(count)]
        method = method or ("seek" if duration >= SEEK_SAMPLING_MIN_SECONDS else "fps")
        if method == "fps":
            # The fps filter emits, for output slot k, the last frame before (k + 0.5) slices: the midpoints.
            command = [*base, *safe_input, "-i", str(path), "-an", "-sn", "-dn"]
            command += ["-vf", f"fps={count}/{duration:.6f},{scale}", "-frames:v", str(count)]
            command += ["-q:v", "3", str(workdir / "frame_%03d.jpg")]
        elif method == "seek":
            command = list(base)
            for t in times:
                command += ["-threads", "2", "-ss", f"{t:.3f}", *safe_input, "-i", str(path)]
            for i in range(count):
                command += ["-map", f"{i}:v:0", "-vf", scale, "-frames:v", "1", "-q:v", "3"]
                command += [str(workdir / f"frame_{i + 1:03d}.jpg")]
        else:
            raise ValueError(f"Unknown frame sampling method {method!r}.")
    try:
        completed = subprocess.run(command, capture_output=True, timeout=_ffmpeg_timeout(), check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(f"ffmpeg could not sample frames from {path.name}: {exc}") from exc
    if completed.returncode != 0:
        raise ProviderError(
            f"ffmpeg could not sample frames from {path.name}: {_stderr_tail(completed.stderr)}"
        )
    frames = [
        SampledFrame(path=workdir / f"frame_{i + 1:03d}.jpg", time_seconds=round(t, 3))
        for i, t in enumerate(times)
        if (workdir / f"frame_{i + 1:03d}.jpg").is_file()
    ]
    if not frames:
        raise ProviderError(f"ffmpeg produced no frames from {path.name}.")
    return frames


# --- Scoring -----------------------------------------------------------------------------------------


@dataclass
class _Finding:
    category: str
    detail: str  # class name, or "" for text
    confidence: float
    score: float  # confidence × weight
    source: str

    def label(self) -> str:
        detail = f"{self.detail} " if self.detail else ""
        return f"{self.category}: {detail}{self.confidence:.2f} ({self.source})"


def _read_bgr(path: Path) -> np.ndarray:
    """Decode an image the way NudeNet expects (BGR, 3 channels). OpenCV first; Pillow for what it
    cannot read (GIF, HEIC)."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ProviderError(f"Cannot read {path.name}: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is not None:
        return image
    try:
        from PIL import Image

        with Image.open(path) as pil:
            pil.seek(0)
            rgb = np.asarray(pil.convert("RGB"))
    except Exception as exc:
        raise ProviderError(f"Cannot decode {path.name} as an image: {exc}") from exc
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _detect(sources: list[tuple[str, Path]]) -> tuple[list[_Finding], list[dict[str, Any]]]:
    detector = models().detector
    findings: list[_Finding] = []
    raw: list[dict[str, Any]] = []
    for start in range(0, len(sources), DETECT_BATCH_SIZE):
        chunk = sources[start : start + DETECT_BATCH_SIZE]
        arrays = [_read_bgr(path) for _, path in chunk]
        try:
            results = detector.detect_batch(arrays, batch_size=DETECT_BATCH_SIZE)
        except Exception as exc:
            raise ProviderError(f"The NudeNet detector failed: {exc}") from exc
        for (source, _), detections in zip(chunk, results, strict=True):
            for detection in detections:
                mapped = NUDENET_WEIGHTS.get(detection["class"])
                if mapped is None:
                    continue
                category, weight = mapped
                confidence = float(detection["score"])
                findings.append(
                    _Finding(category, detection["class"], confidence, confidence * weight, source)
                )
                raw.append(
                    {
                        "source": source,
                        "class": detection["class"],
                        "category": category,
                        "confidence": round(confidence, 4),
                        "score": round(confidence * weight, 4),
                    }
                )
    return findings, raw


def _text_chunks(text: str) -> list[str]:
    """The whole text plus each line and sentence: the classifier is bag-of-words, so one profane
    sentence would be diluted by a long clean body."""
    chunks = [part.strip() for part in _TEXT_SPLIT.split(text)]
    return [text.strip(), *(c for c in chunks if c)]


def _profanity(text: str) -> float:
    if not text or not text.strip():
        return 0.0
    try:
        probabilities = models().predict_prob(_text_chunks(text))
    except Exception as exc:
        raise ProviderError(f"The profanity model failed: {exc}") from exc
    return float(max(probabilities))


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


class LocalProvider(Provider):
    name = "local"

    def warm(self) -> None:
        """Load the models now (e.g. when a worker process starts) instead of on the first review."""
        models()

    def review(self, item: ReviewInput) -> ProviderResult:
        started = time.perf_counter()
        loaded = models()
        timings: dict[str, float] = {}
        sources: list[tuple[str, Path]] = [
            (f"image {i}", Path(p)) for i, p in enumerate(item.image_paths, 1)
        ] + [(f"poster {i}", Path(p)) for i, p in enumerate(item.poster_paths, 1)]
        frame_counts: dict[str, int] = {}

        with tempfile.TemporaryDirectory(prefix="postflow-ai-") as tmp:
            count = int(getattr(settings, "AI_VIDEO_FRAMES", 8))
            t0 = time.perf_counter()
            for i, video in enumerate(item.video_paths, 1):
                workdir = Path(tmp) / f"video_{i}"
                workdir.mkdir()
                frames = sample_video_frames(Path(video), count=count, workdir=workdir)
                frame_counts[f"video {i}"] = len(frames)
                sources += [(f"video {i} @{f.time_seconds:g}s", f.path) for f in frames]
            timings["frames_ms"] = (time.perf_counter() - t0) * 1000

            t0 = time.perf_counter()
            findings, raw_detections = _detect(sources)
            timings["detect_ms"] = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        profanity = _profanity(item.text)
        timings["text_ms"] = (time.perf_counter() - t0) * 1000
        if profanity > 0:
            findings.append(_Finding("profanity", "", profanity, profanity, "text"))

        scores = dict.fromkeys(CATEGORIES, 0.0)
        for finding in findings:
            scores[finding.category] = max(scores[finding.category], _clamp(finding.score))
        scores = {category: round(score, 4) for category, score in scores.items()}

        # One label per (category, class, source), strongest first; near-zero findings are noise.
        best: dict[tuple[str, str, str], _Finding] = {}
        for finding in findings:
            key = (finding.category, finding.detail, finding.source)
            if finding.score >= 0.01 and (key not in best or finding.score > best[key].score):
                best[key] = finding
        ranked = sorted(best.values(), key=lambda f: f.score, reverse=True)
        timings["total_ms"] = (time.perf_counter() - started) * 1000

        return ProviderResult(
            provider=self.name,
            model=MODEL_NAME,
            version=loaded.version,
            scores=scores,
            overall=max(scores.values()),
            labels=[f.label() for f in ranked[:MAX_LABELS]],
            raw={
                "detections": sorted(raw_detections, key=lambda d: d["score"], reverse=True)[
                    :MAX_RAW_DETECTIONS
                ],
                "images_scored": len(sources),
                "frames": frame_counts,
                "profanity": round(profanity, 4),
                "weights": {name: weight for name, (_, weight) in NUDENET_WEIGHTS.items()},
                "timings_ms": {name: round(ms, 1) for name, ms in timings.items()},
            },
        )
