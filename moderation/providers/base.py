"""The AI provider contract (DESIGN.md §6): content in, per-category scores in [0, 1] out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProviderError(Exception):
    """The provider could not give a verdict (down, slow, garbage). The review actor retries it and,
    when retries are spent, leaves the post in ``pending_review`` for a human (fail closed)."""


@dataclass
class ReviewInput:
    text: str = ""  # title + body + link, joined by newlines
    image_paths: list[Path] = field(default_factory=list)  # local copies of processed image variants
    video_paths: list[Path] = field(default_factory=list)  # local renditions; providers sample frames
    poster_paths: list[Path] = field(default_factory=list)  # video posters, scored like images
    hints: dict[str, Any] = field(default_factory=dict)  # e.g. {"post_id": ...} for logging


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
