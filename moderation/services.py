"""Moderation writes: the AI verdict, moderators' decisions, claims, reports' resolution, account
standing and internal notes (DESIGN.md §3, §6, §7, §11).

Every decision goes through one transition function here, whether it comes from the admin, the API
or a worker, and every human decision writes a ``ModerationDecision`` row. Each transition runs in
a transaction, locks the post with ``content.locks.post_lock``, checks its allowed from-states and
raises a typed error otherwise. The rules (score bands, prescreen, reasons) live in
``moderation.policy``; the review actor is sent by name, so this module never imports ``tasks``.
The reports-driven hold is content's ``post_hold_for_reports`` (reports are content's writes).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from config.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from config.locking import lock_rows
from config.queueing import send_on_commit
from content.locks import post_lock
from content.models import (
    REVISION_OPEN,
    ModerationState,
    NotificationType,
    Post,
    PostRevision,
    PostStatus,
    Report,
    ReportStatus,
    RevisionStatus,
)
from content.notifications import notify, post_transitioned
from content.services import revision_hold, revision_make_public, revision_reject, scheduled_go_public
from media.models import Media
from media.services import transcript_edit_cleared, transcript_edits_approved
from moderation import policy
from moderation.blocklist import matchable
from moderation.models import (
    AccountAction,
    AccountActionKind,
    AccountStanding,
    AccountStatus,
    AiReview,
    Appeal,
    AppealStatus,
    BlockedMedia,
    Decision,
    ModerationAction,
    ModerationDecision,
    ModeratorNote,
    PostClaim,
)
from moderation.platform import get_platform_settings


class AlreadyDecided(InvalidTransition):
    code = "already_decided"
    default_detail = "Another moderator already decided this post."


class ClaimedByOther(Conflict):
    code = "claimed"
    default_detail = "Another moderator is working on this post."


class ReasonRequired(ValidationFailed):
    """A decision the creator must be told the reason for (``policy.REASON_REQUIRED``) came without one."""

    code = "reason_required"
    default_detail = "Give the creator a reason for the rejection."


# --- prescreen ----------------------------------------------------------------------------------------


def send_ai_review(post: Post) -> None:
    """Queue the AI review of the post's current revision once the surrounding transaction commits
    (the ``review_post`` actor, by name). If the broker is down the post stays ``pending_review`` and
    the sweep queues the review later: nothing is published meanwhile (fail closed)."""
    send_on_commit("review_post", str(post.pk), post.revision)


def _waiting_revision(post: Post, revision: int) -> PostRevision | None:
    """The post's open revision numbered ``revision`` if it still waits for the AI, else None."""
    pending = post.pending_revision
    if pending is None or pending.number != revision or pending.status != RevisionStatus.PENDING:
        return None
    return pending


def waiting_for_ai(post: Post, revision: int) -> bool:
    """True while this revision of the post waits for its (first) AI verdict: a first publish
    (``pending_review``/``under_review``), a scheduled post being prescreened, or an edit of a
    published post (its pending ``PostRevision``). A verdict for another revision, for a post a human
    or the reports moved on, or a second verdict for the same revision (a duplicate or redelivered
    message) is stale and must change nothing."""
    if post.deleted_at is not None or post.revision != revision:
        return False
    if post.status == PostStatus.PENDING_REVIEW:
        waiting = post.moderation_state == ModerationState.UNDER_REVIEW
    elif post.status == PostStatus.SCHEDULED:
        waiting = post.moderation_state == ModerationState.UNDER_REVIEW and bool(
            _waiting_revision(post, revision)
        )
    elif post.status == PostStatus.PUBLISHED:
        waiting = bool(_waiting_revision(post, revision))
    else:
        waiting = False
    return waiting and not policy.revision_verdicts().filter(post=post, post_revision=revision).exists()


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
    """Record an AI review (``overall`` in [0, 1]) and apply its band (``policy.decision_for``).
    First publish: ``pending_review``/``under_review`` → ``published``/``clean``, stays for a human,
    or ``quarantined``/``flagged``. Scheduled post: cleared (public at ``publish_at``, at once if that
    has passed), held for a human, or quarantined. Edit of a published post: the revision becomes the
    public one, or (review and flag bands) is held for a human while the public keeps the previous one.
    A verdict for another revision, a post a human or the reports moved on, a deleted post or a
    duplicate is recorded as ``stale`` and changes nothing: the actor must not retry it, so that is
    not an error. Raises ``NotFound`` only when the post row is gone."""
    post = post_lock(post_id=post_id, include_deleted=True)
    decision = policy.decision_for(overall) if waiting_for_ai(post, revision) else Decision.STALE
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
    if decision == Decision.STALE:
        return review
    if decision == Decision.PUBLISH and policy.publish_needs_human(post):
        # A limited account (DESIGN.md §11): the AI's verdict is recorded as given, but the revision
        # waits for a human as if the AI had held it.
        decision = Decision.REVIEW
        post.metadata = {**post.metadata, "held_for": "account_limited"}
        post.save(update_fields=["metadata", "updated_at"])
    pending = _waiting_revision(post, revision)
    flagged = "The automatic check flagged it" + (f" ({', '.join(labels)})." if labels else ".")
    held = "The automatic check was unsure; a moderator will look at it."
    notification, reason = None, ""
    if post.status == PostStatus.PUBLISHED:  # an edit
        if decision == Decision.PUBLISH and pending is not None:
            post.save(update_fields=revision_make_public(post, pending))
        elif pending is not None:
            revision_hold(post, pending)
            post.save(update_fields=["submitted_at", "updated_at"])
            notification = NotificationType.POST_HELD
            reason = (
                flagged if decision == Decision.QUARANTINE else held
            ) + " The edit waits; the post stays."
    elif post.status == PostStatus.SCHEDULED and decision == Decision.PUBLISH:
        pending.status = RevisionStatus.CLEARED
        pending.decided_at = timezone.now()
        pending.save(update_fields=["status", "decided_at"])
        post.moderation_state = ModerationState.CLEAN
        fields = scheduled_go_public(post)
        post.save(update_fields=list(dict.fromkeys(["moderation_state", "updated_at", *fields])))
        notification = NotificationType.POST_PUBLISHED if fields else None
    elif decision == Decision.PUBLISH:
        post.status = PostStatus.PUBLISHED
        post.moderation_state = ModerationState.CLEAN
        post.published_at = post.published_at or timezone.now()
        fields = revision_make_public(post, pending) if pending is not None else []
        post.save(
            update_fields=list(
                dict.fromkeys(["status", "moderation_state", "published_at", "updated_at", *fields])
            )
        )
        notification = NotificationType.POST_PUBLISHED
    elif decision == Decision.QUARANTINE:
        if pending is not None:
            revision_hold(post, pending)
        post.status = PostStatus.QUARANTINED
        post.moderation_state = ModerationState.FLAGGED
        post.save(update_fields=["status", "moderation_state", "submitted_at", "updated_at"])
        notification, reason = NotificationType.POST_QUARANTINED, flagged
    else:  # held for a human
        if pending is not None:
            revision_hold(post, pending)
            post.save(update_fields=["submitted_at", "updated_at"])
        notification, reason = NotificationType.POST_HELD, held
    if decision == Decision.PUBLISH and post.status == PostStatus.PUBLISHED:
        # The held transcript edits this verdict scored (moderation.review), and no newer one.
        transcript_edits_approved(post_id=post.pk, edits=(raw or {}).get("transcript_edits") or {})
    post_transitioned(post, notification=notification, reason=reason, data={"ai_review_id": review.pk})
    return review


