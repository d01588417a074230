"""The livestream rows. Imported by ``media.models`` so that Django registers them in the ``media``
app (one migration history)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class LiveStatus(models.TextChoices):
    IDLE = "idle", "Idle (waiting for the encoder)"
    LIVE = "live", "Live"
    ENDED = "ended", "Ended"
    FAILED = "failed", "Failed"


class LiveStream(models.Model):
    """One stream of one ``livestream`` post (DESIGN.md §13).

    The stream key is never stored in clear: ``key_hash`` (sha256, unique) finds the stream from the
    key an encoder presents; ``key_encrypted`` (Fernet under a key derived from ``SECRET_KEY``) lets
    the owner read it again. ``hls_folder`` is the storage folder of the live HLS tree (a random
    generation, changed whenever the post is hidden, so old grants stop working)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    post = models.OneToOneField("content.Post", on_delete=models.PROTECT, related_name="livestream")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    provider = models.CharField(max_length=16)
    status = models.CharField(max_length=8, choices=LiveStatus.choices, default=LiveStatus.IDLE)
    key_hash = models.CharField(max_length=64, unique=True)
    key_encrypted = models.TextField()
    key_rotated_at = models.DateTimeField(null=True, blank=True)
    provider_stream_id = models.CharField(max_length=200, blank=True, default="")
    provider_playback_id = models.CharField(max_length=200, blank=True, default="")
    provider_data = models.JSONField(default=dict, blank=True)
    hls_folder = models.CharField(max_length=500, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_segment_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True, default="")
    error = models.TextField(blank=True, default="")
    recording_media = models.ForeignKey(
        "media.Media", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    ai_checked_at = models.DateTimeField(null=True, blank=True)
    ai_frames_checked = models.PositiveIntegerField(default=0)
    ai_last_score = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status"], name="livestream_active_idx", condition=Q(status="live")),
        ]

    def __str__(self) -> str:
        return f"livestream {self.id} ({self.status})"


class LiveIngest(models.Model):
    """The local ingest process's sign of life: the web checks it before provisioning a stream
    (503 ``livestream_unavailable`` with ``error`` when it is down or could not start)."""

    name = models.CharField(max_length=50, primary_key=True)
    rtmp_url = models.CharField(max_length=300, blank=True, default="")
    hostname = models.CharField(max_length=200, blank=True, default="")
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    running = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"ingest {self.name} ({'running' if self.running else 'down'})"
