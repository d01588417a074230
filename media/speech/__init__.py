"""Speech to text (issue 17): a provider interface, pure like ``media.processors`` (files in,
dataclasses out, no ORM, no storage). ``get_speech_provider()`` returns the provider named by
``settings.SPEECH_PROVIDER``:

- ``pocketsphinx`` (default): CMU PocketSphinx with the US English model its PyPI wheel ships
  (``pocketsphinx.get_model_path()``), so it works offline on a fresh machine from packages alone.
- ``faster-whisper``: higher quality, optional (not installed by default; imported lazily), reading a
  CTranslate2 Whisper model the operator puts at ``SPEECH_MODEL_PATH``. Never downloads anything.
- ``off``: no transcripts are made.

Every provider takes a 16 kHz mono 16-bit PCM WAV file (``media.processors.speech`` decodes any
audio or video to that with the safe ffmpeg runner) and returns a ``Transcript``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import (
    SAMPLE_RATE,
    Segment,
    SpeechError,
    SpeechProvider,
    SpeechUnavailable,
    Transcript,
    Word,
)


def _pocketsphinx() -> SpeechProvider:
    from .sphinx import PocketsphinxProvider

    return PocketsphinxProvider()


def _faster_whisper() -> SpeechProvider:
    from .whisper import FasterWhisperProvider

    return FasterWhisperProvider(model_path=settings.SPEECH_MODEL_PATH)


PROVIDERS: dict[str, Callable[[], SpeechProvider]] = {
    "pocketsphinx": _pocketsphinx,
    "faster-whisper": _faster_whisper,
}
OFF = "off"

_instances: dict[str, SpeechProvider] = {}
_lock = threading.Lock()


def provider_name(value: str | None = None) -> str:
    """The normalised ``SPEECH_PROVIDER`` (or ``value``); ``off`` when transcripts are disabled.
    Raises ``ImproperlyConfigured`` for an unknown name."""
    name = (settings.SPEECH_PROVIDER if value is None else value or "").strip().lower() or OFF
    if name != OFF and name not in PROVIDERS:
        raise ImproperlyConfigured(
            f"Unknown SPEECH_PROVIDER {name!r}; use one of: {', '.join(PROVIDERS)}, or {OFF}."
        )
    return name


def enabled() -> bool:
    """Whether transcripts are made at all (``SPEECH_PROVIDER`` is not ``off``)."""
    return provider_name() != OFF


def get_speech_provider(name: str | None = None) -> SpeechProvider:
    """The provider called ``name`` (default ``settings.SPEECH_PROVIDER``), one instance per process so
    models load once per worker. Raises ``SpeechUnavailable`` when speech is ``off``."""
    key = provider_name(name)
    if key == OFF:
        raise SpeechUnavailable("Transcription is switched off (SPEECH_PROVIDER=off).")
    provider = _instances.get(key)
    if provider is None:
        with _lock:
            provider = _instances.get(key) or PROVIDERS[key]()
            _instances[key] = provider
    return provider


__all__ = [
    "SAMPLE_RATE",
    "Segment",
    "SpeechError",
    "SpeechProvider",
    "SpeechUnavailable",
    "Transcript",
    "Word",
    "enabled",
    "get_speech_provider",
    "provider_name",
]