@transaction.atomic
def ai_live_frame_flagged(
    *,
    post_id: UUID | str,
    provider: str,
    model: str,
    scores: dict[str, float],
    overall: float,
    labels: list[str],
    duration_ms: float,
    raw: dict | None = None,
) -> AiReview:
    """A frame of a live stream scored at or above ``ai_revoke_threshold`` (DESIGN.md §13): a published
    post → ``quarantined``/``flagged`` with the AI review recorded (its bearer URLs revoked on commit).
    A post that is no longer published is recorded as ``stale`` and left alone. The caller ends the
    stream (``media.live.services.livestream_end``)."""
    post = post_lock(post_id=post_id, include_deleted=True)
    live = post.deleted_at is None and post.status == PostStatus.PUBLISHED
    review = AiReview.objects.create(
        post=post,
        post_revision=post.revision,
        provider=provider,
        model=model,
        scores=scores,
        overall_score=overall,
        labels=labels,
        decision=Decision.QUARANTINE if live else Decision.STALE,
        duration_ms=duration_ms,
        raw={**(raw or {}), "source": "livestream_frame"},
    )
    if live:
        post.status = PostStatus.QUARANTINED
        post.moderation_state = ModerationState.FLAGGED
        post.submitted_at = timezone.now()
        post.save(update_fields=["status", "moderation_state", "submitted_at", "updated_at"])
        send_on_commit("media_revoke_post_urls", str(post.pk))
        post_transitioned(
            post,
            notification=NotificationType.POST_QUARANTINED,
            reason="The AI flagged a frame of your livestream.",
        )
    return review


@transaction.atomic
def ai_review_record_failure(
    *,
    post_id: UUID | str,
    revision: int,
    provider: str,
    error: str,
    attempt: int,
    final: bool,
    duration_ms: float,
) -> AiReview:
    """Record a provider failure (an ``error`` AiReview). The post stays in ``pending_review`` (fail
    closed); when the retries are spent (``final``) a human decides, and the queue shows why
    (``metadata.ai_review_error``). Raises ``NotFound`` only when the post row is gone."""
    post = post_lock(post_id=post_id, include_deleted=True)
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


APPROVE_FROM = (PostStatus.PENDING_REVIEW, PostStatus.QUARANTINED, PostStatus.SCHEDULED)
REJECT_FROM = (
    PostStatus.PROCESSING,
    PostStatus.PENDING_REVIEW,
    PostStatus.SCHEDULED,
    PostStatus.PUBLISHED,
    PostStatus.QUARANTINED,
)
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
    """Lock the post for a moderator's decision and check who may make it, and from where."""
    post = post_lock(post_id=post_id, include_deleted=True)
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


def _require_reason(action: str, reason: str) -> None:
    if action in policy.REASON_REQUIRED and not reason.strip():
        raise ReasonRequired(extra={"errors": {"reason": ["Required for this decision."]}})


