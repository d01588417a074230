from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class PostType(models.TextChoices):
    TEXT = "text", "Text"
    LINK = "link", "Link"
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"
    AUDIO = "audio", "Audio"
    POLL = "poll", "Poll"
    LIVESTREAM = "livestream", "Livestream"


class PostStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PROCESSING = "processing", "Processing"
    PENDING_REVIEW = "pending_review", "Pending review"
    PUBLISHED = "published", "Published"
    QUARANTINED = "quarantined", "Quarantined"
    REJECTED = "rejected", "Rejected"


class ModerationState(models.TextChoices):
    UNREVIEWED = "unreviewed", "Unreviewed"
    UNDER_REVIEW = "under_review", "Under review"
    CLEAN = "clean", "Clean (AI)"
    FLAGGED = "flagged", "Flagged"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class PostQuerySet(models.QuerySet):
    def alive(self) -> PostQuerySet:
        return self.filter(deleted_at__isnull=True)

    def published(self) -> PostQuerySet:
        return self.alive().filter(status=PostStatus.PUBLISHED)


class Post(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="posts")
    type = models.CharField(max_length=16, choices=PostType.choices)
    status = models.CharField(max_length=16, choices=PostStatus.choices, default=PostStatus.DRAFT)
    moderation_state = models.CharField(
        max_length=16, choices=ModerationState.choices, default=ModerationState.UNREVIEWED
    )
    title = models.CharField(max_length=300, blank=True, default="")
    body = models.TextField(blank=True, default="", max_length=40_000)
    link_url = models.URLField(max_length=2000, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    publish_requested = models.BooleanField(default=False)
    blocked_media = models.BooleanField(
        default=False,
        help_text="An attached file is on the moderators' blocklist: publishing sends it to quarantine.",
    )
    # Bumped by every edit and every publish: an AI verdict computed for an older revision is stale.
    revision = models.PositiveIntegerField(default=1)
    rejection_reason = models.TextField(blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True, help_text="When it entered review.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = PostQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["-published_at", "-id"], name="post_feed_idx", condition=Q(status="published")
            ),
            models.Index(fields=["author", "status"], name="post_author_status_idx"),
            models.Index(
                fields=["submitted_at"],
                name="post_review_queue_idx",
                condition=Q(status__in=["pending_review", "quarantined"]),
            ),
        ]
        permissions = [("review_post", "Can approve, reject and quarantine posts")]

    def __str__(self) -> str:
        return f"{self.type} post {self.id} ({self.status})"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class Poll(models.Model):
    post = models.OneToOneField(Post, on_delete=models.CASCADE, related_name="poll")
    question = models.CharField(max_length=300)
    multiple_choice = models.BooleanField(default=False)
    total_voters = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return self.question


class PollOption(models.Model):
    poll = models.ForeignKey(Poll, on_delete=models.CASCADE, related_name="options")
    text = models.CharField(max_length=200)
    position = models.PositiveSmallIntegerField()
    votes = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["poll", "position"], name="poll_option_position_uniq")]

    def __str__(self) -> str:
        return self.text


class PollVote(models.Model):
    poll = models.ForeignKey(Poll, on_delete=models.CASCADE, related_name="votes")
    option = models.ForeignKey(PollOption, on_delete=models.CASCADE, related_name="vote_rows")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="poll_votes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["option", "user"], name="poll_vote_once_per_option")]
        indexes = [models.Index(fields=["poll", "user"], name="poll_vote_user_idx")]

    def __str__(self) -> str:
        return f"vote by {self.user_id} for option {self.option_id}"


class ReportReason(models.TextChoices):
    SPAM = "spam", "Spam"
    NUDITY = "nudity", "Nudity or sexual content"
    VIOLENCE = "violence", "Violence"
    HARASSMENT = "harassment", "Harassment or bullying"
    HATE = "hate", "Hate speech"
    ILLEGAL = "illegal", "Illegal content"
    OTHER = "other", "Other"


class Report(models.Model):
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports")
    reason = models.CharField(max_length=16, choices=ReportReason.choices)
    detail = models.TextField(blank=True, default="", max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["post", "reporter"], name="report_once_per_user")]

    def __str__(self) -> str:
        return f"{self.reason} report on {self.post_id}"


# --- telling creators (DESIGN.md §10) ----------------------------------------------------------------


# What the event log and webhooks carry (content.events).
EVENT_TYPES = ("media.updated", "post.updated", "notification")


class NotificationType(models.TextChoices):
    MEDIA_FAILED = "media_failed", "Media failed processing"
    POST_PUBLISHED = "post_published", "Post published"
    POST_HELD = "post_held", "Post held for a human"
    POST_QUARANTINED = "post_quarantined", "Post quarantined"
    POST_REJECTED = "post_rejected", "Post rejected"
    POST_APPROVED = "post_approved", "Post approved"
    POST_MARKED_SENSITIVE = "post_marked_sensitive", "Post marked sensitive"
    APPEAL_DECIDED = "appeal_decided", "Appeal decided"
    ACCOUNT_WARNED = "account_warned", "Account warned"
    ACCOUNT_LIMITED = "account_limited", "Account limited"
    ACCOUNT_SUSPENDED = "account_suspended", "Account suspended"
    ACCOUNT_RESTORED = "account_restored", "Account restored"


class Notification(models.Model):
    """Something that happened to a creator's post, media, appeal or account. Written only by
    ``content.notifications.notify`` (called from the transition functions)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    type = models.CharField(max_length=32, choices=NotificationType.choices)
    post = models.ForeignKey(Post, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    # moderation.Appeal's id (content's models never import moderation's).
    appeal_id = models.BigIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True, default="", help_text="The moderator's reason, for decisions.")
    data = models.JSONField(default=dict, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-id"], name="notification_user_idx"),
            models.Index(
                fields=["user", "-id"], name="notification_unread_idx", condition=Q(read_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} for {self.user_id}"


class CreatorPreferences(models.Model):
    """Per-user switches (``GET/PATCH content/notifications/preferences``). A missing row means the
    defaults."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    email_notifications = models.BooleanField(
        default=True, help_text="Email moderation decisions, appeal answers and account actions."
    )

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"


class Webhook(models.Model):
    """A creator's endpoint for their own events. The signing secret is stored encrypted with a key
    derived from SECRET_KEY (``content.webhooks``); it is shown once, at creation, and never again."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    secret_encrypted = models.TextField(editable=False)
    is_active = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"webhook {self.id} → {self.url}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (gave up)"


class WebhookDelivery(models.Model):
    """One event for one webhook: its exact body (signed the same on every attempt) and the log of
    its attempts."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=40)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["webhook", "-created_at"], name="delivery_webhook_idx")]

    def __str__(self) -> str:
        return f"delivery {self.id} ({self.status})"
