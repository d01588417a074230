"""Moderation writes: the AI verdict, moderators' decisions, reports, claims (DESIGN.md §3, §6, §7).

Every decision goes through one transition function here, whether it comes from the admin, the API
or a worker, and every human decision writes a ``ModerationDecision`` row.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from config.errors import Conflict, InvalidTransition, NotFound, PermissionDenied
from config.queueing import send_on_commit
from content.models import ModerationState, Post, PostStatus
from moderation.models import (
    AiReview,
    BlockedMedia,
    Decision,
    ModerationAction,
    ModerationDecision,
    ModerationMode,
    PostClaim,
)
from moderation.platform import get_platform_settings

logger = logging.getLogger(__name__)


class AlreadyDecided(InvalidTransition):
    code = "already_decided"
    default_detail = "Another moderator already decided this post."


class ClaimedByOther(Conflict):
    code = "claimed"
    default_detail = "Another moderator is working on this post."


# --- prescreen ----------------------------------------------------------------------------------------


def needs_prescreen(post: Post) -> bool:
    """``ai_prescreen`` mode: always. ``reactive_only``: only for authors not yet trusted (new accounts
    or too few published posts), as PeerTube and Discourse do; both trust settings 0 means never."""
    ps = get_platform_settings()
    if ps.moderation_mode == ModerationMode.AI_PRESCREEN:
        return True
    author = post.author
    if ps.trust_min_account_age_days and author.date_joined > timezone.now() - timedelta(
        days=ps.trust_min_account_age_days
    ):
        return True
    if ps.trust_min_approved_posts:
        published = (
            Post.objects.filter(author=author, published_at__isnull=False)
            .exclude(status=PostStatus.REJECTED)
            .exclude(pk=post.pk)
            .count()
        )
        if published < ps.trust_min_approved_posts:
            return True
    return False


def send_ai_review(post: Post) -> None:
    """Queue the AI review of this revision once the surrounding transaction commits."""
    from moderation.tasks import review_post

    post_id, revision = str(post.pk), post.revision

    def send() -> None:
        # The post is committed as pending_review; if the broker is down the request still succeeds
        # and the sweep queues the review later. Nothing is published meanwhile (fail closed).
        try:
            review_post.send(post_id, revision)
        except Exception as exc:
            logger.warning(
                "could not queue the AI review of post %s (the sweep will retry): %s", post_id, exc
            )

    transaction.on_commit(send)


def _decision_for(score: float) -> str:
    ps = get_platform_settings()
    if score >= ps.ai_revoke_threshold:
        return Decision.QUARANTINE
    if score >= ps.ai_review_threshold:
        return Decision.REVIEW
    return Decision.PUBLISH


DECISIVE = (Decision.PUBLISH, Decision.REVIEW, Decision.QUARANTINE)


def waiting_for_ai(post: Post, revision: int) -> bool:
    """True while this revision of the post waits for its (first) AI verdict. A verdict for another
    revision, for a post a human or the reports moved on, or a second verdict for the same revision
    (a duplicate or redelivered message) is stale and must change nothing."""
    return (
        post.deleted_at is None
        and post.revision == revision
        and post.status == PostStatus.PENDING_REVIEW
        and post.moderation_state == ModerationState.UNDER_REVIEW
        and not AiReview.objects.filter(post=post, post_revision=revision, decision__in=DECISIVE).exists()
    )


@transaction.atomic
def ai_verdict_apply(
    *,
    post_id: UUID | str,
    revision: int,
    provider: str,
    model: str,
    scores: dict[str, float],
    overall: float,
    labels: list[str],
    duration_ms: float,
    attempt: int = 1,
    raw: dict | None = None,
) -> AiReview:
    """Record an AI review and apply its band. A verdict for an older revision, or for a post a human
    decided meanwhile, is recorded as stale and changes nothing."""
    post = Post.objects.select_for_update().get(pk=post_id)
    decision = _decision_for(overall) if waiting_for_ai(post, revision) else Decision.STALE
    review = AiReview.objects.create(
        post=post,
        post_revision=revision,
        provider=provider,
        model=model,
        scores=scores,
        overall_score=overall,
        labels=labels,
        decision=decision,
        duration_ms=duration_ms,
        attempt=attempt,
        raw=raw or {},
    )
    if decision == Decision.PUBLISH:
        post.status = PostStatus.PUBLISHED
        post.moderation_state = ModerationState.CLEAN
        post.published_at = post.published_at or timezone.now()
        post.save(update_fields=["status", "moderation_state", "published_at", "updated_at"])
    elif decision == Decision.QUARANTINE:
        post.status = PostStatus.QUARANTINED
        post.moderation_state = ModerationState.FLAGGED
        post.save(update_fields=["status", "moderation_state", "updated_at"])
    return review


def ai_review_failed(
    *,
    post_id: UUID | str,
    revision: int,
    provider: str,
    error: str,
    attempt: int,
    final: bool,
    duration_ms: float,
) -> AiReview:
    """Record a provider failure. The post stays in ``pending_review`` (fail closed); when the retries
    are spent a human decides, and the queue shows why."""
    with transaction.atomic():
        post = Post.objects.select_for_update().get(pk=post_id)
        review = AiReview.objects.create(
            post=post,
            post_revision=revision,
            provider=provider,
            decision=Decision.ERROR,
            error=error[:2000],
            attempt=attempt,
            duration_ms=duration_ms,
            raw={"final": final},
        )
        if final and waiting_for_ai(post, revision):
            post.metadata = {**post.metadata, "ai_review_error": error[:500]}
            post.save(update_fields=["metadata", "updated_at"])
    return review


# --- human decisions --------------------------------------------------------------------------------------


APPROVE_FROM = (PostStatus.PENDING_REVIEW, PostStatus.QUARANTINED)
REJECT_FROM = (PostStatus.PROCESSING, PostStatus.PENDING_REVIEW, PostStatus.PUBLISHED, PostStatus.QUARANTINED)
QUARANTINE_FROM = (PostStatus.PUBLISHED, PostStatus.PENDING_REVIEW)


def _lock_for_decision(
    *,
    post_id: UUID | str,
    moderator: AbstractBaseUser,
    allowed: tuple[str, ...],
    action: str,
    expected_status: str | None,
    take_over: bool,
) -> Post:
    try:
        post = Post.objects.select_for_update(of=("self",)).select_related("author").get(pk=post_id)
    except (Post.DoesNotExist, ValueError):
        raise NotFound("Post not found.") from None
    if post.author_id == moderator.pk:
        raise PermissionDenied("Moderators cannot moderate their own posts.")
    if expected_status and post.status != expected_status:
        raise AlreadyDecided(
            f"This post was already decided: it is now {post.status}.", extra={"status": post.status}
        )
    if post.status not in allowed:
        if post.status in (PostStatus.PUBLISHED, PostStatus.REJECTED, PostStatus.QUARANTINED):
            raise AlreadyDecided(
                f"Cannot {action}: the post is already {post.status}.", extra={"status": post.status}
            )
        raise InvalidTransition(
            f"Cannot {action} a post that is {post.status}.", extra={"status": post.status}
        )
    claim = (
        PostClaim.objects.filter(post=post, expires_at__gt=timezone.now()).select_related("moderator").first()
    )
    if claim and claim.moderator_id != moderator.pk and not take_over:
        raise ClaimedByOther(
            f"{claim.moderator.get_username()} is working on this post until "
            f"{claim.expires_at:%H:%M} UTC; take it over to act.",
        )
    return post


def _record(
    post: Post, moderator: AbstractBaseUser | None, action: str, reason: str, before: tuple[str, str]
) -> ModerationDecision:
    PostClaim.objects.filter(post=post).delete()
    return ModerationDecision.objects.create(
        post=post,
        moderator=moderator,
        action=action,
        reason=reason,
        from_status=before[0],
        to_status=post.status,
        from_moderation_state=before[1],
        to_moderation_state=post.moderation_state,
    )


@transaction.atomic
def post_approve(
    *,
    post_id: UUID | str,
    moderator: AbstractBaseUser,
    reason: str = "",
    expected_status: str | None = None,
    take_over: bool = False,
) -> Post:
    post = _lock_for_decision(
        post_id=post_id,
        moderator=moderator,
        allowed=APPROVE_FROM,
        action="approve",
        expected_status=expected_status,
        take_over=take_over,
    )
    before = (post.status, post.moderation_state)
    post.status = PostStatus.PUBLISHED
    post.moderation_state = ModerationState.APPROVED
    post.published_at = post.published_at or timezone.now()
    post.save(update_fields=["status", "moderation_state", "published_at", "updated_at"])
    _record(post, moderator, ModerationAction.APPROVE, reason, before)
    return post


@transaction.atomic
def post_reject(
    *,
    post_id: UUID | str,
    moderator: AbstractBaseUser,
    reason: str = "",
    expected_status: str | None = None,
    take_over: bool = False,
) -> Post:
    """Final. The reason is shown to the creator; the media's bytes go on the blocklist."""
    from media.models import Media

    post = _lock_for_decision(
        post_id=post_id,
        moderator=moderator,
        allowed=REJECT_FROM,
        action="reject",
        expected_status=expected_status,
        take_over=take_over,
    )
    before = (post.status, post.moderation_state)
    post.status = PostStatus.REJECTED
    post.moderation_state = ModerationState.REJECTED
    post.rejection_reason = reason
    post.publish_requested = False
    post.save(
        update_fields=["status", "moderation_state", "rejection_reason", "publish_requested", "updated_at"]
    )
    for sha in set(Media.objects.filter(post=post).exclude(sha256="").values_list("sha256", flat=True)):
        BlockedMedia.objects.get_or_create(
            sha256=sha,
            defaults={"reason": reason or "Rejected post", "source_post": post, "added_by": moderator},
        )
    _record(post, moderator, ModerationAction.REJECT, reason, before)
    send_on_commit("media_revoke_post_urls", str(post.pk))
    return post


