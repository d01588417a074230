"""Moderation reads: the review queue and the AI accuracy report (DESIGN.md §7)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import (
    Count,
    F,
    FloatField,
    IntegerField,
    JSONField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce

from content.models import Post, PostRevision, PostStatus, Report, RevisionStatus
from media.models import Media, MediaKind
from moderation import policy
from moderation.models import AiReview, ModerationAction, ModerationDecision

QUEUE_STATUSES = (PostStatus.PENDING_REVIEW, PostStatus.QUARANTINED)
# Posts whose submitted revision the prescreen held for a human while the post stays as it is: an
# edit of a published post (the public keeps the previous revision) or a scheduled post.
HELD_REVISION_STATUSES = (PostStatus.PUBLISHED, PostStatus.SCHEDULED)
QUEUE_Q = Q(status__in=QUEUE_STATUSES) | Q(
    status__in=HELD_REVISION_STATUSES, pending_revision__status=RevisionStatus.HELD
)


def held_revision(post: Post) -> PostRevision | None:
    """The revision a moderator decides on for a queued post that stays published or scheduled
    (DESIGN.md §9); None when the decision is on the post itself."""
    if post.status not in HELD_REVISION_STATUSES or not post.pending_revision_id:
        return None
    revision = post.pending_revision
    return revision if revision.status == RevisionStatus.HELD else None


def in_queue(post: Post) -> bool:
    """Whether ``post`` waits for a human (the same rule as ``review_queue``)."""
    return post.status in QUEUE_STATUSES or held_revision(post) is not None


@dataclass
class FieldDiff:
    field: str
    ops: list[tuple[str, str]]  # (equal|delete|insert, text) runs, words with their spacing


@dataclass
class RevisionDiff:
    """What a waiting revision changes against the public one, for the review queue."""

    public: PostRevision | None
    pending: PostRevision
    fields: list[FieldDiff] = field(default_factory=list)
    media_added: list = field(default_factory=list)
    media_removed: list = field(default_factory=list)
    alt_changed: list[tuple] = field(default_factory=list)  # (media id, before, after)


def _word_ops(before: str, after: str) -> list[tuple[str, str]]:
    import re
    from difflib import SequenceMatcher

    a, b = re.findall(r"\S+\s*|\s+", before), re.findall(r"\S+\s*|\s+", after)
    ops: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            ops.append(("equal", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            ops.append(("delete", "".join(a[i1:i2])))
        if j2 > j1:
            ops.append(("insert", "".join(b[j1:j2])))
    return ops


def revision_diff(post: Post) -> RevisionDiff | None:
    """The diff of the post's waiting revision (pending or held) against its public one, field by
    field (word runs) and media by media; None when no revision waits or nothing was public yet."""
    pending = post.pending_revision if post.pending_revision_id else None
    public = post.public_revision if post.public_revision_id else None
    if pending is None or public is None:
        return None
    diff = RevisionDiff(public=public, pending=pending)
    for name in ("title", "body", "link_url", "sensitive", "spoiler_text"):
        before, after = str(getattr(public, name)), str(getattr(pending, name))
        if before != after:
            diff.fields.append(FieldDiff(name, _word_ops(before, after)))
    old = {i.media_id: i.description for i in public.items.all()}
    new = {i.media_id: i.description for i in pending.items.all()}
    media = {m.pk: m for m in Media.objects.filter(pk__in=set(old) | set(new))}
    diff.media_added = [media[m] for m in new if m not in old]
    diff.media_removed = [media[m] for m in old if m not in new]
    diff.alt_changed = [(media[m], old[m], new[m]) for m in new if m in old and old[m] != new[m]]
    return diff


HUMAN_FINAL = (ModerationAction.APPROVE, ModerationAction.REJECT)
ACCURACY_MAX_ROWS = 50_000
QUEUE_ORDERING = (F("submitted_at").asc(nulls_first=True), "created_at", "pk")


def _group_count(qs: QuerySet, by: str) -> Coalesce:
    """A correlated ``COUNT(*)`` as a scalar subquery: no join, so counts never multiply each other."""
    return Coalesce(
        Subquery(
            qs.order_by().values(by).annotate(n=Count("pk")).values("n")[:1], output_field=IntegerField()
        ),
        Value(0),
    )


def _latest_scored_review() -> QuerySet[AiReview]:
    return AiReview.objects.filter(post=OuterRef("pk"), overall_score__isnull=False).order_by(
        "-created_at", "-pk"
    )


def queue_aliases(qs: QuerySet[Post]) -> QuerySet[Post]:
    """What the queue filters and sorts on, as aliases: computed in WHERE/ORDER BY only, never selected."""
    return qs.alias(
        ai_score=Subquery(_latest_scored_review().values("overall_score")[:1], output_field=FloatField()),
        report_count=_group_count(Report.objects.filter(post=OuterRef("pk")), "post"),
        waiting_since=Coalesce("submitted_at", "created_at"),
    )


def with_review_annotations(qs: QuerySet[Post]) -> QuerySet[Post]:
    """Everything a queue row shows, in the row's own query: author history, latest scored AI review,
    report count, the claim; the preview media come with one prefetch. Apply it to one page of rows:
    the subqueries then run for those rows only."""
    latest_scored = _latest_scored_review()
    latest_any = AiReview.objects.filter(post=OuterRef("pk")).order_by("-created_at", "-pk")
    preview_media = (
        Media.objects.attached()
        .filter(is_primary=True, kind__in=[MediaKind.IMAGE, MediaKind.VIDEO])
        .only("id", "post_id", "owner_id", "kind", "variants", "position", "created_at")
    )
    return (
        qs.select_related("author", "claim__moderator", "pending_revision")
        .annotate(
            author_posts=_group_count(Post.objects.filter(author=OuterRef("author")), "author"),
            author_rejected=_group_count(
                Post.objects.filter(author=OuterRef("author"), status=PostStatus.REJECTED), "author"
            ),
            report_count=_group_count(Report.objects.filter(post=OuterRef("pk")), "post"),
            ai_score=Subquery(latest_scored.values("overall_score")[:1], output_field=FloatField()),
            ai_labels=Subquery(latest_scored.values("labels")[:1], output_field=JSONField()),
            ai_scores=Subquery(latest_scored.values("scores")[:1], output_field=JSONField()),
            ai_decision=Subquery(latest_any.values("decision")[:1]),
            waiting_since=Coalesce("submitted_at", "created_at"),
        )
        .prefetch_related(Prefetch("media", queryset=preview_media, to_attr="preview_media"))
    )


def review_queue(model: type[Post] = Post) -> QuerySet[Post]:
    """Posts waiting for a human, oldest first: ``pending_review`` and ``quarantined``, and published
    or scheduled posts whose submitted revision is held (an edit: the queue shows its diff); not deleted.
    Rows carry only the filter/sort aliases; ``queue_page`` loads what a page shows."""
    qs = model.objects.alive().filter(QUEUE_Q)
    return queue_aliases(qs).order_by(*QUEUE_ORDERING)


def queue_page(rows) -> list[Post]:
    """The rows of one page, in the same order, with everything the queue shows."""
    rows = list(rows)
    if not rows:
        return []
    ids = [row.pk for row in rows]
    model = type(rows[0])
    loaded = {p.pk: p for p in with_review_annotations(model.objects.filter(pk__in=ids))}
    return [loaded[pk] for pk in ids if pk in loaded]


def top_labels(labels: list | None, scores: dict | None, n: int = 3) -> list[tuple[str, float | None]]:
    """The provider's labels if it gave any, else the highest-scoring categories."""
    scores = scores if isinstance(scores, dict) else {}
    if labels:
        return [(str(label), scores.get(label)) for label in labels[:n]]
    ranked = sorted(
        ((k, v) for k, v in scores.items() if isinstance(v, int | float)), key=lambda kv: kv[1], reverse=True
    )
    return ranked[:n]


