from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class MediaKind(models.TextChoices):
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"
    AUDIO = "audio", "Audio"
    THUMBNAIL = "thumbnail", "Thumbnail"
    TRANSCRIPT = "transcript", "Transcript"
    LIVESTREAM_RECORDING = "livestream_recording", "Livestream recording"


class ProcessingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class UploadState(models.TextChoices):
    PENDING = "pending", "Waiting for bytes"
    RECEIVED = "received", "Received"
    ATTACHED = "attached", "Attached"
    EXPIRED = "expired", "Expired"
    ABORTED = "aborted", "Aborted"


class Upload(models.Model):
    """A direct-to-storage upload: the client sends bytes to a signed URL, then attaches by id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100)
    kind = models.CharField(max_length=24, choices=MediaKind.choices)
    declared_size = models.PositiveBigIntegerField()
    declared_sha256 = models.CharField(max_length=64, blank=True, default="")
    storage_key = models.CharField(max_length=500, unique=True)
    state = models.CharField(max_length=16, choices=UploadState.choices, default=UploadState.PENDING)
    received_size = models.PositiveBigIntegerField(null=True, blank=True)
    received_sha256 = models.CharField(max_length=64, blank=True, default="")
    # Resumable uploads (DESIGN.md §8): S3 multipart semantics on both backends.
    resumable = models.BooleanField(default=False)
    part_size = models.PositiveBigIntegerField(null=True, blank=True)
    part_count = models.PositiveIntegerField(null=True, blank=True)
    multipart_id = models.CharField(
        max_length=1024, blank=True, default="", help_text="S3's UploadId (empty on the filesystem)."
    )
    parts = models.JSONField(
        default=dict,
        blank=True,
        help_text="Filesystem backend: parts received, {part_number: {size, etag}} (S3 lists its own).",
    )
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "expires_at"], name="upload_expiry_idx")]

    def __str__(self) -> str:
        return f"upload {self.id} ({self.state})"


class MediaQuerySet(models.QuerySet):
    """The media filters every app needs, declared once."""

    def attached(self) -> MediaQuerySet:
        """Media still attached to its post (never detached). The post may be deleted: moderators
        and the purge still see a deleted post's media; use ``live()`` for what its owner acts on."""
        return self.filter(detached_at__isnull=True)

    def live(self) -> MediaQuerySet:
        """Attached media whose post (if it has one) is not deleted."""
        return self.attached().filter(post__deleted_at__isnull=True)

    def unfinished(self) -> MediaQuerySet:
        """Attached media a worker has yet to finish (``pending`` or ``processing``)."""
        return self.attached().filter(
            processing_status__in=[ProcessingStatus.PENDING, ProcessingStatus.PROCESSING]
        )


