"""Telling creators what happened (DESIGN.md §10): notifications, their emails, and the events.

The transition functions (``content.services``, ``moderation.services``, ``media.processing``) call
exactly one function here, inside their transaction:

- ``post_transitioned(post, notification=…, reason=…)`` after a Post status change: a
  ``post.updated`` event, plus a notification when the change is news for the creator;
- ``media_transitioned(media)`` after a Media status change: a ``media.updated`` event, plus a
  ``media_failed`` notification when it failed for good;
- ``notify(…)`` directly for what is not a post change (appeal decisions, account actions).

Everything leaves after commit: the event log append, the email (actor ``send_notification_email``
on queue ``notifications``, so a slow mail server never blocks a transition) and the webhooks.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from config.queueing import send_on_commit
from content import events
from content.models import CreatorPreferences, Notification, NotificationType, Post

logger = logging.getLogger("postflow.notifications")

# Decisions are emailed (unless the user turned email off); pipeline outcomes are not.
EMAILED_TYPES = frozenset(
    {
        NotificationType.POST_QUARANTINED,
        NotificationType.POST_REJECTED,
        NotificationType.POST_APPROVED,
        NotificationType.POST_MARKED_SENSITIVE,
        NotificationType.APPEAL_DECIDED,
        NotificationType.ACCOUNT_WARNED,
        NotificationType.ACCOUNT_LIMITED,
        NotificationType.ACCOUNT_SUSPENDED,
        NotificationType.ACCOUNT_RESTORED,
    }
)

SUBJECTS = {
    NotificationType.MEDIA_FAILED: "A file of your post could not be processed",
    NotificationType.POST_PUBLISHED: "Your post is published",
    NotificationType.POST_HELD: "Your post is waiting for a moderator",
    NotificationType.POST_QUARANTINED: "Your post was hidden",
    NotificationType.POST_REJECTED: "Your post was rejected",
    NotificationType.POST_APPROVED: "Your post was approved",
    NotificationType.POST_MARKED_SENSITIVE: "Your post was marked sensitive",
    NotificationType.APPEAL_DECIDED: "Your appeal was decided",
    NotificationType.ACCOUNT_WARNED: "A warning about your account",
    NotificationType.ACCOUNT_LIMITED: "Your account was limited",
    NotificationType.ACCOUNT_SUSPENDED: "Your account was suspended",
    NotificationType.ACCOUNT_RESTORED: "Your account was restored",
}


def notification_data(n: Notification) -> dict[str, Any]:
    """The JSON of a notification (API list, ``notification`` event, webhook payload)."""
    return {
        "id": n.pk,
        "type": n.type,
        "post_id": str(n.post_id) if n.post_id else None,
        "appeal_id": n.appeal_id,
        "reason": n.reason,
        "data": n.data,
        "read": n.read_at is not None,
        "created_at": n.created_at.isoformat() if n.created_at else None,
    }


def notify(
    *,
    user: AbstractBaseUser | int,
    type: str,
    post: Post | None = None,
    appeal: Any = None,
    reason: str = "",
    data: dict[str, Any] | None = None,
) -> Notification:
    """Write a notification for ``user`` in the current transaction; after commit, publish it as a
    ``notification`` event and, for decisions (``EMAILED_TYPES``) of a user who did not turn email
    off, queue its email. ``type`` is a ``NotificationType``; ``reason`` is the moderator's reason
    shown to the creator. Raises ``ValueError`` for an unknown type."""
    if type not in NotificationType.values:
        raise ValueError(f"unknown notification type {type!r}")
    user_id = user if isinstance(user, int) else user.pk
    n = Notification.objects.create(
        user_id=user_id,
        type=type,
        post=post,
        appeal_id=getattr(appeal, "pk", appeal),
        reason=reason or "",
        data=data or {},
    )
    events.publish(user_id, "notification", notification_data(n))
    if type in EMAILED_TYPES and wants_email(user_id):
        send_on_commit("send_notification_email", n.pk)
    return n


def post_transitioned(
    post: Post, *, notification: str | None = None, reason: str = "", data: dict[str, Any] | None = None
) -> None:
    """The one call a Post transition makes after saving: a ``post.updated`` event for the author,
    and ``notification`` (a ``NotificationType``) with the moderator's ``reason`` when given."""
    events.publish(post.author_id, "post.updated", events.post_data(post))
    if notification:
        notify(user=post.author_id, type=notification, post=post, reason=reason, data=data)