# --- AI accuracy -----------------------------------------------------------------------------------------


THRESHOLDS = tuple(round(t / 10, 1) for t in range(1, 10))


@dataclass
class WhatIf:
    threshold: float
    approved_at_or_above: int  # would wait for a human (as review threshold) / be quarantined (as revoke)
    rejected_below: int  # would have been published (as review threshold)
    rejected_at_or_above: int  # would have been quarantined at once (as revoke threshold)


@dataclass
class Accuracy:
    start: datetime
    end: datetime
    decided: int = 0  # posts with a final human decision in the period
    without_ai: int = 0  # of those, posts the AI never gave a verdict on
    bands: dict[str, dict[str, int]] = field(default_factory=dict)  # band -> {approve: n, reject: n}
    false_positives: int = 0
    false_negatives: int = 0
    approved: int = 0
    rejected: int = 0
    what_if: list[WhatIf] = field(default_factory=list)
    truncated: bool = False

    @property
    def false_positive_rate(self) -> float | None:
        """Of the posts humans approved, the share the AI held or flagged."""
        return self.false_positives / self.approved if self.approved else None

    @property
    def false_negative_rate(self) -> float | None:
        """Of the posts humans rejected, the share the AI had called clean."""
        return self.false_negatives / self.rejected if self.rejected else None


