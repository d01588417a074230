from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from content.models import Post


class ModerationMode(models.TextChoices):
    AI_PRESCREEN = "ai_prescreen", "AI prescreen: nothing goes public before the AI or a human clears it"
    REACTIVE_ONLY = "reactive_only", "Reactive only: publish at once, act on reports"


class BlockedMediaAction(models.TextChoices):
    REFUSE = "refuse", "Refuse the upload (451)"
    QUARANTINE = "quarantine", "Accept, but quarantine the post when it is published"


def _unit_interval():
    return [MinValueValidator(0.0), MaxValueValidator(1.0)]


class PlatformSettings(models.Model):
    """The one row of operator-tunable settings (DESIGN.md §6). Read it through
    ``moderation.platform.get_platform_settings()``, which caches it."""

    singleton_id = 1

    moderation_mode = models.CharField(
        max_length=16, choices=ModerationMode.choices, default=ModerationMode.AI_PRESCREEN
    )
    ai_review_threshold = models.FloatField(
        default=0.3,
        validators=_unit_interval(),
        help_text="AI scores at or above this wait for a human; below it the post is published.",
    )
    ai_revoke_threshold = models.FloatField(
        default=0.7,
        validators=_unit_interval(),
        help_text="AI scores at or above this quarantine the post at once.",
    )
    report_threshold = models.PositiveIntegerField(
        default=3,
        validators=[MinValueValidator(1)],
        help_text="Distinct reporters that send a published post back to review.",
    )
    post_processing_enabled = models.BooleanField(
        default=True, help_text="Off: uploads are marked ready without processing (bypass)."
    )
    processor_event_trigger_media_enabled = models.BooleanField(
        default=True, help_text="Off: nothing is queued on attach; media waits for the sweep."
    )
    media_sweep_schedule_enabled = models.BooleanField(default=False)
    media_sweep_cron = models.CharField(max_length=100, default="*/15 * * * *")
    trust_min_account_age_days = models.PositiveIntegerField(
        default=0, help_text="reactive_only mode: accounts younger than this still go through the prescreen."
    )
    trust_min_approved_posts = models.PositiveIntegerField(
        default=0,
        help_text="reactive_only mode: authors with fewer published posts still go through the prescreen.",
    )
    blocked_media_action = models.CharField(
        max_length=16, choices=BlockedMediaAction.choices, default=BlockedMediaAction.REFUSE
    )
    claim_minutes = models.PositiveIntegerField(default=15, help_text="How long a moderator's claim holds.")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = "platform settings"
        verbose_name_plural = "platform settings"

    def __str__(self) -> str:
        return "Platform settings"

    def save(self, *args, **kwargs):
        self.pk = self.singleton_id
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.ai_review_threshold > self.ai_revoke_threshold:
            raise ValidationError("The review threshold must not be above the revoke threshold.")


class Decision(models.TextChoices):
    PUBLISH = "publish", "Publish (AI clean)"
    REVIEW = "review", "Hold for a human"
    QUARANTINE = "quarantine", "Quarantine"
    ERROR = "error", "Provider error"
    STALE = "stale", "Stale (post changed)"


class AiReview(models.Model):
    post = models.ForeignKey("content.Post", on_delete=models.CASCADE, related_name="ai_reviews")
    post_revision = models.PositiveIntegerField(default=0)
    provider = models.CharField(max_length=60)
    model = models.CharField(max_length=120, blank=True, default="")
    scores = models.JSONField(default=dict, blank=True)
    overall_score = models.FloatField(null=True, blank=True)
    labels = models.JSONField(default=list, blank=True)
    decision = models.CharField(max_length=16, choices=Decision.choices)
    duration_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    attempt = models.PositiveIntegerField(default=1)
    raw = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "AI review"
        indexes = [models.Index(fields=["post", "-created_at"], name="aireview_post_latest_idx")]

    def __str__(self) -> str:
        return f"AI review of {self.post_id}: {self.decision} ({self.overall_score})"


class ModerationAction(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"
    QUARANTINE = "quarantine", "Quarantine"
    REPORTS_THRESHOLD = "reports", "Sent to review by reports"
    MARK_SENSITIVE = "sensitive", "Mark sensitive (publish behind a content warning)"
    DISMISS_REPORTS = "dismiss", "Dismiss reports"
    CLAIM = "claim", "Claim"
    RELEASE = "release", "Release claim"
    SETTINGS = "settings", "Platform settings changed"
    SCHEDULED_PUBLISH = "scheduled", "Scheduled post went public"
    APPEAL_GRANT = "appeal_grant", "Appeal granted"
    APPEAL_DENY = "appeal_deny", "Appeal denied"


class ModerationDecision(models.Model):
    """The audit row of every human (or report-driven) decision. Never edited, never deleted."""

    post = models.ForeignKey("content.Post", on_delete=models.CASCADE, related_name="decisions", null=True)
    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=16, choices=ModerationAction.choices)
    reason = models.TextField(blank=True, default="")
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16, blank=True, default="")
    from_moderation_state = models.CharField(max_length=16, blank=True, default="")
    to_moderation_state = models.CharField(max_length=16, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["post", "action", "-created_at"], name="decision_post_action_idx")]

    def __str__(self) -> str:
        return f"{self.action} {self.post_id} {self.from_status}→{self.to_status}"


