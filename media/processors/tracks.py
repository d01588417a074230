"""What a file's tracks make it: video (a picture track), audio (sound only), or neither.

The kind follows the tracks, not the container (issue 11): a WebM from a browser's MediaRecorder
voice note, an audio-only MP4/M4A, Ogg, Matroska or ASF is audio wherever it is attached. An
attached picture (cover art: ``disposition.attached_pic``) is not a picture track.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ffmpeg
from .base import UnsupportedMedia

NO_VIDEO_TRACK = "This file has no video track; post it as audio."


@dataclass(frozen=True)
class Tracks:
    """Counts of a probed file's streams. ``kind`` is "video", "audio" or None (nothing playable)."""

    demuxer: str
    video: int
    audio: int

    @property
    def kind(self) -> str | None:
        if self.video:
            return "video"
        return "audio" if self.audio else None


def tracks_of_probe(probe: dict[str, Any], demuxer: str) -> Tracks:
    """The ``Tracks`` of an ffprobe result (``ffmpeg.ffprobe``)."""
    streams = probe.get("streams", [])
    video = sum(
        1
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    )
    audio = sum(1 for s in streams if s.get("codec_type") == "audio")
    return Tracks(demuxer=demuxer, video=video, audio=audio)


def probe_tracks(source: Path, *, demuxer: str) -> Tracks:
    """Probe ``source`` with the safe ffprobe, only ``demuxer`` allowed to open it (the one the
    sniffer named). Reads the container's headers, not the whole file. Raises ``UnsupportedMedia``
    for a file that demuxer cannot read, and for one with neither a picture nor a sound track."""
    if demuxer not in ffmpeg.ALL_DEMUXERS:
        raise UnsupportedMedia("This file's container is not one we accept.")
    probe = ffmpeg.ffprobe(source, demuxers=[demuxer], kind="media")
    tracks = tracks_of_probe(probe, ffmpeg.demuxer_of(probe, [demuxer]))
    if tracks.kind is None:
        raise UnsupportedMedia("This file has neither a picture nor a sound track we can play.")
    return tracks