def _resolve_reports(post: Post, moderator: AbstractBaseUser | None, action: str, note: str) -> int:
    """Close the post's open reports with the decision that was made on it (DESIGN.md §11)."""
    status = ReportStatus.DISMISSED if action == ModerationAction.DISMISS_REPORTS else ReportStatus.RESOLVED
    return Report.objects.filter(post=post, status=ReportStatus.OPEN).update(
        status=status,
        resolution=action,
        resolved_by=moderator,
        resolved_at=timezone.now(),
        resolution_note=note[:2000],
    )


def _record(
    post: Post, moderator: AbstractBaseUser | None, action: str, reason: str, before: tuple[str, str]
) -> ModerationDecision:
    """The decision's audit row; the claim goes and the post's open reports are resolved by it."""
    PostClaim.objects.filter(post=post).delete()
    _resolve_reports(post, moderator, action, reason)
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
    """``pending_review``|``quarantined`` → ``published``/``approved`` (DESIGN.md §3, §7).

    ``expected_status`` is the status the moderator saw: if the post moved on meanwhile (another
    moderator, the AI), ``AlreadyDecided`` (409 ``already_decided``). Other moderators' live claims
    block the decision (``ClaimedByOther``, 409 ``claimed``) unless ``take_over``. Moderating one's own
    post is ``PermissionDenied``; other from-states are ``InvalidTransition``. Writes the audit row
    and releases the claim. ``post_reject`` and ``post_quarantine`` take the same arguments."""
    _require_reason(ModerationAction.APPROVE, reason)
    post = _lock_for_decision(
        post_id=post_id,
        moderator=moderator,
        allowed=APPROVE_FROM,
        action="approve",
        expected_status=expected_status,
        take_over=take_over,
    )
    before = (post.status, post.moderation_state)
    pending = post.pending_revision if post.pending_revision_id else None
    post.moderation_state = ModerationState.APPROVED
    if post.status == PostStatus.SCHEDULED:
        # Cleared: public at publish_at (at once if that has passed).
        if pending is not None:
            pending.status = RevisionStatus.CLEARED
            pending.decided_at = timezone.now()
            pending.save(update_fields=["status", "decided_at"])
        fields = scheduled_go_public(post)
        post.save(update_fields=list(dict.fromkeys(["moderation_state", "updated_at", *fields])))
    else:
        post.status = PostStatus.PUBLISHED
        post.published_at = post.published_at or timezone.now()
        fields = revision_make_public(post, pending) if pending is not None else []
        transcript_edits_approved(post_id=post.pk)  # the held transcript edits the page showed
        post.save(
            update_fields=list(
                dict.fromkeys(["status", "moderation_state", "published_at", "updated_at", *fields])
            )
        )
    _record(post, moderator, ModerationAction.APPROVE, reason, before)
    post_transitioned(post, notification=NotificationType.POST_APPROVED, reason=reason)
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
    """Any non-draft → ``rejected``/``rejected``; final. ``reason`` is required (``ReasonRequired``,
    400 ``reason_required``): it is shown to the creator. The media's bytes go on the blocklist.
    Errors as ``post_approve``."""
    _require_reason(ModerationAction.REJECT, reason)
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
    PostRevision.objects.filter(post=post, status__in=REVISION_OPEN).update(
        status=RevisionStatus.REJECTED, decided_at=timezone.now()
    )
    post.pending_revision = None
    post.save(
        update_fields=[
            "status",
            "moderation_state",
            "rejection_reason",
            "publish_requested",
            "pending_revision",
            "updated_at",
        ]
    )
    _block_post_media(post, moderator, reason)
    _record(post, moderator, ModerationAction.REJECT, reason, before)
    _strike(post, moderator, ModerationAction.REJECT, reason)
    send_on_commit("media_revoke_post_urls", str(post.pk))
    post_transitioned(post, notification=NotificationType.POST_REJECTED, reason=reason)
    return post


def _block_post_media(post: Post, moderator: AbstractBaseUser, reason: str) -> None:
    """Put every file of ``post`` on the blocklist: its sha256 and its PDQ hashes good enough to
    match (``moderation.blocklist.matchable``), so re-encoded or resized copies are blocked too."""
    hashes_by_sha: dict[str, list[str]] = {}
    for sha, pdq_hashes in (
        Media.objects.filter(post=post).exclude(sha256="").values_list("sha256", "pdq_hashes")
    ):
        hashes = hashes_by_sha.setdefault(sha, [])
        hashes += [h["hash"] for h in matchable(pdq_hashes) if h["hash"] not in hashes]
    for sha, hashes in hashes_by_sha.items():
        blocked, created = BlockedMedia.objects.get_or_create(
            sha256=sha,
            defaults={
                "reason": reason or "Rejected post",
                "source_post": post,
                "added_by": moderator,
                "pdq_hashes": hashes,
            },
        )
        if not created and set(hashes) - set(blocked.pdq_hashes):
            blocked.pdq_hashes = [*blocked.pdq_hashes, *(h for h in hashes if h not in blocked.pdq_hashes)]
            blocked.save(update_fields=["pdq_hashes", "updated_at"])


@transaction.atomic
def post_quarantine(
    *,
    post_id: UUID | str,
    moderator: AbstractBaseUser,
    reason: str = "",
    expected_status: str | None = None,
    take_over: bool = False,
) -> Post:
    """``published``|``pending_review`` → ``quarantined``/``flagged``. Errors as ``post_approve``."""
    _require_reason(ModerationAction.QUARANTINE, reason)
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
    _strike(post, moderator, ModerationAction.QUARANTINE, reason)
    send_on_commit("media_revoke_post_urls", str(post.pk))
    post_transitioned(post, notification=NotificationType.POST_QUARANTINED, reason=reason)
    return post


