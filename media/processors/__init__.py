"""Processors by media kind. Kinds without one (thumbnail, transcript) are never queued: the sweep
skips them."""

from __future__ import annotations

from importlib import import_module

from media.processors.base import Processor

PROCESSOR_PATHS = {
    "image": "media.processors.image.ImageProcessor",
    "video": "media.processors.video.VideoProcessor",
    "audio": "media.processors.audio.AudioProcessor",
    # A livestream's recording is a video like any other: ladder + HLS (DESIGN.md §13).
    "livestream_recording": "media.processors.video.VideoProcessor",
}


def has_processor(kind: str) -> bool:
    return kind in PROCESSOR_PATHS


def get_processor(kind: str) -> Processor:
    module, _, name = PROCESSOR_PATHS[kind].rpartition(".")
    return getattr(import_module(module), name)()
