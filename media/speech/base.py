"""The speech provider contract (issue 17): what a provider is given and what it returns. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_RATE = 16_000  # Hz; what every provider is given (mono, signed 16-bit little-endian)


class SpeechError(Exception):
    """Transcription failed. ``retryable`` is False when trying again cannot help (a missing model,
    an unsupported language); the message is shown to operators and in the media's error."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class SpeechUnavailable(SpeechError):
    """The configured provider cannot run here (package or model files missing)."""


@dataclass(frozen=True)
class Word:
    start: float  # seconds from the start of the file
    end: float
    text: str
    confidence: float  # [0, 1]


@dataclass(frozen=True)
class Segment:
    """One caption cue: ``start``/``end`` in seconds, the words said, mean confidence in [0, 1]."""

    start: float
    end: float
    text: str
    confidence: float

    def as_tuple(self) -> tuple[float, float, str, float]:
        return (self.start, self.end, self.text, self.confidence)


@dataclass
class Transcript:
    """What a provider heard. ``language`` is a BCP 47 tag (``en``); ``segments`` are in time order
    and never overlap; ``words`` when the provider gives word timings (None otherwise)."""

    text: str
    language: str
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] | None = None
    provider: str = ""
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_speech(self) -> bool:
        return any(s.text.strip() for s in self.segments)


class SpeechProvider:
    """The interface: ``transcribe(path, *, language)`` with ``path`` a 16 kHz mono PCM WAV file.
    Raises ``SpeechError`` (or ``SpeechUnavailable``)."""

    name = ""
    model = ""

    def transcribe(self, path: Path, *, language: str) -> Transcript:
        raise NotImplementedError