# --- decisions on an edit of a published post (DESIGN.md §9) ----------------------------------------------


def _lock_for_revision(
    *, post_id: UUID | str, revision_id: int, moderator: AbstractBaseUser, take_over: bool, action: str
) -> tuple[Post, PostRevision]:
    """Lock a published post for a decision on its held (or still pending) revision ``revision_id``.
    Another revision is waiting now, or none: ``AlreadyDecided`` (the creator edited again, or another
    moderator decided)."""
    post = _lock_for_decision(
        post_id=post_id,
        moderator=moderator,
        allowed=(PostStatus.PUBLISHED,),
        action=action,
        expected_status=PostStatus.PUBLISHED,
        take_over=take_over,
    )
    pending = post.pending_revision
    if pending is None or pending.pk != int(revision_id) or pending.status not in REVISION_OPEN:
        raise AlreadyDecided("This edit was already decided, or the creator replaced it with a newer one.")
    return post, pending


@transaction.atomic
def post_revision_approve(
    *,
    post_id: UUID | str,
    revision_id: int,
    moderator: AbstractBaseUser,
    reason: str = "",
    take_over: bool = False,
) -> PostRevision:
    """Approve the waiting edit ``revision_id`` of a published post: it becomes the public revision
    (``edited_at`` set). The post stays ``published``/its state becomes ``approved``. Errors as
    ``post_approve``; a revision that is not the waiting one is ``AlreadyDecided``. Audited."""
    _require_reason(ModerationAction.APPROVE, reason)
    post, revision = _lock_for_revision(
        post_id=post_id, revision_id=revision_id, moderator=moderator, take_over=take_over, action="approve"
    )
    before = (post.status, post.moderation_state)
    post.moderation_state = ModerationState.APPROVED
    post.save(update_fields=list(dict.fromkeys(["moderation_state", *revision_make_public(post, revision)])))
    decision = _record(post, moderator, ModerationAction.APPROVE, reason, before)
    decision.details = {"revision": revision.number}
    decision.save(update_fields=["details"])
    post_transitioned(
        post, notification=NotificationType.POST_APPROVED, reason=reason, data={"revision": revision.number}
    )
    return revision


@transaction.atomic
def post_revision_reject(
    *,
    post_id: UUID | str,
    revision_id: int,
    moderator: AbstractBaseUser,
    reason: str = "",
    take_over: bool = False,
) -> PostRevision:
    """Reject the waiting edit ``revision_id`` of a published post: it is dropped (media only it had
    are detached and their bytes blocklisted), the public revision stays, the creator may edit again.
    ``reason`` is required (``ReasonRequired``). Errors as ``post_revision_approve``. Audited."""
    _require_reason(ModerationAction.REJECT, reason)
    post, revision = _lock_for_revision(
        post_id=post_id, revision_id=revision_id, moderator=moderator, take_over=take_over, action="reject"
    )
    before = (post.status, post.moderation_state)
    public_ids = (
        set(post.public_revision.items.values_list("media_id", flat=True)) if post.public_revision else set()
    )
    new_media = Media.objects.filter(revision_items__revision=revision).exclude(pk__in=public_ids)
    for sha in set(new_media.exclude(sha256="").values_list("sha256", flat=True)):
        BlockedMedia.objects.get_or_create(
            sha256=sha,
            defaults={"reason": reason or "Rejected edit", "source_post": post, "added_by": moderator},
        )
    post.save(update_fields=revision_reject(post, revision))
    decision = _record(post, moderator, ModerationAction.REJECT, reason, before)
    decision.details = {"revision": revision.number}
    decision.save(update_fields=["details"])
    send_on_commit("media_revoke_post_urls", str(post.pk))
    # The edit was rejected, not the post (it stays published): the creator may edit again.
    post_transitioned(
        post,
        notification=NotificationType.POST_REJECTED,
        reason=reason,
        data={"revision": revision.number, "edit_only": True},
    )
    return revision


@transaction.atomic
def post_claim(*, post_id: UUID | str, moderator: AbstractBaseUser, take_over: bool = False) -> PostClaim:
    """Hold a queued post for ``claim_minutes`` so other moderators do not act on it meanwhile.
    Another moderator's live claim is ``ClaimedByOther`` unless ``take_over``; posts not waiting for
    review are ``InvalidTransition``; one's own post is ``PermissionDenied``."""
    post = post_lock(post_id=post_id)
    if post.author_id == moderator.pk:
        raise PermissionDenied("Moderators cannot moderate their own posts.")
    held_edit = bool(post.pending_revision_id) and post.pending_revision.status == RevisionStatus.HELD
    if post.status not in (PostStatus.PENDING_REVIEW, PostStatus.QUARANTINED) and not held_edit:
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
    """Drop the moderator's own claim on the post, if any (idempotent)."""
    PostClaim.objects.filter(post_id=post_id, moderator=moderator).delete()


# --- an edited transcript of a published post (issue 17) -------------------------------------------------


