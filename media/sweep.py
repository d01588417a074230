"""``sweep_pending_media``: the safety net that re-queues media a message was lost for (broker down
at commit, worker killed, trigger switched off) or that failed and may be retried."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from media import processing
from media.locks import exclusive
from media.models import Media, ProcessingStatus
from media.processors import PROCESSOR_PATHS

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
    trust_heartbeats: bool = True,
):
    """What the sweep would touch. Only unfinished rows are in ``media_sweep_idx``, so this costs
    what it matches, not the size of the table.

    ``processing`` rows are stuck when neither the row nor the attempt's heartbeat moved for
    ``stuck_minutes`` (negative: never) — and, with ``trust_heartbeats``, never while the attempt
    heart-beat within ``MEDIA_HEARTBEAT_STALE_SECONDS``: a long step that reports progress is alive.
    Only the embedded runtime's start passes ``trust_heartbeats=False`` (no other worker can exist)."""
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
        idle = timedelta(minutes=stuck_minutes)
        if trust_heartbeats:
            idle = max(idle, timedelta(seconds=settings.MEDIA_HEARTBEAT_STALE_SECONDS))
        cutoff = now - idle
        cond |= Q(processing_status=ProcessingStatus.PROCESSING, updated_at__lt=cutoff) & (
            Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff)
        )
    if not cond:
        return Media.objects.none()
    qs = Media.objects.attached().filter(cond, processing_status__in=SWEEPABLE, purged_at__isnull=True)
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
    trust_heartbeats: bool = True,
) -> SweepReport:
    """Re-queue what ``sweep_candidates`` selects (through ``media.processing.requeue``), at most
    ``limit``, under a lock so that two sweeps never run at once (``LockHeld`` otherwise)."""
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
            trust_heartbeats=trust_heartbeats,
        )
        now = timezone.now()
        ids = list(qs.filter(kind__in=PROCESSOR_PATHS).values_list("pk", flat=True)[: limit or None])
        skipped = (
            qs.exclude(kind__in=PROCESSOR_PATHS).order_by().values("kind").annotate(n=models.Count("pk"))
        )
        report.skipped_kinds = {row["kind"]: row["n"] for row in skipped}
        for media_id in ids:
            found = processing.requeue(
                media_id=media_id, candidates=qs, reset_attempts=include_exhausted, dry_run=dry_run
            )
            if found is None:
                continue  # finished meanwhile
            report.rows.append(
                SweepRow(
                    str(media_id),
                    found.media.kind,
                    found.status_before,
                    found.attempts_before,
                    round((now - found.idle_since).total_seconds() / 60, 1),
                    "would queue" if dry_run else "queued",
                )
            )
    return report
