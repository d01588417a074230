"""The AI provider contract (DESIGN.md §6): content in, per-category scores in [0, 1] out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProviderError(Exception):
    """The provider could not give a verdict (down, slow, garbage). The review actor retries it and,
    when retries are spent, leaves the post in ``pending_review`` for a human (fail closed).

    ``retryable=False`` says trying again cannot help (e.g. an animation too large to screen within
    its budget): the post goes to a human at once instead of after the retries."""

    def __init__(self, message: str = "", *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class TranscriptInput:
    """What was said in one medium (issue 17): its caption cues ``(start_s, end_s, text)``."""

    media_id: str
    cues: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(text for _, _, text in self.cues)


@dataclass
class ReviewInput:
    text: str = ""  # title + body + link, joined by newlines
    # Local copies of processed image variants, or of the original of an animated image: providers
    # sample frames from any animated image across its whole length (frames.visual_sources).
    image_paths: list[Path] = field(default_factory=list)
    video_paths: list[Path] = field(default_factory=list)  # local renditions; providers sample frames
    poster_paths: list[Path] = field(default_factory=list)  # video posters, scored like images
    hints: dict[str, Any] = field(default_factory=dict)  # e.g. {"post_id": ...} for logging
    # Speech in the post's audio and video, scored with the text classifier (cue by cue where the
    # provider can, so the review queue can highlight the passages).
    transcripts: list[TranscriptInput] = field(default_factory=list)

    @property
    def transcript_text(self) -> str:
        return "\n".join(t.text for t in self.transcripts if t.text)


@dataclass
class ProviderResult:
    provider: str
    model: str
    scores: dict[str, float]  # category -> [0, 1]
    overall: float  # max over categories unless the provider says otherwise
    labels: list[str] = field(default_factory=list)  # human-readable findings, most severe first
    version: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # JSON-safe detail kept on the AiReview row


class Provider:
    name: str = ""

    def review(self, item: ReviewInput) -> ProviderResult:
        raise NotImplementedError