def _transcript_edit_held(media_id: UUID | str, edit: int) -> bool:
    """Whether ``edit`` is still the held edit of the transcript ``media_id``."""
    media = Media.objects.filter(pk=media_id).only("metadata").first()
    pending = (media.metadata.get("pending_edit") or {}) if media else {}
    return bool(pending) and int(pending.get("edit") or 0) == int(edit)


@transaction.atomic
def ai_transcript_rescore_apply(
    *,
    post_id: UUID | str,
    revision: int,
    provider: str,
    duration_ms: float,
    media_id: UUID | str | None = None,
    edit: int | None = None,
    attempt: int = 1,
    model: str = "",
    scores: dict[str, float] | None = None,
    overall: float | None = None,
    labels: list[str] | None = None,
    raw: dict | None = None,
    error: str = "",
    final: bool = True,
) -> AiReview:
    """Apply the AI's score of the held edit ``edit`` of a published post's transcript ``media_id``
    (issue 17; ``media.services.transcript_edit`` holds it, the public keeps the cleared captions):
    below ``ai_review_threshold`` the edit replaces the public captions
    (``media.services.transcript_edit_cleared``); the review band sends the post back to
    ``pending_review`` for a human, the revoke band quarantines it (``flagged``), and either way its
    media URLs are revoked and the edit stays held until a moderator approves the post
    (``post_approve`` applies it). A provider ``error`` is recorded; when ``final`` the post goes to a
    human (fail closed). A post no longer published, or an edit no longer held (replaced, applied,
    approved), records a ``stale`` row and changes nothing; a later edit of the post (a higher
    ``revision``) does not: the transcript edit is still held and still needs this score. Raises
    ``NotFound`` only when the post row is gone.

    The row is recorded under the post's ``revision`` (``revision`` when stale), which may be a
    pending edit of the post still waiting for its own prescreen, and marked ``raw.rescore``: it is
    no verdict on that revision unless it sent the post to a human (``raw.held_post``;
    ``policy.revision_reviews``)."""
    post = post_lock(post_id=post_id, include_deleted=True)
    current = (
        post.deleted_at is None
        and post.status == PostStatus.PUBLISHED
        and revision <= post.revision
        and (media_id is None or edit is None or _transcript_edit_held(media_id, edit))
    )
    if error:
        decision = Decision.ERROR
    elif not current:
        decision = Decision.STALE
    else:
        decision = policy.decision_for(float(overall))
    hold = current and (decision in (Decision.REVIEW, Decision.QUARANTINE) or bool(error and final))
    raw = {**(raw or {}), "final": final} if error else dict(raw or {})
    raw["rescore"] = policy.TRANSCRIPT_RESCORE
    if hold:
        raw["held_post"] = True
    review = AiReview.objects.create(
        post=post,
        # A hold speaks for the post as it is now, a pending edit of it included.
        post_revision=post.revision if current else revision,
        provider=provider,
        model=model,
        scores=scores or {},
        overall_score=overall,
        labels=labels or [],
        decision=decision,
        error=error[:2000],
        duration_ms=duration_ms,
        attempt=attempt,
        raw=raw,
    )
    if current and decision == Decision.PUBLISH and media_id is not None and edit is not None:
        transcript_edit_cleared(media_id=media_id, edit=edit)
    if hold:
        post.status = PostStatus.QUARANTINED if decision == Decision.QUARANTINE else PostStatus.PENDING_REVIEW
        post.moderation_state = (
            ModerationState.FLAGGED if decision == Decision.QUARANTINE else ModerationState.UNDER_REVIEW
        )
        post.submitted_at = timezone.now()
        if error:
            post.metadata = {**post.metadata, "ai_review_error": f"Edited transcript: {error}"[:500]}
        post.save(update_fields=["status", "moderation_state", "submitted_at", "metadata", "updated_at"])
        send_on_commit("media_revoke_post_urls", str(post.pk))
    return review


# --- mark sensitive, reports ------------------------------------------------------------------------------


ACCOUNT_NOTIFICATIONS = {
    AccountActionKind.WARN: "account_warned",
    AccountActionKind.LIMIT: "account_limited",
    AccountActionKind.SUSPEND: "account_suspended",
    AccountActionKind.RESTORE: "account_restored",
}


MARK_SENSITIVE_FROM = (PostStatus.PENDING_REVIEW, PostStatus.QUARANTINED, PostStatus.PUBLISHED)


