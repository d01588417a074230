"""Content's Dramatiq actors: thin, they take ids and call a service. Services send them by name
(``config.queueing``) and never import this module; ``ContentConfig.ready`` imports it so every process
declares the actors (and the embedded worker consumes their queues)."""

import dramatiq

from content import notifications, webhooks
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


@dramatiq.actor(
    actor_name="send_notification_email",
    queue_name="notifications",
    max_retries=5,
    min_backoff=5_000,
    max_backoff=10 * 60_000,
    time_limit=60_000,
)
def send_notification_email(notification_id: int) -> None:
    """Email one decision notification (``EMAIL_URL``); SMTP errors are retried with backoff."""
    notifications.send_email(notification_id)


@dramatiq.actor(actor_name="deliver_webhook", queue_name="webhooks", max_retries=0, time_limit=60_000)
def deliver_webhook(delivery_id: str) -> None:
    """One attempt at one webhook delivery; ``content.webhooks.deliver`` schedules its own retries
    (backoff for 24 h), so Dramatiq's are off."""
    webhooks.deliver(delivery_id)
