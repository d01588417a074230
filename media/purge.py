"""Storage hygiene: bytes are only removed here, never by a delete or detach in the API, so that
moderators keep their evidence for the retention period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from content.idempotency import purge_expired_idempotency_keys
from content.models import IdempotencyKey, PostStatus
from media import storage
from media.models import Media, Upload, UploadState
from media.revocation import media_revoke_overdue
from media.services import discard_upload_bytes

# Evidence: posts a moderator rejected or quarantined, and posts still waiting for review (an author
# deleting a reported post must not make the evidence disappear).
EVIDENCE_STATUSES = (PostStatus.REJECTED, PostStatus.QUARANTINED, PostStatus.PENDING_REVIEW)


@dataclass
class PurgeReport:
    media: int = 0
    objects: int = 0
    uploads: int = 0
    revoked: int = 0
    idempotency_keys: int = 0


def purge_candidates(*, retention_days: int):
    cutoff = timezone.now() - timedelta(days=retention_days)
    gone = Q(detached_at__lt=cutoff) | Q(post__deleted_at__lt=cutoff)
    # Media of rejected or quarantined posts is evidence: it stays until a moderator decides otherwise.
    return Media.objects.filter(gone, purged_at__isnull=True).exclude(post__status__in=EVIDENCE_STATUSES)


def purge_media(*, retention_days: int, dry_run: bool = False) -> PurgeReport:
    report = PurgeReport()
    if not dry_run:
        # The scheduler does this every minute; purge runs it too, for deployments without one.
        report.revoked = len(media_revoke_overdue().rotated)
    for media in purge_candidates(retention_days=retention_days).iterator():
        report.media += 1
        if dry_run:
            continue
        report.objects += storage.delete_media_objects(media.owner_id, media.pk)
        Media.objects.filter(pk=media.pk).update(
            purged_at=timezone.now(), variants={}, urls_exposed_at=None, stale_keys=[]
        )
    expired = Upload.objects.filter(
        state__in=[UploadState.PENDING, UploadState.RECEIVED],
        expires_at__lt=timezone.now() - timedelta(hours=1),
    )
    for upload in expired.iterator():
        report.uploads += 1
        if dry_run:
            continue
        # Resumable uploads: S3's open multipart upload (AbortMultipartUpload) or the part files too.
        discard_upload_bytes(upload)
        Upload.objects.filter(pk=upload.pk).update(state=UploadState.EXPIRED, parts={})
    # A presigned POST stays usable until it expires, even after its upload was attached (and its
    # staged object deleted): bytes re-sent meanwhile would sit outside any quota. Remove them.
    reusable_until = timezone.now() - timedelta(hours=1)
    attached = Upload.objects.filter(
        state=UploadState.ATTACHED,
        expires_at__lt=reusable_until,
        expires_at__gte=reusable_until - timedelta(days=7),
    )
    for key in attached.values_list("storage_key", flat=True).iterator():
        if not dry_run and storage.exists(key):
            storage.delete(key)
            report.uploads += 1
    if dry_run:
        report.idempotency_keys = IdempotencyKey.objects.filter(expires_at__lte=timezone.now()).count()
    else:
        report.idempotency_keys = purge_expired_idempotency_keys()
    return report
