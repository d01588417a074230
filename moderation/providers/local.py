"""The ``local`` provider: NudeNet's bundled ONNX detector on images, posters and sampled video
frames, and alt-profanity-check on the text. Both models ship inside their PyPI packages, so nothing
is downloaded at run time; they are loaded once per worker process and shared by its threads."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from .base import Provider, ProviderError, ProviderResult, ReviewInput
from .frames import SampledFrame, probe_duration, sample_video_frames, visual_sources

__all__ = ["LocalProvider", "SampledFrame", "models", "probe_duration", "sample_video_frames"]

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


def transcript_cue_scores(item: ReviewInput) -> list[dict[str, Any]]:
    """The profanity model's probability for each transcript cue: [{media_id, index, start, end,
    score}] in cue order. A cue is short, so one abusive sentence is never diluted by a long clean
    talk (the classifier is bag-of-words)."""
    rows: list[dict[str, Any]] = []
    texts: list[str] = []
    for transcript in item.transcripts:
        for index, (start, end, text) in enumerate(transcript.cues):
            if text.strip():
                rows.append(
                    {
                        "media_id": transcript.media_id,
                        "index": index,
                        "start": start,
                        "end": end,
                        "score": 0.0,
                    }
                )
                texts.append(text)
    if not texts:
        return []
    try:
        probabilities = models().predict_prob(texts)
    except Exception as exc:
        raise ProviderError(f"The profanity model failed on the transcript: {exc}") from exc
    for row, probability in zip(rows, probabilities, strict=True):
        row["score"] = round(float(probability), 4)
    return rows


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
        with tempfile.TemporaryDirectory(prefix="postflow-ai-") as tmp:
            t0 = time.perf_counter()
            visual = visual_sources(item, Path(tmp))
            sources = visual.pictures
            timings["frames_ms"] = (time.perf_counter() - t0) * 1000

            t0 = time.perf_counter()
            findings, raw_detections = _detect(sources)
            timings["detect_ms"] = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        profanity = _profanity(item.text)
        timings["text_ms"] = (time.perf_counter() - t0) * 1000
        if profanity > 0:
            findings.append(_Finding("profanity", "", profanity, profanity, "text"))
        t0 = time.perf_counter()
        cue_scores = transcript_cue_scores(item)
        timings["transcript_ms"] = (time.perf_counter() - t0) * 1000
        for cue in cue_scores:
            if cue["score"] > 0:
                source = f"transcript {cue['start']:.1f}s"
                findings.append(_Finding("profanity", "", cue["score"], cue["score"], source))

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
                "frames": visual.frames,
                "animations": visual.animations,
                "profanity": round(profanity, 4),
                # Every cue's score, so the review queue can highlight the flagged passages.
                "transcript_cues": cue_scores,
                "weights": {name: weight for name, (_, weight) in NUDENET_WEIGHTS.items()},
                "timings_ms": {name: round(ms, 1) for name, ms in timings.items()},
            },
        )
