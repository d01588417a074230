"""The actor that breaks a hidden post's outstanding media URLs (``media.revocation``). Its own small
queue, ``media.urls``, so a backlog of image or video work never delays a revocation; the default
worker pool consumes it (Makefile ``prod-up``, docker-compose.yml, README)."""

import dramatiq

from media.revocation import media_revoke_post_urls as revoke


@dramatiq.actor(
    actor_name="media_revoke_post_urls",
    queue_name="media.urls",
    max_retries=10,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=600_000,
)
def media_revoke_post_urls(post_id: str) -> None:
    """Rotate the keys of every medium of ``post_id`` that had bearer URLs issued; idempotent."""
    revoke(post_id=post_id)
