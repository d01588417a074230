"""Moderation rules without side effects (DESIGN.md §3, §6): the AI score bands, who goes through the
prescreen, which decisions need a reason, and when reports hold a published post.

A leaf module: it reads Django settings, the platform-settings accessor and models, and never imports
services or tasks. ``content`` (which ``moderation`` builds on) imports this module and nothing else of
moderation's logic, so no import cycle can form.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from content.models import Post, PostStatus, Report, ReportStatus
from moderation.models import (
    AccountStanding,
    AccountStatus,
    AiReview,
    Decision,
    ModerationAction,
    ModerationDecision,
    ModerationMode,
)
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

# ``AiReview.raw["rescore"]`` of a score of a held transcript edit (``ai_transcript_rescore_apply``),
# and ``raw["held_post"]`` when that score sent the post to a human.
TRANSCRIPT_RESCORE = "transcript_edit"


def revision_reviews() -> QuerySet[AiReview]:
    """The AI reviews that speak for the post revision they name (``AiReview.post_revision``): the
    sweep (any of them) and ``waiting_for_ai`` (``revision_verdicts``) read these. A transcript
    rescore is recorded under ``post.revision`` but judges one held transcript edit, not that
    revision, which may be an edit still waiting for its own prescreen: it counts only when it sent
    the post to a human (``raw.held_post``), because then the whole post, with any pending revision,
    waits for that human and not for the AI."""
    return AiReview.objects.filter(~Q(raw__has_key="rescore") | Q(raw__held_post=True))


def revision_verdicts() -> QuerySet[AiReview]:
    """The reviews after which a revision no longer waits for the AI: a verdict on it
    (``AI_VERDICTS``) or a transcript rescore that sent the post to a human."""
    return revision_reviews().filter(Q(decision__in=AI_VERDICTS) | Q(raw__held_post=True))


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
    A limited account (DESIGN.md §11): always. ``reactive_only``: only for authors not yet trusted
    (account younger than ``trust_min_account_age_days``, or fewer than ``trust_min_approved_posts``
    published posts), as PeerTube and Discourse do; both trust settings 0 means never."""
    ps = get_platform_settings()
    if ps.moderation_mode == ModerationMode.AI_PRESCREEN or is_limited(post.author_id):
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


# --- account standing -----------------------------------------------------------------------------------


def account_status(user_id: int | None) -> str:
    """The account's ``AccountStatus`` (``good`` without a standing row). One indexed query."""
    if user_id is None:
        return AccountStatus.GOOD
    status = AccountStanding.objects.filter(user_id=user_id).values_list("status", flat=True).first()
    return status or AccountStatus.GOOD


def is_suspended(user_id: int | None) -> bool:
    """Whether the account is suspended now (DESIGN.md §11: checked at request time)."""
    return account_status(user_id) == AccountStatus.SUSPENDED


def is_limited(user_id: int | None) -> bool:
    """Whether every publish of the account goes to a human, whatever the AI says."""
    return account_status(user_id) == AccountStatus.LIMITED


# --- reports: who weighs how much (DESIGN.md §11) --------------------------------------------------------
#
# The attack this answers: three accounts registered a second earlier hid any published post at once,
# and three more hid it again right after a moderator approved it. So a report's weight depends on its
# reporter, and a post a moderator approved needs more, and fresh, weight to be hidden again:
#
# - accounts younger than ``REPORT_MIN_ACCOUNT_AGE_HOURS`` (default 24), and suspended accounts, weigh 0;
# - a reporter whose decided reports were mostly not upheld (dismissed, or the post approved) weighs 0
#   once they have ``REPORT_TRACK_RECORD_MIN`` (default 3) such reports, 0.5 before that; limited
#   accounts weigh 0.5; everyone else 1;
# - only open reports made after the post's last approval (approve, mark sensitive, dismiss reports)
#   count, and the threshold doubles with each such approval of the post (``report_threshold`` ×
#   2^approvals, at most ``MAX_APPROVAL_DOUBLINGS`` doublings).
#
# Every report still puts the post in the queue: the weight decides only whether it is hidden meanwhile.

MAX_APPROVAL_DOUBLINGS = 3
# A moderator looked and let the post stay public: each of these counts as an approval here.
APPROVAL_ACTIONS = (
    ModerationAction.APPROVE,
    ModerationAction.MARK_SENSITIVE,
    ModerationAction.DISMISS_REPORTS,
)
NOT_UPHELD_RESOLUTIONS = (ModerationAction.APPROVE, ModerationAction.DISMISS_REPORTS)


def reporter_weight(
    *, joined: datetime, status: str | None, upheld: int, not_upheld: int, now: datetime | None = None
) -> float:
    """One reporter's weight in [0, 1] from account age, standing and track record (rules above).
    ``upheld``/``not_upheld`` count the reporter's earlier decided reports on other posts."""
    now = now or timezone.now()
    if status == AccountStatus.SUSPENDED:
        return 0.0
    if joined > now - timedelta(hours=settings.REPORT_MIN_ACCOUNT_AGE_HOURS):
        return 0.0
    if not_upheld > upheld:
        return 0.0 if not_upheld >= settings.REPORT_TRACK_RECORD_MIN else 0.5
    if status == AccountStatus.LIMITED:
        return 0.5
    return 1.0


def _last_approval(post: Post) -> datetime | None:
    return (
        ModerationDecision.objects.filter(post=post, action__in=APPROVAL_ACTIONS)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )


def hold_threshold(post: Post) -> float:
    """The report weight that hides ``post``: ``report_threshold`` doubled for each moderator approval
    (``APPROVAL_ACTIONS``), at most ``MAX_APPROVAL_DOUBLINGS`` times."""
    approvals = ModerationDecision.objects.filter(post=post, action__in=APPROVAL_ACTIONS).count()
    return get_platform_settings().report_threshold * 2 ** min(approvals, MAX_APPROVAL_DOUBLINGS)


def report_weights(post: Post) -> dict[int, float]:
    """``{reporter_id: weight}`` of the post's open reports made since its last approval. Two queries:
    the reports with their reporters, and one aggregate of those reporters' earlier decided reports."""
    reports = post.reports.filter(status=ReportStatus.OPEN)
    last_approval = _last_approval(post)
    if last_approval:
        reports = reports.filter(created_at__gt=last_approval)
    rows = list(reports.values_list("reporter_id", "reporter__date_joined", "reporter__standing__status"))
    if not rows:
        return {}
    history = {
        r["reporter_id"]: r
        for r in Report.objects.filter(reporter_id__in=[row[0] for row in rows])
        .exclude(post=post)
        .exclude(status=ReportStatus.OPEN)
        .values("reporter_id")
        .annotate(
            not_upheld=Count(
                "pk",
                filter=Q(status=ReportStatus.DISMISSED) | Q(resolution__in=NOT_UPHELD_RESOLUTIONS),
            ),
            decided=Count("pk"),
        )
    }
    now = timezone.now()
    weights = {}
    for reporter_id, joined, status in rows:
        h = history.get(reporter_id, {"not_upheld": 0, "decided": 0})
        weights[reporter_id] = reporter_weight(
            joined=joined,
            status=status,
            upheld=h["decided"] - h["not_upheld"],
            not_upheld=h["not_upheld"],
            now=now,
        )
    return weights


def reports_hold_due(weight: float, threshold: float) -> bool:
    """Whether reports of that total weight hide a published post (``hold_threshold``)."""
    return weight >= threshold


def publish_needs_human(post: Post) -> bool:
    """A clean AI verdict still waits for a human when the author is limited (DESIGN.md §11)."""
    return is_limited(post.author_id)
