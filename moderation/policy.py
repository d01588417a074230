"""Moderation rules without side effects (DESIGN.md §3, §6): the AI score bands, who goes through the
prescreen, which decisions need a reason, and when reports hold a published post.

A leaf module: it reads Django settings, the platform-settings accessor and models, and never imports
services or tasks. ``content`` (which ``moderation`` builds on) imports this module and nothing else of
moderation's logic, so no import cycle can form.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone

from content.models import Post, PostStatus
from moderation.models import Decision, ModerationAction, ModerationDecision, ModerationMode
from moderation.platform import get_platform_settings


class Band(models.TextChoices):
    """Where an AI overall score falls against the platform's two thresholds."""

    CLEAN = "clean", "Clean"
    REVIEW = "review", "Review"
    FLAG = "flag", "Flag"
    NONE = "none", "No score"


# The AI's verdict for each band, and back (the accuracy report groups verdicts by band).
DECISION_FOR_BAND = {
    Band.CLEAN: Decision.PUBLISH,
    Band.REVIEW: Decision.REVIEW,
    Band.FLAG: Decision.QUARANTINE,
}
BAND_FOR_DECISION = {decision: band for band, decision in DECISION_FOR_BAND.items()}
AI_VERDICTS = tuple(DECISION_FOR_BAND.values())  # the AiReview decisions that are a verdict on a revision
SCORED_BANDS = tuple(DECISION_FOR_BAND)

# Decisions the creator must be told the reason for (DESIGN.md §10: notifications carry it).
REASON_REQUIRED = frozenset({ModerationAction.REJECT})


def band_for(score: float | None) -> str:
    """The band of an overall AI score in [0, 1]: ``flag`` at or above ``ai_revoke_threshold``,
    ``review`` at or above ``ai_review_threshold``, else ``clean``; ``none`` without a score.
    Thresholds come from platform settings (DESIGN.md §6: defaults 0.3 and 0.7)."""
    if score is None:
        return Band.NONE
    ps = get_platform_settings()
    if score >= ps.ai_revoke_threshold:
        return Band.FLAG
    if score >= ps.ai_review_threshold:
        return Band.REVIEW
    return Band.CLEAN


def decision_for(score: float) -> str:
    """The AI's verdict (``Decision``) for an overall score: publish, hold for a human, or quarantine."""
    return DECISION_FOR_BAND[band_for(score)]


def band_q(band: str, *, field: str = "ai_score") -> Q:
    """A filter matching rows whose ``field`` (a score annotation or column) falls in ``band``, the
    same bands as ``band_for``. Raises ``ValueError`` for a name that is not a ``Band``."""
    if band == Band.NONE:
        return Q(**{f"{field}__isnull": True})
    ps = get_platform_settings()
    if band == Band.CLEAN:
        return Q(**{f"{field}__lt": ps.ai_review_threshold})
    if band == Band.REVIEW:
        return Q(**{f"{field}__gte": ps.ai_review_threshold, f"{field}__lt": ps.ai_revoke_threshold})
    if band == Band.FLAG:
        return Q(**{f"{field}__gte": ps.ai_revoke_threshold})
    raise ValueError(f"unknown score band: {band!r}")


def filter_by_band(qs: QuerySet, band: str | None, *, field: str = "ai_score") -> QuerySet:
    """``qs`` narrowed to one band; unchanged for an empty or unknown band (a hand-edited URL)."""
    if band not in Band.values:
        return qs
    return qs.filter(band_q(band, field=field))


def band_choices() -> list[tuple[str, str]]:
    """The bands with their current thresholds, for filters and legends."""
    ps = get_platform_settings()
    review, revoke = ps.ai_review_threshold, ps.ai_revoke_threshold
    return [
        (Band.CLEAN, f"Clean (< {review:g})"),
        (Band.REVIEW, f"Review ({review:g}–{revoke:g})"),
        (Band.FLAG, f"Flag (≥ {revoke:g})"),
        (Band.NONE, "No score"),
    ]


def needs_prescreen(post: Post) -> bool:
    """Whether publishing ``post`` goes through the AI prescreen. ``ai_prescreen`` mode: always.
    ``reactive_only``: only for authors not yet trusted (account younger than
    ``trust_min_account_age_days``, or fewer than ``trust_min_approved_posts`` published posts), as
    PeerTube and Discourse do; both trust settings 0 means never."""
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


def reporters_since_approval(post: Post) -> int:
    """Distinct users who reported ``post`` since a moderator last approved it (all time if never)."""
    last_approval = (
        ModerationDecision.objects.filter(post=post, action=ModerationAction.APPROVE)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    reports = post.reports.all()
    if last_approval:
        reports = reports.filter(created_at__gt=last_approval)
    return reports.values("reporter_id").distinct().count()


def reports_hold_due(reporters: int) -> bool:
    """Whether that many distinct reporters send a published post back to review
    (``report_threshold``, DESIGN.md §3)."""
    return reporters >= get_platform_settings().report_threshold