class Media(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    post = models.ForeignKey(
        "content.Post", on_delete=models.PROTECT, related_name="media", null=True, blank=True
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="media")
    parent = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="derived",
        help_text="For derived media (a cover-art thumbnail), the medium it came from.",
    )
    kind = models.CharField(max_length=24, choices=MediaKind.choices)
    is_primary = models.BooleanField(default=True)
    position = models.PositiveSmallIntegerField(default=0)
    processing_status = models.CharField(
        max_length=16, choices=ProcessingStatus.choices, default=ProcessingStatus.PENDING
    )
    processing_error = models.TextField(blank=True, default="")
    original_filename = models.CharField(max_length=255, blank=True, default="")
    original_key = models.CharField(max_length=500)
    mime_type = models.CharField(max_length=100)
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    blurhash = models.CharField(max_length=100, blank=True, default="")
    # Alt text for screen readers, and the focal point clients keep in view when they crop
    # (Mastodon's convention: x from -1 left to 1 right, y from -1 bottom to 1 top).
    description = models.TextField(max_length=1500, blank=True, default="")
    focus_x = models.FloatField(null=True, blank=True)
    focus_y = models.FloatField(null=True, blank=True)
    variants = models.JSONField(
        default=dict, blank=True
    )  # name -> {key, width, height, mime_type, size_bytes}
    metadata = models.JSONField(default=dict, blank=True)
    pdq_hashes = models.JSONField(
        default=list,
        blank=True,
        help_text="PDQ perceptual hashes of the processed picture, or a video's poster and sampled "
        "frames: [{hash (64 hex), quality (0-100), source}] (media/processors/pdq.py).",
    )
    # Attempts are counted here, not only in the broker: a file that kills its worker is redelivered
    # with the same retry count, so the runner gives up after MEDIA_MAX_ATTEMPTS claims.
    attempts = models.PositiveIntegerField(default=0)
    attempt_token = models.UUIDField(
        null=True, blank=True, help_text="Identifies the attempt that owns the row."
    )
    failed_permanently = models.BooleanField(
        default=False,
        help_text="The file itself was refused (a retry gives the same answer): the sweep skips it.",
    )
    processing_started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last sign of life of the attempt that owns the row (written while it works).",
    )
    processed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    detached_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)
    # Bearer URLs (S3 presigned GETs) outlive the post being public unless the keys change: set when
    # such a URL was first issued for the current keys, cleared when the keys are rotated.
    urls_exposed_at = models.DateTimeField(
        null=True, blank=True, help_text="A bearer URL was issued for the current keys at this time."
    )
    keys_rotated_at = models.DateTimeField(null=True, blank=True)
    stale_keys = models.JSONField(
        default=list, blank=True, help_text="Old keys of a rotation whose objects are still to be deleted."
    )

    objects = MediaQuerySet.as_manager()

    class Meta:
        ordering = ["position", "created_at"]
        verbose_name_plural = "media"
        indexes = [
            # The sweep's index: only unfinished rows are in it, so its cost follows what it matches.
            models.Index(
                fields=["processing_status", "updated_at"],
                name="media_sweep_idx",
                condition=Q(processing_status__in=["pending", "processing", "failed"]),
            ),
            models.Index(fields=["owner", "created_at"], name="media_owner_idx"),
            # The revocation safety net looks only at media whose bearer URLs may still be out there.
            models.Index(
                fields=["urls_exposed_at"],
                name="media_urls_exposed_idx",
                condition=Q(urls_exposed_at__isnull=False),
            ),
        ]

        constraints = [
            models.CheckConstraint(
                condition=(Q(focus_x__isnull=True) & Q(focus_y__isnull=True))
                | (Q(focus_x__gte=-1, focus_x__lte=1) & Q(focus_y__gte=-1, focus_y__lte=1)),
                name="media_focus_in_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.processing_status})"

    @property
    def focus(self) -> dict[str, float] | None:
        if self.focus_x is None or self.focus_y is None:
            return None
        return {"x": self.focus_x, "y": self.focus_y}

    def variant_with_key(self, key: str) -> dict | None:
        """The named variant stored under ``key``, or None."""
        return next(
            (v for v in (self.variants or {}).values() if isinstance(v, dict) and v.get("key") == key),
            None,
        )

    def is_private_original(self, key: str) -> bool:
        """Whether ``key`` is the uploaded original, served only to the owner and staff (it may carry
        EXIF/GPS). A key that is also a named variant is that variant, public by the post's
        visibility: a transcript stores its plain text under its ``original_key`` and publishes the
        same object as its ``text`` variant."""
        return key == self.original_key and self.variant_with_key(key) is None


class RunResult(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    RETRYING = "retrying", "Failed, will retry"
    SKIPPED = "skipped", "Skipped (nothing to do)"
    BYPASSED = "bypassed", "Bypassed (processing disabled)"


class ProcessorRun(models.Model):
    """One processing attempt, for operators: what ran, where, how long, and what each step did."""

    id = models.BigAutoField(primary_key=True)
    media = models.ForeignKey(Media, on_delete=models.CASCADE, related_name="runs")
    post = models.ForeignKey(
        "content.Post", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    processor = models.CharField(max_length=40)
    processor_class = models.CharField(max_length=200, blank=True, default="")
    actor = models.CharField(max_length=80, blank=True, default="")
    queue = models.CharField(max_length=80, blank=True, default="")
    message_id = models.CharField(max_length=64, blank=True, default="")
    attempt = models.PositiveIntegerField(default=0)
    status_before = models.CharField(max_length=16, blank=True, default="")
    status_after = models.CharField(max_length=16, blank=True, default="")
    result = models.CharField(max_length=16, choices=RunResult.choices, default=RunResult.RUNNING)
    duration_ms = models.FloatField(null=True, blank=True)
    peak_memory_kb = models.PositiveBigIntegerField(null=True, blank=True)
    error_class = models.CharField(max_length=200, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    steps = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["result", "started_at"], name="processor_run_result_idx")]

    def __str__(self) -> str:
        return f"{self.processor} run #{self.attempt} on {self.media_id}: {self.result}"


class JobLock(models.Model):
    """A named lock in the database, for when no Redis is configured: works across processes and
    machines sharing the database. Expired locks (a crashed holder) are taken over."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=200)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at}"


# The livestream rows live in their own module (media/live/models.py), registered in this app.
from media.live.models import LiveIngest, LiveStatus, LiveStream  # noqa: E402, F401