@transaction.atomic
def post_mark_sensitive(
    *,
    post_id: UUID | str,
    moderator: AbstractBaseUser,
    reason: str = "",
    spoiler_text: str = "",
    expected_status: str | None = None,
    take_over: bool = False,
) -> Post:
    """``pending_review``|``quarantined``|``published`` → ``published``/``approved`` with
    ``sensitive=true`` and, if given, ``spoiler_text`` (≤ 500 chars; else the creator's own is kept):
    the post is public behind a content warning (DESIGN.md §11). Resolves the open reports (upheld).
    Errors as ``post_approve``; a spoiler text over 500 characters is ``ValidationFailed``."""
    spoiler_text = spoiler_text.strip()
    if len(spoiler_text) > 500:
        raise ValidationFailed(
            "The content warning is at most 500 characters.",
            extra={"errors": {"spoiler_text": ["At most 500 characters."]}},
        )
    post = _lock_for_decision(
        post_id=post_id,
        moderator=moderator,
        allowed=MARK_SENSITIVE_FROM,
        action="mark sensitive",
        expected_status=expected_status,
        take_over=take_over,
    )
    if post.status == PostStatus.PUBLISHED and post.sensitive and not spoiler_text:
        raise AlreadyDecided("This post is already marked sensitive.", extra={"status": post.status})
    before = (post.status, post.moderation_state)
    # What goes public is a revision (DESIGN.md §9): the waiting one of a held or quarantined post,
    # else the public one of a reported published post. It carries the warning, and so do the columns.
    pending = post.pending_revision if post.pending_revision_id else None
    target = pending if post.status != PostStatus.PUBLISHED and pending is not None else post.public_revision
    if target is not None:
        target.sensitive = True
        target.spoiler_text = spoiler_text or target.spoiler_text
        target.save(update_fields=["sensitive", "spoiler_text"])
    fields = ["status", "moderation_state", "sensitive", "spoiler_text", "published_at", "updated_at"]
    if post.status != PostStatus.PUBLISHED and pending is not None:
        fields += revision_make_public(post, pending)
    post.status = PostStatus.PUBLISHED
    post.moderation_state = ModerationState.APPROVED
    post.sensitive = True
    post.spoiler_text = spoiler_text or post.spoiler_text
    post.published_at = post.published_at or timezone.now()
    post.save(update_fields=list(dict.fromkeys(fields)))
    transcript_edits_approved(post_id=post.pk)  # the held transcript edits the review page showed
    _record(post, moderator, ModerationAction.MARK_SENSITIVE, reason, before)
    post_transitioned(post, notification=NotificationType.POST_MARKED_SENSITIVE, reason=reason)
    return post


@transaction.atomic
def reports_dismiss(*, post_id: UUID | str, moderator: AbstractBaseUser, note: str = "") -> Post:
    """Dismiss every open report of the post (DESIGN.md §11): the post stays. If the reports had
    hidden it (``pending_review`` by the reports' threshold), it goes back to ``published`` with the
    moderation state it had. Reporters whose reports are dismissed weigh less next time
    (``policy.report_weights``); the dismissal counts as an approval for ``policy.hold_threshold``.
    ``InvalidTransition`` when there is no open report; ``PermissionDenied`` on one's own post."""
    post = post_lock(post_id=post_id, include_deleted=True)
    if post.author_id == moderator.pk:
        raise PermissionDenied("Moderators cannot moderate their own posts.")
    if not Report.objects.filter(post=post, status=ReportStatus.OPEN).exists():
        raise AlreadyDecided("This post has no open reports.", extra={"status": post.status})
    before = (post.status, post.moderation_state)
    held = (
        ModerationDecision.objects.filter(post=post)
        .exclude(action__in=(ModerationAction.CLAIM, ModerationAction.RELEASE))
        .order_by("-created_at", "-pk")
        .first()
    )
    if (
        post.status == PostStatus.PENDING_REVIEW
        and held is not None
        and held.action == ModerationAction.REPORTS_THRESHOLD
    ):
        post.status = PostStatus.PUBLISHED
        post.moderation_state = held.from_moderation_state or ModerationState.APPROVED
        post.save(update_fields=["status", "moderation_state", "updated_at"])
        transcript_edits_approved(post_id=post.pk)  # the held transcript edits the review page showed
    _record(post, moderator, ModerationAction.DISMISS_REPORTS, note, before)
    return post


# --- account standing (DESIGN.md §11) -------------------------------------------------------------------


class AccountActionRefused(PermissionDenied):
    code = "account_action_refused"


ACCOUNT_TRANSITIONS = {
    AccountActionKind.WARN: (
        (AccountStatus.GOOD, AccountStatus.LIMITED, AccountStatus.SUSPENDED),
        None,  # the status stays
    ),
    AccountActionKind.LIMIT: ((AccountStatus.GOOD,), AccountStatus.LIMITED),
    AccountActionKind.SUSPEND: ((AccountStatus.GOOD, AccountStatus.LIMITED), AccountStatus.SUSPENDED),
    AccountActionKind.RESTORE: ((AccountStatus.LIMITED, AccountStatus.SUSPENDED), AccountStatus.GOOD),
}
STRIKING = frozenset({AccountActionKind.WARN})


def _standing_lock(user_id: int) -> AccountStanding:
    AccountStanding.objects.get_or_create(user_id=user_id)
    return lock_rows(AccountStanding.objects.all()).get(user_id=user_id)


def _strike(post: Post, moderator: AbstractBaseUser | None, action: str, reason: str) -> None:
    """A rejected or quarantined post counts a strike against its author, with an audit row."""
    standing = _standing_lock(post.author_id)
    standing.strikes += 1
    standing.save(update_fields=["strikes"])
    AccountAction.objects.create(
        user_id=post.author_id,
        moderator=moderator,
        action=AccountActionKind.STRIKE,
        reason=f"{action}: {reason}" if reason else action,
        from_status=standing.status,
        to_status=standing.status,
        strikes=standing.strikes,
        post=post,
    )


