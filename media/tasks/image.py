import dramatiq
from django.conf import settings

from media import pipeline, processing


@dramatiq.actor(
    actor_name=processing.actor_name("image"),
    queue_name="media.image",
    max_retries=max(settings.MEDIA_MAX_ATTEMPTS - 1, 0),
    min_backoff=2_000,
    max_backoff=120_000,
    time_limit=300000,
)
def process_image_media(media_id: str) -> None:
    pipeline.run(media_id, kind="image")