@transaction.atomic
def post_quarantine(
    *,
    post_id: UUID | str,
    moderator: AbstractBaseUser,
    reason: str = "",
    expected_status: str | None = None,
    take_over: bool = False,
) -> Post:
    post = _lock_for_decision(
        post_id=post_id,
        moderator=moderator,
        allowed=QUARANTINE_FROM,
        action="quarantine",
        expected_status=expected_status,
        take_over=take_over,
    )
    before = (post.status, post.moderation_state)
    post.status = PostStatus.QUARANTINED
    post.moderation_state = ModerationState.FLAGGED
    post.save(update_fields=["status", "moderation_state", "updated_at"])
    _record(post, moderator, ModerationAction.QUARANTINE, reason, before)
    send_on_commit("media_revoke_post_urls", str(post.pk))
    return post


@transaction.atomic
def post_claim(*, post_id: UUID | str, moderator: AbstractBaseUser, take_over: bool = False) -> PostClaim:
    try:
        post = Post.objects.select_for_update().get(pk=post_id, deleted_at__isnull=True)
    except (Post.DoesNotExist, ValueError):
        raise NotFound("Post not found.") from None
    if post.author_id == moderator.pk:
        raise PermissionDenied("Moderators cannot moderate their own posts.")
    if post.status not in (PostStatus.PENDING_REVIEW, PostStatus.QUARANTINED):
        raise InvalidTransition(f"Only posts waiting for review can be claimed; this one is {post.status}.")
    now = timezone.now()
    claim = PostClaim.objects.filter(post=post).first()
    if claim and claim.expires_at > now and claim.moderator_id != moderator.pk and not take_over:
        raise ClaimedByOther(f"{claim.moderator.get_username()} already claimed this post.")
    minutes = get_platform_settings().claim_minutes
    claim, _ = PostClaim.objects.update_or_create(
        post=post, defaults={"moderator": moderator, "expires_at": now + timedelta(minutes=minutes)}
    )
    ModerationDecision.objects.create(
        post=post,
        moderator=moderator,
        action=ModerationAction.CLAIM,
        from_status=post.status,
        to_status=post.status,
        from_moderation_state=post.moderation_state,
        to_moderation_state=post.moderation_state,
        details={"take_over": take_over, "minutes": minutes},
    )
    return claim