@transaction.atomic
def account_act(
    *,
    user_id: int,
    moderator: AbstractBaseUser,
    action: str,
    reason: str = "",
    post_id: UUID | str | None = None,
) -> AccountStanding:
    """Warn, limit, suspend or restore an account (``AccountActionKind``; DESIGN.md §11).

    - warn: a strike and a notification; the status stays.
    - limit (from good): every publish goes to a human, whatever the AI says (``policy.needs_prescreen``,
      ``policy.publish_needs_human``).
    - suspend (from good or limited): at request time the API answers 403 ``account_suspended``, login
      is refused, the account's posts are 404 to others and the media URLs Django serves stop working;
      on S3 each published post's URLs are revoked (``media_revoke_post_urls``, sent by name).
    - restore (from limited or suspended): back in good standing; strikes are kept.

    ``post_id`` names the post the action came from (kept in the audit row). Warn, limit and suspend
    need a ``reason`` (``ReasonRequired``; the user is told it). Acting on oneself, or a non-superuser
    on a staff account, is ``AccountActionRefused`` (403); another from-status is ``InvalidTransition``;
    an unknown user ``NotFound``."""
    if action not in ACCOUNT_TRANSITIONS:
        raise ValidationFailed(f"Unknown account action {action!r}.")
    if action != AccountActionKind.RESTORE and not reason.strip():
        raise ReasonRequired(
            "Give the account holder a reason.", extra={"errors": {"reason": ["Required for this action."]}}
        )
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise NotFound("No such account.")
    if user.pk == moderator.pk:
        raise AccountActionRefused("Moderators cannot act on their own account.")
    if (user.is_staff or user.is_superuser) and not moderator.is_superuser:
        raise AccountActionRefused("Only a superuser can act on a staff account.")
    allowed, to_status = ACCOUNT_TRANSITIONS[action]
    standing = _standing_lock(user.pk)
    if standing.status not in allowed:
        raise InvalidTransition(
            f"Cannot {action} an account that is {standing.status}.", extra={"status": standing.status}
        )
    before = standing.status
    if action in STRIKING:
        standing.strikes += 1
    if to_status is not None:
        standing.status = to_status
        standing.reason = reason
        standing.changed_at = timezone.now()
        standing.changed_by = moderator
    standing.save()
    AccountAction.objects.create(
        user=user,
        moderator=moderator,
        action=action,
        reason=reason,
        from_status=before,
        to_status=standing.status,
        strikes=standing.strikes,
        post_id=post_id,
    )
    source = Post.objects.filter(pk=post_id).first() if post_id else None
    notify(user=user.pk, type=ACCOUNT_NOTIFICATIONS[action], post=source, reason=reason)
    if action == AccountActionKind.SUSPEND:
        published = Post.objects.filter(author=user, status=PostStatus.PUBLISHED, deleted_at__isnull=True)
        for pk in published.values_list("pk", flat=True):
            send_on_commit("media_revoke_post_urls", str(pk))
    return standing


# --- internal notes ------------------------------------------------------------------------------------


@transaction.atomic
def note_add(
    *, author: AbstractBaseUser, text: str, post_id: UUID | str | None = None, user_id: int | None = None
) -> ModeratorNote:
    """An internal moderator note on a post or an account (admin only; never in the API). Exactly one
    of ``post_id``/``user_id``; empty text is ``ValidationFailed``; an unknown subject ``NotFound``."""
    text = text.strip()
    if not text:
        raise ValidationFailed("A note needs some text.", extra={"errors": {"text": ["Required."]}})
    if len(text) > 5000:
        raise ValidationFailed(
            "A note is at most 5000 characters.", extra={"errors": {"text": ["Too long."]}}
        )
    if (post_id is None) == (user_id is None):
        raise ValidationFailed("A note is about one post or one account.")
    if post_id is not None and not Post.objects.filter(pk=post_id).exists():
        raise NotFound("No such post.")
    if user_id is not None and not get_user_model().objects.filter(pk=user_id).exists():
        raise NotFound("No such account.")
    return ModeratorNote.objects.create(author=author, text=text, post_id=post_id, user_id=user_id)


# --- appeals (DESIGN.md §10) ---------------------------------------------------------------------------


class AppealNotAllowed(InvalidTransition):
    code = "appeal_not_allowed"
    default_detail = "This post has no reject or quarantine decision to appeal."


class AppealWindowClosed(InvalidTransition):
    code = "appeal_window_closed"
    default_detail = "The time to appeal this decision has passed."


class AlreadyAppealed(Conflict):
    code = "already_appealed"
    default_detail = "You already appealed this decision."


class OwnDecision(PermissionDenied):
    code = "own_decision"
    default_detail = "You made the decision under appeal; another moderator must decide it."


APPEALABLE_STATUSES = (PostStatus.REJECTED, PostStatus.QUARANTINED)
APPEAL_MAX_CHARS = 2000


def latest_decision(post: Post) -> ModerationDecision | AiReview | None:
    """The decision that put the post where it is now, if it is appealable: the newest human reject
    or quarantine, or the AI verdict that quarantined it, whichever is newer. None when the post is
    not rejected or quarantined, or got there another way (blocked media at publish)."""
    if post.status not in APPEALABLE_STATUSES:
        return None
    human = (
        ModerationDecision.objects.filter(
            post=post,
            action__in=(ModerationAction.REJECT, ModerationAction.QUARANTINE),
            to_status=post.status,
        )
        .order_by("-created_at", "-pk")
        .first()
    )
    ai = None
    if post.status == PostStatus.QUARANTINED:
        ai = (
            AiReview.objects.filter(post=post, decision=Decision.QUARANTINE)
            .order_by("-created_at", "-pk")
            .first()
        )
    candidates = [d for d in (human, ai) if d is not None]
    return max(candidates, key=lambda d: d.created_at) if candidates else None


