"""Moderation's Dramatiq actors: thin, they take ids and call ``moderation.review``. Services send them
by name (``config.queueing.send_on_commit("review_post", post_id, revision)``) and never import this
module; ``ModerationConfig.ready`` imports it so every process declares the actors."""

import dramatiq
from django.conf import settings

from moderation.review import review_post_revision, transcript_rescore

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
    """AI review of one revision of a post; retried with backoff, then left for a human."""
    review_post_revision(post_id=post_id, revision=revision, max_retries=AI_MAX_RETRIES)


@dramatiq.actor(actor_name="watch_livestream", queue_name="moderation", max_retries=0, time_limit=120_000)
def watch_livestream(stream_id: str) -> None:
    """One AI look at a live stream (``moderation.livewatch.look``), then the next one, delayed, while
    it is live. A lost link is re-sent by the ingest (``media.live.services.livestream_watch_overdue``)."""
    from moderation.livewatch import look

    delay = look(stream_id)
    if delay is not None:
        watch_livestream.send_with_options(args=(stream_id,), delay=int(delay * 1000))


@dramatiq.actor(
    actor_name="rescore_transcript",
    queue_name="moderation",
    max_retries=AI_MAX_RETRIES,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=5 * 60_000,
)
def rescore_transcript(post_id: str, media_id: str, revision: int, edit: int | None = None) -> None:
    """Score the held edit ``edit`` of a published post's transcript (issue 17); retried, then a human
    decides. ``edit`` None (a message from before edits were held) scores the transcript's held edit."""
    transcript_rescore(
        post_id=post_id, media_id=media_id, revision=revision, edit=edit, max_retries=AI_MAX_RETRIES
    )
