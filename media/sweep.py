"""``sweep_pending_media``: the safety net that re-queues media a message was lost for (broker down
at commit, worker killed, trigger switched off) or that failed and may be retried."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from media.locks import exclusive
from media.models import Media, ProcessingStatus
from media.processors import PROCESSOR_PATHS
from media.services import media_send_on_commit

SWEEPABLE = (ProcessingStatus.PENDING, ProcessingStatus.FAILED, ProcessingStatus.PROCESSING)


@dataclass
class SweepRow:
    media_id: str
    kind: str
    status: str
    attempts: int
    age_minutes: float
    action: str


@dataclass
class SweepReport:
    rows: list[SweepRow] = field(default_factory=list)
    skipped_kinds: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def queued(self) -> int:
        return sum(1 for r in self.rows if r.action == "queued")


def sweep_candidates(
    *,
    statuses: list[str],
    stuck_minutes: int,
    kinds: list[str] | None,
    include_exhausted: bool,
    pending_grace_minutes: float,
):
    """What the sweep would touch. Only unfinished rows are in ``media_sweep_idx``, so this costs
    what it matches, not the size of the table."""
    now = timezone.now()
    cond = Q()
    if ProcessingStatus.PENDING in statuses:
        cond |= Q(
            processing_status=ProcessingStatus.PENDING,
            updated_at__lte=now - timedelta(minutes=pending_grace_minutes),
        )
    if ProcessingStatus.FAILED in statuses:
        failed = Q(processing_status=ProcessingStatus.FAILED)
        if not include_exhausted:
            # Files refused for what they are (a bomb, a bad checksum) fail the same way every time.
            failed &= Q(attempts__lt=settings.MEDIA_MAX_ATTEMPTS, failed_permanently=False)
        cond |= failed
    if stuck_minutes is not None and stuck_minutes >= 0:
        cond |= Q(
            processing_status=ProcessingStatus.PROCESSING,
            updated_at__lt=now - timedelta(minutes=stuck_minutes),
        )
    if not cond:
        return Media.objects.none()
    qs = Media.objects.filter(
        cond, processing_status__in=SWEEPABLE, detached_at__isnull=True, purged_at__isnull=True
    )
    if kinds:
        qs = qs.filter(kind__in=kinds)
    return qs.order_by("updated_at")


def sweep_pending_media(
    *,
    dry_run: bool = False,
    statuses: list[str] | None = None,
    stuck_minutes: int | None = None,
    kinds: list[str] | None = None,
    limit: int | None = None,
    include_exhausted: bool = False,
    pending_grace_minutes: float = 5,
) -> SweepReport:
    statuses = statuses or [ProcessingStatus.PENDING, ProcessingStatus.FAILED]
    stuck_minutes = settings.MEDIA_STUCK_MINUTES if stuck_minutes is None else stuck_minutes
    report = SweepReport(dry_run=dry_run)
    with exclusive("sweep_pending_media", ttl_seconds=1800):
        qs = sweep_candidates(
            statuses=statuses,
            stuck_minutes=stuck_minutes,
            kinds=kinds,
            include_exhausted=include_exhausted,
            pending_grace_minutes=pending_grace_minutes,
        )
        now = timezone.now()
        ids = list(qs.filter(kind__in=PROCESSOR_PATHS).values_list("pk", flat=True)[: limit or None])
        skipped = (
            qs.exclude(kind__in=PROCESSOR_PATHS).order_by().values("kind").annotate(n=models.Count("pk"))
        )
        report.skipped_kinds = {row["kind"]: row["n"] for row in skipped}
        for media_id in ids:
            with transaction.atomic():
                media = Media.objects.select_for_update().filter(pk=media_id).first()
                if media is None or not qs.filter(pk=media_id).exists():
                    continue  # finished meanwhile
                before = media.processing_status
                row = SweepRow(
                    str(media.pk),
                    media.kind,
                    before,
                    media.attempts,
                    round((now - media.updated_at).total_seconds() / 60, 1),
                    "would queue" if dry_run else "queued",
                )
                report.rows.append(row)
                if dry_run:
                    continue
                media.processing_status = ProcessingStatus.PENDING
                media.attempt_token = None
                if before == ProcessingStatus.FAILED and include_exhausted:
                    media.attempts = 0
                    media.failed_permanently = False
                media.metadata = {**media.metadata, "swept_at": now.isoformat(), "swept_from": before}
                media.save(
                    update_fields=[
                        "processing_status",
                        "attempt_token",
                        "attempts",
                        "failed_permanently",
                        "metadata",
                        "updated_at",
                    ]
                )
                media_send_on_commit(media)
    return report


@dataclass
class PostSweepReport:
    settled: list[str] = field(default_factory=list)
    reviews_queued: list[str] = field(default_factory=list)


def sweep_stuck_posts(*, dry_run: bool = False, grace_minutes: float = 5) -> PostSweepReport:
    """Posts whose follow-up message was lost: ``processing`` although none of their media is
    unfinished (the settle step failed), or waiting for an AI review that was never queued."""
    from content.models import ModerationState, Post, PostStatus
    from content.services import post_media_settled
    from moderation.models import AiReview
    from moderation.services import send_ai_review

    report = PostSweepReport()
    cutoff = timezone.now() - timedelta(minutes=grace_minutes)
    unfinished = Media.objects.filter(
        post=models.OuterRef("pk"),
        detached_at__isnull=True,
        processing_status__in=[ProcessingStatus.PENDING, ProcessingStatus.PROCESSING],
    )
    stuck = Post.objects.filter(
        status=PostStatus.PROCESSING, deleted_at__isnull=True, updated_at__lt=cutoff
    ).filter(~models.Exists(unfinished))
    for post_id in stuck.values_list("pk", flat=True)[:1000]:
        report.settled.append(str(post_id))
        if not dry_run:
            post_media_settled(post_id=post_id)
    reviewed = AiReview.objects.filter(post=models.OuterRef("pk"), post_revision=models.OuterRef("revision"))
    waiting = Post.objects.filter(
        status=PostStatus.PENDING_REVIEW,
        moderation_state=ModerationState.UNDER_REVIEW,
        deleted_at__isnull=True,
        submitted_at__lt=cutoff,
    ).filter(~models.Exists(reviewed))
    for post in waiting[:1000]:
        report.reviews_queued.append(str(post.pk))
        if not dry_run:
            with transaction.atomic():
                send_ai_review(post)
    return report