class BlockedMedia(models.Model):
    """Known-bad bytes: a later upload with the same sha256, or a processed medium whose PDQ hash is
    within ``PDQ_MATCH_DISTANCE`` of one of ``pdq_hashes``, is refused or quarantined."""

    sha256 = models.CharField(max_length=64, unique=True)
    pdq_hashes = models.JSONField(
        default=list,
        blank=True,
        help_text="PDQ hashes (64 hex digits each) of the blocked picture, or a video's poster and frames.",
    )
    reason = models.TextField(blank=True, default="")
    source_post = models.ForeignKey(
        "content.Post", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # With the row count, tells every process when its cached PDQ index is stale (moderation/blocklist.py).
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        verbose_name_plural = "blocked media"

    def __str__(self) -> str:
        return self.sha256


class PostClaim(models.Model):
    """A moderator's "I'm on it": others cannot act on the post until it expires or is taken over."""

    post = models.OneToOneField("content.Post", on_delete=models.CASCADE, related_name="claim")
    moderator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.post_id} claimed by {self.moderator_id} until {self.expires_at}"


class ReviewQueue(Post):
    """The moderators' view of posts waiting for a human: its own admin entry and ``view`` permission."""

    class Meta:
        proxy = True
        verbose_name = "queued post"
        verbose_name_plural = "review queue"


class AccountStatus(models.TextChoices):
    GOOD = "good", "In good standing"
    LIMITED = "limited", "Limited: every publish goes to a human"
    SUSPENDED = "suspended", "Suspended: no login, posts hidden"


class AccountStanding(models.Model):
    """One user's standing with the moderators (DESIGN.md §11). A user without a row is in good
    standing with no strikes. Written only by ``moderation.services`` (``account_*``); read at request
    time (``config.authentication``, ``content.selectors``)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="standing"
    )
    status = models.CharField(max_length=16, choices=AccountStatus.choices, default=AccountStatus.GOOD)
    strikes = models.PositiveIntegerField(
        default=0, help_text="Warnings plus rejected or quarantined posts, counted by the services."
    )
    reason = models.TextField(blank=True, default="", help_text="Why the current status was set.")
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["status"], name="standing_status_idx")]
        permissions = [("act_on_account", "Can warn, limit, suspend and restore accounts")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.status} ({self.strikes} strikes)"


class AccountActionKind(models.TextChoices):
    WARN = "warn", "Warn"
    LIMIT = "limit", "Limit"
    SUSPEND = "suspend", "Suspend"
    RESTORE = "restore", "Restore"
    STRIKE = "strike", "Strike (post decision)"


class AccountAction(models.Model):
    """The audit row of every action on an account. Never edited, never deleted."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=16, choices=AccountActionKind.choices)
    reason = models.TextField(blank=True, default="")
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16, blank=True, default="")
    strikes = models.PositiveIntegerField(default=0, help_text="The account's strikes after the action.")
    post = models.ForeignKey(
        "content.Post", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"], name="accountaction_user_idx")]

    def __str__(self) -> str:
        return f"{self.action} {self.user_id} {self.from_status}→{self.to_status}"


class ModeratorNote(models.Model):
    """An internal note on a post or an account: shown in the admin only, never in the API."""

    post = models.ForeignKey(
        "content.Post", on_delete=models.CASCADE, null=True, blank=True, related_name="moderator_notes"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    text = models.TextField(max_length=5000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(post__isnull=False) | models.Q(user__isnull=False),
                name="note_has_subject",
            )
        ]

    def __str__(self) -> str:
        return f"note on {self.post_id or self.user_id}"


class ModeratedAccount(User):
    """The moderators' view of user accounts (standing, strikes, notes, actions): its own admin entry
    and ``view`` permission, so moderators never need ``auth.view_user``."""

    class Meta:
        proxy = True
        verbose_name = "account"
        verbose_name_plural = "accounts"


class AppealStatus(models.TextChoices):
    OPEN = "open", "Open"
    GRANTED = "granted", "Granted"
    DENIED = "denied", "Denied"


class Appeal(models.Model):
    """A creator asks again about a reject or quarantine (DESIGN.md §10). One per decision: the
    decision is a ``ModerationDecision`` (human) or an ``AiReview`` (the AI quarantined it)."""

    post = models.ForeignKey("content.Post", on_delete=models.CASCADE, related_name="appeals")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    decision = models.OneToOneField(
        ModerationDecision, on_delete=models.PROTECT, null=True, blank=True, related_name="appeal"
    )
    ai_review = models.OneToOneField(
        AiReview, on_delete=models.PROTECT, null=True, blank=True, related_name="appeal"
    )
    text = models.TextField(max_length=2000)
    status = models.CharField(max_length=16, choices=AppealStatus.choices, default=AppealStatus.OPEN)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decision_reason = models.TextField(blank=True, default="")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="appeal_queue_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(decision__isnull=False) | models.Q(ai_review__isnull=False),
                name="appeal_has_a_decision",
            )
        ]

    def __str__(self) -> str:
        return f"appeal {self.pk} on {self.post_id} ({self.status})"


class AppealQueue(Appeal):
    """The moderators' Appeals queue: open appeals, oldest first (its own admin entry)."""

    class Meta:
        proxy = True
        verbose_name = "open appeal"
        verbose_name_plural = "appeals queue"