def media_transitioned(media, *, progress: float | None = None) -> None:
    """The one call a Media status change makes: a ``media.updated`` event for the owner, and a
    ``media_failed`` notification when the media failed for good."""
    events.publish(media.owner_id, "media.updated", events.media_data(media, progress))
    if media.processing_status == "failed":
        notify(
            user=media.owner_id,
            type=NotificationType.MEDIA_FAILED,
            post=media.post if media.post_id else None,
            reason=media.processing_error,
            data={"media_id": str(media.pk)},
        )


def media_progress(media, percent: float | None) -> None:
    """A progress tick of running media (no webhooks: they get status changes only). Called by the
    worker's progress writer, already throttled (``EVENTS_PROGRESS_INTERVAL_SECONDS``)."""
    data = events.media_data(media, percent)
    data["processing_status"] = "processing"
    events.append_now(media.owner_id, "media.updated", data, webhooks=False)


# --- reading and preferences ------------------------------------------------------------------------


def wants_email(user_id: int) -> bool:
    """False when the user turned decision emails off (``CreatorPreferences.email_notifications``)."""
    return (
        CreatorPreferences.objects.filter(user_id=user_id)
        .values_list("email_notifications", flat=True)
        .first()
        is not False
    )


def preferences_update(*, user: AbstractBaseUser, email_notifications: bool) -> CreatorPreferences:
    """Set the user's email switch (created on first use)."""
    prefs, _ = CreatorPreferences.objects.update_or_create(
        user=user, defaults={"email_notifications": email_notifications}
    )
    return prefs


@transaction.atomic
def mark_read(*, user: AbstractBaseUser, up_to: int) -> int:
    """Mark the user's notifications with id ≤ ``up_to`` read; returns how many changed."""
    return Notification.objects.filter(user=user, pk__lte=up_to, read_at__isnull=True).update(
        read_at=timezone.now()
    )


def send_email(notification_id: int) -> bool:
    """Email one notification through Django's email backend (``EMAIL_URL``), once. Returns False
    when there is nothing to send (gone, already sent, no address, the user opted out meanwhile).
    SMTP errors propagate so that the actor retries."""
    from django.core.mail import send_mail

    n = Notification.objects.select_related("user", "post").filter(pk=notification_id).first()
    if n is None or n.emailed_at or not n.user.email or not wants_email(n.user_id):
        return False
    subject = SUBJECTS.get(n.type, "Postflow")
    lines = [f"Hello {n.user.get_username()},", "", subject + "."]
    if n.post_id:
        title = n.post.title or f"your {n.post.type} post"
        lines.append(f"Post: {title} ({n.post_id})")
    if n.reason:
        lines += ["", f"Reason: {n.reason}"]
    if n.type in (NotificationType.POST_REJECTED, NotificationType.POST_QUARANTINED):
        lines += [
            "",
            f"You may appeal within {settings.APPEAL_WINDOW_DAYS} days: "
            f"POST /api/v1/content/posts/{n.post_id}/appeal",
        ]
    lines += ["", "You can turn these emails off: PATCH /api/v1/content/notifications/preferences"]
    send_mail(f"[Postflow] {subject}", "\n".join(lines), settings.DEFAULT_FROM_EMAIL, [n.user.email])
    Notification.objects.filter(pk=n.pk).update(emailed_at=timezone.now())
    return True
