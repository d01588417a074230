"""The AI watching a live stream (DESIGN.md §13): every ``LIVESTREAM_AI_INTERVAL_SECONDS`` the
``watch_livestream`` actor takes the first frame of the newest segment of the stream's live HLS (from
storage, as any viewer gets it), scores it with the configured provider (``moderation.providers``:
the same ``Provider.review`` as posts' pictures), and when the score is at or above
``ai_revoke_threshold`` quarantines the post and ends the stream. The chain re-sends itself with a
delay while the stream is live; the ingest re-sends it when a link was lost (``watch_overdue``)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from config.errors import InvalidTransition
from media import scratch, storage
from media.live.models import LiveStatus, LiveStream
from media.live.providers.local import PLAYLIST
from media.live.services import ai_watches_streams, livestream_end
from media.processors import ffmpeg
from media.processors.base import ProcessingError
from moderation import policy
from moderation.providers import ProviderError, ReviewInput, get_provider
from moderation.services import ai_live_frame_flagged

logger = logging.getLogger("postflow.moderation.livewatch")


def newest_segment(folder: str) -> str | None:
    """The storage key of the newest segment the stored live playlist lists, or None."""
    key = f"{folder}/{PLAYLIST}"
    try:
        text = b"".join(storage.iter_range(key, 0, storage.stat(key).size)).decode("utf-8", "replace")
    except (FileNotFoundError, OSError):
        return None
    names = [line.strip() for line in text.splitlines() if line.strip().endswith(".ts")]
    return f"{folder}/{names[-1]}" if names else None


def grab_frame(segment: Path, out: Path) -> Path:
    """The first picture of a live MPEG-TS segment as a JPEG (ffmpeg through the safe runner)."""
    graph = ffmpeg.safe_input(segment, demuxer="mpegts").video.output(
        str(out), vframes=1, format="image2", vcodec="mjpeg", **{"q:v": 3}
    )
    ffmpeg.run_graph(graph, timeout=20, outputs=[out], failure_message="No picture in the live segment.")
    if not out.exists():
        raise ProviderError("No picture in the live segment.")
    return out


def look(stream_id: str) -> float | None:
    """One look at a live stream. Returns the seconds until the next look, or None to stop watching
    (not live any more, not in ``ai_prescreen``, flagged and ended, or a duplicate chain)."""
    interval = settings.LIVESTREAM_AI_INTERVAL_SECONDS
    stream = LiveStream.objects.filter(pk=stream_id).select_related("post").first()
    if stream is None or stream.status != LiveStatus.LIVE or not ai_watches_streams():
        return None
    if stream.ai_checked_at and timezone.now() - stream.ai_checked_at < timedelta(seconds=interval / 2):
        return None  # another chain looked a moment ago: this one stops
    started = time.monotonic()
    key = newest_segment(stream.hls_folder) if stream.hls_folder else None
    if key is None:
        return min(1.0, interval)  # nothing stored yet
    workdir = scratch.make_scratch_folder("livewatch")
    try:
        segment = storage.download_to(key, workdir / "segment.ts")
        frame = grab_frame(segment, workdir / "frame.jpg")
        result = get_provider().review(
            ReviewInput(
                image_paths=[frame], hints={"post_id": str(stream.post_id), "livestream": str(stream.pk)}
            )
        )
    except (ProviderError, ProcessingError, FileNotFoundError) as exc:
        logger.warning("livestream %s: no verdict this time (%s)", stream_id, exc)
        return max(interval - (time.monotonic() - started), 0.5)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    LiveStream.objects.filter(pk=stream.pk).update(
        ai_checked_at=timezone.now(),
        ai_frames_checked=F("ai_frames_checked") + 1,
        ai_last_score=result.overall,
    )
    if policy.band_for(result.overall) == policy.Band.FLAG:
        logger.info("livestream %s: frame scored %.2f; quarantining and ending", stream_id, result.overall)
        ai_live_frame_flagged(
            post_id=stream.post_id,
            provider=result.provider,
            model=result.model,
            scores=result.scores,
            overall=result.overall,
            labels=result.labels,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            raw={"segment": key.rsplit("/", 1)[-1], "livestream_id": str(stream.pk)},
        )
        with contextlib.suppress(InvalidTransition):  # ended meanwhile
            livestream_end(post_id=stream.post_id, reason="the AI flagged a frame")
        return None
    return max(interval - (time.monotonic() - started), 0.5)