def ai_accuracy(*, start: datetime, end: datetime, max_rows: int = ACCURACY_MAX_ROWS) -> Accuracy:
    """Compare the AI's verdict (its latest non-stale one) with moderators' final decision (the latest
    approve/reject) for posts finally decided in ``[start, end)``: one query, one pass over the rows."""
    final = ModerationDecision.objects.filter(post=OuterRef("pk"), action__in=HUMAN_FINAL).order_by(
        "-created_at", "-pk"
    )
    verdict = AiReview.objects.filter(post=OuterRef("pk"), decision__in=policy.AI_VERDICTS).order_by(
        "-created_at", "-pk"
    )
    rows = list(
        Post.objects.annotate(
            final_action=Subquery(final.values("action")[:1]),
            final_at=Subquery(final.values("created_at")[:1]),
        )
        .filter(final_at__gte=start, final_at__lt=end)
        .annotate(
            ai_decision=Subquery(verdict.values("decision")[:1]),
            ai_score=Subquery(verdict.values("overall_score")[:1], output_field=FloatField()),
        )
        .order_by()
        .values_list("final_action", "ai_decision", "ai_score")[: max_rows + 1]
    )
    report = Accuracy(start=start, end=end, truncated=len(rows) > max_rows)
    rows = rows[:max_rows]
    bands: Counter[tuple[str, str]] = Counter()
    scored: list[tuple[str, float]] = []
    for action, ai_decision, score in rows:
        report.decided += 1
        if ai_decision is None:
            report.without_ai += 1
            continue
        band = policy.BAND_FOR_DECISION[ai_decision]
        bands[(band, action)] += 1
        if action == ModerationAction.APPROVE:
            report.approved += 1
            report.false_positives += band != policy.Band.CLEAN
        else:
            report.rejected += 1
            report.false_negatives += band == policy.Band.CLEAN
        if score is not None:
            scored.append((action, score))
    report.bands = {
        band: {a: bands[(band, a)] for a in (ModerationAction.APPROVE, ModerationAction.REJECT)}
        for band in policy.SCORED_BANDS
    }
    for t in THRESHOLDS:
        report.what_if.append(
            WhatIf(
                threshold=t,
                approved_at_or_above=sum(1 for a, s in scored if a == ModerationAction.APPROVE and s >= t),
                rejected_below=sum(1 for a, s in scored if a == ModerationAction.REJECT and s < t),
                rejected_at_or_above=sum(1 for a, s in scored if a == ModerationAction.REJECT and s >= t),
            )
        )
    return report
