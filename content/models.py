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
    SCHEDULED = "scheduled", "Scheduled"
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
    # Shared with issue 13's other half (c13b): the same names and types on both branches.
    sensitive = models.BooleanField(default=False)
    spoiler_text = models.CharField(max_length=500, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    publish_requested = models.BooleanField(default=False)
    blocked_media = models.BooleanField(
        default=False,
        help_text="An attached file is on the moderators' blocklist: publishing sends it to quarantine.",
    )
    # Bumped by every edit and every publish: an AI verdict computed for an older revision is stale.
    # A submission (publish, schedule, edit after publish) records its value as PostRevision.number,
    # and AiReview.post_revision names the same number.
    revision = models.PositiveIntegerField(default=1)
    # The columns above (title … spoiler_text) always hold what the public sees: the content of
    # ``public_revision`` once the post has one. A newer submission waits in ``pending_revision``.
    public_revision = models.ForeignKey(
        "content.PostRevision", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    pending_revision = models.ForeignKey(
        "content.PostRevision",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The submitted revision waiting for the prescreen or a human (pending or held).",
    )
    edited_at = models.DateTimeField(null=True, blank=True, help_text="When an edit last went public.")
    scheduled_at = models.DateTimeField(null=True, blank=True, help_text="When a scheduled post goes public.")
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
            models.Index(fields=["scheduled_at"], name="post_scheduled_idx", condition=Q(status="scheduled")),
        ]
        permissions = [("review_post", "Can approve, reject and quarantine posts")]

    def __str__(self) -> str:
        return f"{self.type} post {self.id} ({self.status})"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class RevisionStatus(models.TextChoices):
    PENDING = "pending", "Pending (prescreen or media processing)"
    CLEARED = "cleared", "Cleared (public, or was)"
    HELD = "held", "Held for a human"
    REJECTED = "rejected", "Rejected"
    SUPERSEDED = "superseded", "Superseded"


REVISION_OPEN = (RevisionStatus.PENDING, RevisionStatus.HELD)


class PostRevision(models.Model):
    """One submitted version of a post's editable content (DESIGN.md §9 "Edits after publish").

    Made by every submission: the first publish (or schedule) and every edit of a published post. The
    post shows the public the last cleared one (``Post.public_revision``); a newer one waits in
    ``Post.pending_revision`` and never reaches the public before it is cleared. ``number`` is the
    post's ``revision`` counter when it was submitted, which AI reviews carry.
    """

    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=RevisionStatus.choices, default=RevisionStatus.PENDING)
    title = models.CharField(max_length=300, blank=True, default="")
    body = models.TextField(blank=True, default="", max_length=40_000)
    link_url = models.URLField(max_length=2000, blank=True, default="")
    sensitive = models.BooleanField(default=False)
    spoiler_text = models.CharField(max_length=500, blank=True, default="")
    # A link post's card for this revision when the revision has one of its own (its link_url differs
    # from the public one, or the card of the first publish arrived late): {"status": "fetching"}
    # while the ``links`` worker builds it (the revision waits), then {"status": "done", "card":
    # {url, title, description, site_name, image_media_id} or None, "error": {code, detail} or None}.
    # Null: the revision shows the public card. The image is an item of the revision, so the
    # prescreen sees it; the post's ``metadata.link_preview`` takes the card when the revision clears.
    link_preview = models.JSONField(null=True, blank=True, default=None)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    public_at = models.DateTimeField(null=True, blank=True, help_text="When it became the public one.")
    public_until = models.DateTimeField(null=True, blank=True, help_text="When a newer one replaced it.")

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["post", "number"], name="revision_number_uniq")]

    def __str__(self) -> str:
        return f"revision {self.number} of {self.post_id} ({self.status})"


class PostRevisionMedia(models.Model):
    """The media set of one revision, in order, with each medium's alt text in that revision."""

    revision = models.ForeignKey(PostRevision, on_delete=models.CASCADE, related_name="items")
    media = models.ForeignKey("media.Media", on_delete=models.CASCADE, related_name="revision_items")
    position = models.PositiveSmallIntegerField(default=0)
    description = models.CharField(max_length=1500, blank=True, default="")

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["revision", "media"], name="revision_media_uniq"),
        ]
        indexes = [models.Index(fields=["media", "revision"], name="revision_media_lookup_idx")]

    def __str__(self) -> str:
        return f"{self.media_id} in {self.revision_id}"


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


class ReportStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"
    DISMISSED = "dismissed", "Dismissed"


class Report(models.Model):
    """A user's report of a published post. Open reports put the post in the review queue (DESIGN.md
    §11); a moderator's decision on the post resolves them, dismissing leaves the post as it is.
    ``resolution`` is the decision that closed it (``approve``/``reject``/…/``dismiss``): reports
    closed by ``approve`` or ``dismiss`` were not upheld, which lowers the reporter's weight
    (``moderation.policy.report_weights``)."""

    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports")
    reason = models.CharField(max_length=16, choices=ReportReason.choices)
    detail = models.TextField(blank=True, default="", max_length=2000)
    status = models.CharField(max_length=16, choices=ReportStatus.choices, default=ReportStatus.OPEN)
    resolution = models.CharField(max_length=16, blank=True, default="")
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_note = models.TextField(blank=True, default="", max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["post", "reporter"], name="report_once_per_user")]
        indexes = [
            models.Index(fields=["post", "created_at"], name="report_open_idx", condition=Q(status="open")),
            models.Index(fields=["reporter", "status"], name="report_reporter_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.reason} report on {self.post_id}"


class IdempotencyState(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"


class IdempotencyKey(models.Model):
    """One ``Idempotency-Key`` of one user (DESIGN §9): the request's fingerprint and, once it ran,
    its response, replayed for 24 h to a retry with the same key and body (content.idempotency)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, blank=True, default="")
    state = models.CharField(
        max_length=16, choices=IdempotencyState.choices, default=IdempotencyState.IN_PROGRESS
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    response_body = models.BinaryField(default=b"", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    locked_until = models.DateTimeField(help_text="An in-progress claim older than this was abandoned.")
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user")]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_expiry_idx")]

    def __str__(self) -> str:
        return f"idempotency key {self.key!r} of user {self.user_id} ({self.state})"


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
    LIVESTREAM_LIVE = "livestream_live", "Livestream is live"
    LIVESTREAM_ENDED = "livestream_ended", "Livestream ended"
    LIVESTREAM_FAILED = "livestream_failed", "Livestream failed"


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
