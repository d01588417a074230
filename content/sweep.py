"""The post side of the safety net: posts whose follow-up message was lost. Called by
``sweep_pending_media`` (and the scheduler, and the embedded runtime at start) after the media sweep;
each post it finds goes through the same transition a message would have driven."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.db import models, transaction
from django.utils import timezone

from config.queueing import send_on_commit
from content.models import Post, PostStatus
from content.services import awaits_ai_review, post_media_settled
from media.models import Media
from moderation import policy


@dataclass
class PostSweepReport:
    settled: list[str] = field(default_factory=list)
    reviews_queued: list[str] = field(default_factory=list)


def sweep_stuck_posts(
    *, dry_run: bool = False, grace_minutes: float = 5, limit: int = 1000
) -> PostSweepReport:
    """Find posts older than ``grace_minutes`` that are ``processing`` although none of their media
    is unfinished (the settle step failed), and posts waiting for an AI review that was never
    queued. Settle the first, queue the review of the second (unless ``dry_run``); at most ``limit``
    of each. Returns their ids."""
    report = PostSweepReport()
    cutoff = timezone.now() - timedelta(minutes=grace_minutes)
    unfinished = Media.objects.unfinished().filter(post=models.OuterRef("pk"))
    stuck = Post.objects.filter(
        status=PostStatus.PROCESSING, deleted_at__isnull=True, updated_at__lt=cutoff
    ).filter(~models.Exists(unfinished))
    for post_id in stuck.values_list("pk", flat=True)[:limit]:
        report.settled.append(str(post_id))
        if not dry_run:
            post_media_settled(post_id=post_id)
    reviewed = policy.revision_reviews().filter(
        post=models.OuterRef("pk"), post_revision=models.OuterRef("revision")
    )
    waiting = Post.objects.filter(
        # Includes an edit of a published post whose review message was lost (its media all processed).
        awaits_ai_review(),
        deleted_at__isnull=True,
        submitted_at__lt=cutoff,
    ).filter(~models.Exists(reviewed), ~models.Exists(unfinished))
    for post in waiting.select_related("pending_revision")[:limit]:
        pending = post.pending_revision
        if post.status == PostStatus.PUBLISHED and (pending.link_preview or {}).get("status") == "fetching":
            # The edit waits for its link card, not for the AI: ask the links worker again.
            if not dry_run:
                with transaction.atomic():
                    send_on_commit("link_preview_fetch", str(post.pk), pending.link_url, pending.number)
            continue
        report.reviews_queued.append(str(post.pk))
        if not dry_run:
            with transaction.atomic():
                send_on_commit("review_post", str(post.pk), post.revision)  # as post_publish sends it
    return report
