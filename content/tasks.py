"""Content's Dramatiq actors: thin, they take ids and call a service. Services send them by name
(``config.queueing``) and never import this module; ``ContentConfig.ready`` imports it so every process
declares the actors (and the embedded worker consumes their queues)."""

import dramatiq

from content.linkpreview import link_preview_build


@dramatiq.actor(
    actor_name="link_preview_fetch",
    queue_name="links",
    max_retries=2,
    min_backoff=5_000,
    max_backoff=60_000,
    time_limit=60_000,
)
def link_preview_fetch(post_id: str, link_url: str, revision: int | None = None) -> None:
    """Build a link post's preview card (content.linkpreview), or that of revision number
    ``revision`` (an edit that changed the link); a stale message does nothing."""
    link_preview_build(post_id=post_id, link_url=link_url, revision=revision)
