import dramatiq
from django.conf import settings

from media import pipeline, processing


@dramatiq.actor(
    actor_name=processing.actor_name("video"),
    queue_name="media.video",
    max_retries=max(settings.MEDIA_MAX_ATTEMPTS - 1, 0),
    min_backoff=2_000,
    max_backoff=120_000,
    # Longer than the processor's own ffmpeg budget, which ends in a clear "too long" error.
    time_limit=int((settings.VIDEO_MAX_DURATION_SECONDS * settings.VIDEO_TIMEOUT_FACTOR + 600) * 1000),
)
def process_video_media(media_id: str) -> None:
    pipeline.run(media_id, kind="video")


@dramatiq.actor(
    actor_name=processing.actor_name("livestream_recording"),
    queue_name="media.video",
    max_retries=max(settings.MEDIA_MAX_ATTEMPTS - 1, 0),
    min_backoff=2_000,
    max_backoff=120_000,
    time_limit=int((settings.VIDEO_MAX_DURATION_SECONDS * settings.VIDEO_TIMEOUT_FACTOR + 600) * 1000),
)
def process_livestream_recording_media(media_id: str) -> None:
    """A livestream's recording, on the video queue and through the video processor."""
    pipeline.run(media_id, kind="livestream_recording")
