import dramatiq
from django.conf import settings

from moderation.review import review_post_revision

AI_MAX_RETRIES = settings.AI_MAX_RETRIES


@dramatiq.actor(
    actor_name="review_post",
    queue_name="moderation",
    max_retries=AI_MAX_RETRIES,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=10 * 60_000,
)
def review_post(post_id: str, revision: int) -> None:
    review_post_revision(post_id=post_id, revision=revision, max_retries=AI_MAX_RETRIES)