@transaction.atomic
def appeal_create(*, post_id: UUID | str, author: AbstractBaseUser, text: str) -> Appeal:
    """The creator appeals the post's latest reject or quarantine (AI or human), once per decision,
    within ``APPEAL_WINDOW_DAYS`` of it. ``text``: 1–2000 characters. Errors: ``NotFound`` (not the
    caller's post), ``ValidationFailed`` (text), ``AppealNotAllowed`` (409, nothing to appeal),
    ``AppealWindowClosed`` (409), ``AlreadyAppealed`` (409)."""
    from django.conf import settings

    text = (text or "").strip()
    if not text or len(text) > APPEAL_MAX_CHARS:
        raise ValidationFailed(
            f"Say why in 1 to {APPEAL_MAX_CHARS} characters.",
            extra={"errors": {"text": [f"1 to {APPEAL_MAX_CHARS} characters."]}},
        )
    post = post_lock(post_id=post_id, actor=author)
    decision = latest_decision(post)
    if decision is None:
        raise AppealNotAllowed()
    if timezone.now() - decision.created_at > timedelta(days=settings.APPEAL_WINDOW_DAYS):
        raise AppealWindowClosed(
            f"Appeals are taken within {settings.APPEAL_WINDOW_DAYS} days of the decision.",
        )
    field = "decision" if isinstance(decision, ModerationDecision) else "ai_review"
    if Appeal.objects.filter(**{field: decision}).exists():
        raise AlreadyAppealed()
    return Appeal.objects.create(post=post, author=author, text=text, **{field: decision})


def _decided_by(appeal: Appeal) -> int | None:
    return appeal.decision.moderator_id if appeal.decision_id else None


@transaction.atomic
def appeal_decide(*, appeal_id: int, moderator: AbstractBaseUser, grant: bool, reason: str) -> Appeal:
    """Grant (the post goes back to ``published``/``approved``) or deny (final) an open appeal, with
    a ``reason`` the creator is told (required). Writes an ``appeal_grant``/``appeal_deny`` audit row
    and notifies the creator (notification, event, email). A moderator cannot decide an appeal
    against their own decision unless superuser (``OwnDecision``, 403), nor one on their own post.
    Errors: ``NotFound``, ``ReasonRequired`` (400), ``AlreadyDecided`` (409: decided meanwhile, or
    the post moved on)."""
    from config.errors import NotFound

    if not (reason or "").strip():
        raise ReasonRequired("Tell the creator why.", extra={"errors": {"reason": ["Required."]}})
    appeal = (
        lock_rows(Appeal.objects.all(), of=("self",)).select_related("decision").filter(pk=appeal_id).first()
    )
    if appeal is None:
        raise NotFound("Appeal not found.")
    if appeal.status != AppealStatus.OPEN:
        raise AlreadyDecided(f"This appeal was already {appeal.status}.", extra={"status": appeal.status})
    if _decided_by(appeal) == moderator.pk and not moderator.is_superuser:
        raise OwnDecision()
    post = post_lock(post_id=appeal.post_id, include_deleted=True)
    if post.author_id == moderator.pk:
        raise PermissionDenied("Moderators cannot decide appeals on their own posts.")
    if post.deleted_at or post.status not in APPEALABLE_STATUSES:
        raise AlreadyDecided(
            f"The post is now {post.status}; the appeal is moot.", extra={"status": post.status}
        )
    before = (post.status, post.moderation_state)
    if grant:
        # What goes public: the revision waiting (a quarantine holds it), else the public one the post
        # had, else the one the rejection dropped.
        revision = post.pending_revision if post.pending_revision_id else None
        if revision is None and post.public_revision_id is None:
            revision = (
                PostRevision.objects.filter(post=post, status=RevisionStatus.REJECTED)
                .order_by("-number")
                .first()
            )
        fields = revision_make_public(post, revision) if revision is not None else []
        transcript_edits_approved(post_id=post.pk)  # the held transcript edits the moderator saw
        post.status = PostStatus.PUBLISHED
        post.moderation_state = ModerationState.APPROVED
        post.published_at = post.published_at or timezone.now()
        post.rejection_reason = ""
        post.save(
            update_fields=list(
                dict.fromkeys(
                    ["status", "moderation_state", "published_at", "rejection_reason", "updated_at", *fields]
                )
            )
        )
        # The reject put the post's bytes on the blocklist; the appeal takes them off again.
        BlockedMedia.objects.filter(source_post=post).delete()
    appeal.status = AppealStatus.GRANTED if grant else AppealStatus.DENIED
    appeal.decided_by = moderator
    appeal.decision_reason = reason
    appeal.decided_at = timezone.now()
    appeal.save(update_fields=["status", "decided_by", "decision_reason", "decided_at"])
    audit = _record(
        post,
        moderator,
        ModerationAction.APPEAL_GRANT if grant else ModerationAction.APPEAL_DENY,
        reason,
        before,
    )
    audit.details = {"appeal_id": appeal.pk}
    audit.save(update_fields=["details"])
    if grant:
        post_transitioned(post)
    notify(
        user=post.author_id,
        type=NotificationType.APPEAL_DECIDED,
        post=post,
        appeal=appeal,
        reason=reason,
        data={"outcome": appeal.status, "status": post.status},
    )
    return appeal