@transaction.atomic
def post_release_claim(*, post_id: UUID | str, moderator: AbstractBaseUser) -> None:
    PostClaim.objects.filter(post_id=post_id, moderator=moderator).delete()


# --- reports ------------------------------------------------------------------------------------------------


def post_reports_threshold_reached(*, post: Post) -> bool:
    """Inside the caller's transaction, with the post locked: send a published post back to review
    once ``report_threshold`` distinct users reported it since its last approval."""
    if post.status != PostStatus.PUBLISHED:
        return False
    last_approval = (
        ModerationDecision.objects.filter(post=post, action=ModerationAction.APPROVE)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    reports = post.reports.all()
    if last_approval:
        reports = reports.filter(created_at__gt=last_approval)
    reporters = reports.values("reporter_id").distinct().count()
    if reporters < get_platform_settings().report_threshold:
        return False
    before = (post.status, post.moderation_state)
    post.status = PostStatus.PENDING_REVIEW
    post.moderation_state = ModerationState.UNDER_REVIEW
    post.submitted_at = timezone.now()
    post.revision += 1  # any AI verdict still in flight was for the post before the reports
    post.save(update_fields=["status", "moderation_state", "submitted_at", "revision", "updated_at"])
    ModerationDecision.objects.create(
        post=post,
        moderator=None,
        action=ModerationAction.REPORTS_THRESHOLD,
        reason=f"{reporters} distinct reports",
        from_status=before[0],
        to_status=post.status,
        from_moderation_state=before[1],
        to_moderation_state=post.moderation_state,
    )
    send_on_commit("media_revoke_post_urls", str(post.pk))
    return True
