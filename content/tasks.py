"""Content's Dramatiq actors: thin, they take ids. Sent by name (``config.queueing``); ``ContentConfig
.ready`` imports this module so that every process declares them."""

import dramatiq

from content import notifications, webhooks


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
