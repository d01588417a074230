"""Processors by media kind. Kinds without one (thumbnail) are never queued: the sweep skips them.
``transcript`` media are made by the speech step (queue ``media.speech``); a livestream's recording is a
video."""

from __future__ import annotations

from importlib import import_module

from media.processors.base import Processor

PROCESSOR_PATHS = {
    "image": "media.processors.image.ImageProcessor",
    "video": "media.processors.video.VideoProcessor",
    "audio": "media.processors.audio.AudioProcessor",
    # A livestream's recording is a video like any other: ladder + HLS (DESIGN.md §13).
    "livestream_recording": "media.processors.video.VideoProcessor",
    "transcript": "media.processors.speech.SpeechProcessor",
}


def has_processor(kind: str) -> bool:
    return kind in PROCESSOR_PATHS


def get_processor(kind: str) -> Processor:
    module, _, name = PROCESSOR_PATHS[kind].rpartition(".")
    return getattr(import_module(module), name)()
