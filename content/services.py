"""Every write to posts, polls and reports. One function per state change (DESIGN.md §3).

Each transition runs in a transaction, re-reads the post with ``content.locks.post_lock``, checks the
allowed from-states and raises ``InvalidTransition`` otherwise, and saves only the fields it changed
(``save(update_fields=…)``). Follow-up work is sent on commit, by actor name (``config.queueing``).
Moderation's rules come from the ``moderation.policy`` leaf; this module never imports moderation's
services or tasks (moderation builds on content).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from config.errors import (
    Conflict,
    InvalidTransition,
    MediaFailed,
    NotFound,
    ValidationFailed,
)
from config.queueing import send_on_commit
from content.locks import post_lock
from content.models import (
    ModerationState,
    NotificationType,
    Poll,
    PollOption,
    PollVote,
    Post,
    PostStatus,
    PostType,
    Report,
)
from content.notifications import post_transitioned
from content.selectors import (  # noqa: F401 (media's interface)
    STAFF_VIEW_PERMISSION,
    can_view_post,
    is_owner_or_staff,
    is_staff_viewer,
)
from media.models import Media, MediaKind, ProcessingStatus
from moderation import policy
from moderation.models import ModerationAction, ModerationDecision

logger = logging.getLogger(__name__)

MEDIA_POST_TYPES = {
    PostType.IMAGE: MediaKind.IMAGE,
    PostType.VIDEO: MediaKind.VIDEO,
    PostType.AUDIO: MediaKind.AUDIO,
}
EDITABLE_FIELDS = ("title", "body", "link_url")
# What _submit may change, whichever way the post goes.
SUBMIT_FIELDS = (
    "status",
    "moderation_state",
    "publish_requested",
    "revision",
    "submitted_at",
    "published_at",
    "updated_at",
)


# --- transitions' shared checks ------------------------------------------------------------------------


def _require_status(post: Post, allowed: Iterable[str], action: str) -> None:
    allowed = tuple(allowed)
    if post.status not in allowed:
        raise InvalidTransition(
            f"Cannot {action} a post that is {post.status}; allowed from: {', '.join(allowed)}.",
            extra={"status": post.status},
        )


# --- create / edit / delete ------------------------------------------------------------------------------


def _validate_content(*, type: str, title: str, body: str, link_url: str, poll: dict | None) -> None:
    errors: dict[str, list[str]] = {}
    if type == PostType.TEXT and not body.strip():
        errors["body"] = ["A text post needs a body."]
    if type == PostType.LINK:
        if not link_url:
            errors["link_url"] = ["A link post needs a link_url."]
        elif not link_url.lower().startswith(("http://", "https://")):
            errors["link_url"] = ["Only http and https links are allowed."]
    if type == PostType.POLL and not poll:
        errors["poll"] = ["A poll post needs a poll."]
    if type != PostType.POLL and poll:
        errors["poll"] = ["Only poll posts can have a poll."]
    if type == PostType.LIVESTREAM and not title.strip():
        errors["title"] = ["A livestream needs a title."]
    if errors:
        raise ValidationFailed(next(iter(errors.values()))[0], extra={"errors": errors})


def _validate_poll(poll: dict[str, Any]) -> tuple[str, bool, list[str]]:
    question = (poll.get("question") or "").strip()
    options = [str(o).strip() for o in poll.get("options") or []]
    errors: dict[str, list[str]] = {}
    if not question:
        errors["question"] = ["A poll needs a question."]
    if not 2 <= len(options) <= 10:
        errors["options"] = ["A poll needs between 2 and 10 options."]
    elif any(not o for o in options):
        errors["options"] = ["Poll options cannot be empty."]
    elif len({o.casefold() for o in options}) != len(options):
        errors["options"] = ["Poll options must be different from each other."]
    if errors:
        raise ValidationFailed(next(iter(errors.values()))[0], extra={"errors": {"poll": errors}})
    return question, bool(poll.get("multiple_choice", False)), options


@transaction.atomic
def post_create(
    *,
    author: AbstractBaseUser,
    type: str,
    title: str = "",
    body: str = "",
    link_url: str = "",
    poll: dict[str, Any] | None = None,
) -> Post:
    _validate_content(type=type, title=title, body=body, link_url=link_url, poll=poll)
    post = Post.objects.create(
        author=author,
        type=type,
        title=title,
        body=body,
        link_url=link_url,
        status=PostStatus.DRAFT,
        moderation_state=ModerationState.UNREVIEWED,
    )
    if poll:
        _poll_replace(post, poll)
    return post


def _poll_replace(post: Post, poll: dict[str, Any]) -> Poll:
    """Create the post's poll from validated input, replacing a draft's earlier one (which has no
    votes: polls only take votes once published)."""
    question, multiple, options = _validate_poll(poll)
    Poll.objects.filter(post=post).delete()
    poll_obj = Poll.objects.create(post=post, question=question, multiple_choice=multiple)
    PollOption.objects.bulk_create(
        PollOption(poll=poll_obj, text=text, position=i) for i, text in enumerate(options)
    )
    return poll_obj


@transaction.atomic
def post_update(*, post_id: UUID | str, actor: AbstractBaseUser, **changes: Any) -> Post:
    """Edit a draft. Published posts must be unpublished first, so that edits are reviewed again."""
    post = post_lock(post_id=post_id, actor=actor)
    _require_status(post, [PostStatus.DRAFT], "edit")
    unknown = set(changes) - set(EDITABLE_FIELDS) - {"poll"}
    if unknown:
        raise ValidationFailed(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    for field in EDITABLE_FIELDS:
        if field in changes:
            setattr(post, field, changes[field])
    poll = changes.get("poll")
    if poll is not None and post.type != PostType.POLL:
        raise ValidationFailed(
            "Only poll posts can have a poll.", extra={"errors": {"poll": ["Not a poll post."]}}
        )
    _validate_content(
        type=post.type,
        title=post.title,
        body=post.body,
        link_url=post.link_url,
        poll=poll or ({"existing": True} if post.type == PostType.POLL else None),
    )
    if poll is not None:
        _poll_replace(post, poll)
    post.revision += 1
    post.save(update_fields=[*EDITABLE_FIELDS, "revision", "updated_at"])
    return post


@transaction.atomic
def post_delete(*, post_id: UUID | str, actor: AbstractBaseUser) -> None:
    """Soft delete: gone from the API at once; media bytes and moderation evidence are kept."""
    post = post_lock(post_id=post_id, actor=actor)
    post.deleted_at = timezone.now()
    post.publish_requested = False
    post.save(update_fields=["deleted_at", "publish_requested", "updated_at"])
    send_on_commit("media_revoke_post_urls", str(post.pk))


# --- publishing ----------------------------------------------------------------------------------


def _live_media(post: Post) -> list[Media]:
    """Every attached medium, primary or not: nothing of a post goes public before it was processed
    (and so verified and shown to the prescreen)."""
    return list(Media.objects.attached().filter(post=post))


@transaction.atomic
def post_publish(*, post_id: UUID | str, actor: AbstractBaseUser) -> Post:
    """Publish a draft (DESIGN.md §3). Returns the post; its status tells the caller what happened:
    ``published``, ``pending_review`` (prescreen), or ``processing`` with ``publish_requested``."""
    post = post_lock(post_id=post_id, actor=actor)
    _require_status(post, [PostStatus.DRAFT, PostStatus.PROCESSING], "publish")
    media = _live_media(post)
    if any(m.processing_status == ProcessingStatus.FAILED for m in media):
        raise MediaFailed()
    if post.status == PostStatus.PROCESSING:
        if not post.publish_requested:
            post.publish_requested = True
            post.save(update_fields=["publish_requested", "updated_at"])
        return post
    if any(m.processing_status in (ProcessingStatus.PENDING, ProcessingStatus.PROCESSING) for m in media):
        # Media is waiting for the sweep (trigger off) or a worker: publish when it is ready.
        post.status = PostStatus.PROCESSING
        post.publish_requested = True
        post.save(update_fields=["status", "publish_requested", "updated_at"])
        post_transitioned(post)
        return post
    _check_publishable(post, media)
    return _submit(post)


def _check_publishable(post: Post, media: list[Media]) -> None:
    kind = MEDIA_POST_TYPES.get(post.type)
    if kind and not any(m.kind == kind and m.processing_status == ProcessingStatus.READY for m in media):
        raise ValidationFailed(
            f"A {post.type} post needs at least one ready {kind} before it can be published.",
            code="media_required",
        )
    _validate_content(
        type=post.type,
        title=post.title,
        body=post.body,
        link_url=post.link_url,
        poll={"existing": True} if hasattr(post, "poll") else None,
    )


def _submit(post: Post) -> Post:
    """Draft → published or pending_review, by moderation mode and author trust. The caller holds
    the post's lock and has checked the from-state (``post_publish``, ``post_media_settled``)."""
    now = timezone.now()
    post.publish_requested = False
    post.revision += 1
    notification, reason = None, ""
    if post.blocked_media:
        # Bytes a moderator already rejected: straight to quarantine, a human looks again.
        post.status = PostStatus.QUARANTINED
        post.moderation_state = ModerationState.FLAGGED
        post.submitted_at = now
        post.save(update_fields=SUBMIT_FIELDS)
        notification = NotificationType.POST_QUARANTINED
        reason = "A file of this post matches one the moderators blocked; a moderator will look at it."
    elif policy.needs_prescreen(post):
        post.status = PostStatus.PENDING_REVIEW
        post.moderation_state = ModerationState.UNDER_REVIEW
        post.submitted_at = now
        post.save(update_fields=SUBMIT_FIELDS)
        # The review actor (moderation.tasks), by name; if the broker is down the sweep queues it.
        send_on_commit("review_post", str(post.pk), post.revision)
    else:
        post.status = PostStatus.PUBLISHED
        post.published_at = now
        post.save(update_fields=SUBMIT_FIELDS)
        notification = NotificationType.POST_PUBLISHED
    post_transitioned(post, notification=notification, reason=reason)
    return post


@transaction.atomic
def post_unpublish(*, post_id: UUID | str, actor: AbstractBaseUser) -> Post:
    """Owner takes a published post back to draft; re-publishing runs the prescreen again."""
    post = post_lock(post_id=post_id, actor=actor)
    _require_status(post, [PostStatus.PUBLISHED], "unpublish")
    post.status = PostStatus.DRAFT
    post.moderation_state = ModerationState.UNREVIEWED
    post.published_at = None
    post.revision += 1
    post.save(update_fields=["status", "moderation_state", "published_at", "revision", "updated_at"])
    send_on_commit("media_revoke_post_urls", str(post.pk))
    post_transitioned(post)
    return post


@transaction.atomic
def post_media_settled(*, post_id: UUID | str) -> Post | None:
    """Called when a medium of the post finished (ready or failed), or by the sweep. When none is
    still pending or processing, the post leaves ``processing``: publish if asked, else back to draft."""
    try:
        post = post_lock(post_id=post_id)
    except NotFound:
        return None
    if post.status != PostStatus.PROCESSING:
        return post
    media = _live_media(post)
    if any(m.processing_status in (ProcessingStatus.PENDING, ProcessingStatus.PROCESSING) for m in media):
        return post
    post.status = PostStatus.DRAFT
    failed = [m for m in media if m.processing_status == ProcessingStatus.FAILED]
    if post.publish_requested and not failed:
        try:
            _check_publishable(post, media)
        except ValidationFailed as exc:
            post.publish_requested = False
            post.metadata = {**post.metadata, "publish_error": exc.detail}
        else:
            return _submit(post)
    if failed:
        post.publish_requested = False
        post.metadata = {**post.metadata, "publish_error": "A media file failed processing."}
    post.save(update_fields=["status", "publish_requested", "metadata", "updated_at"])
    post_transitioned(post)
    return post


# --- media-driven transitions ----------------------------------------------------------------------
# Media never writes Post: media.services and media.processing call these. Each locks the post with
# post_lock, checks the allowed from-states and saves only the fields it changes.

MEDIA_EDITABLE_STATUSES = (PostStatus.DRAFT, PostStatus.PROCESSING)


@transaction.atomic
def post_media_attached(*, post_id: UUID | str, is_primary: bool, blocked: bool) -> Post:
    """A medium was attached to the post. A primary medium puts a draft into ``processing`` (it
    cannot be published before the file is processed); ``blocked`` (the bytes are on the moderators'
    blocklist) sets ``blocked_media``, which sends the post to quarantine when it is published.

    Allowed from ``draft`` and ``processing``; else ``InvalidTransition``. NotFound if deleted.
    """
    post = post_lock(post_id=post_id)
    _require_status(post, MEDIA_EDITABLE_STATUSES, "attach media to")
    fields = []
    if blocked and not post.blocked_media:
        post.blocked_media = True
        fields.append("blocked_media")
    if is_primary and post.status == PostStatus.DRAFT:
        post.status = PostStatus.PROCESSING
        fields.append("status")
    if fields:
        post.save(update_fields=[*fields, "updated_at"])
    if "status" in fields:
        post_transitioned(post)
    return post


@transaction.atomic
def post_media_detached(*, post_id: UUID | str, blocked_remaining: bool) -> Post:
    """A medium was detached. ``blocked_remaining`` says whether another attached file is still on
    the blocklist; if not, the flag goes with the file. The post may now leave ``processing``: it is
    settled after commit. Allowed from ``draft`` and ``processing``; else ``InvalidTransition``."""
    post = post_lock(post_id=post_id)
    _require_status(post, MEDIA_EDITABLE_STATUSES, "remove media from")
    if post.blocked_media and not blocked_remaining:
        post.blocked_media = False
        post.save(update_fields=["blocked_media", "updated_at"])
    post_pk = post.pk
    transaction.on_commit(lambda: post_media_settled(post_id=post_pk))
    return post


@transaction.atomic
def post_processing_started(*, post_id: UUID | str) -> Post:
    """A medium of the post is queued again (an explicit retry): a draft goes back to ``processing``
    so that it is not published before the file is. Allowed from ``draft`` and ``processing`` (then a
    no-op); else ``InvalidTransition``."""
    post = post_lock(post_id=post_id)
    _require_status(post, MEDIA_EDITABLE_STATUSES, "process media of")
    if post.status == PostStatus.DRAFT:
        post.status = PostStatus.PROCESSING
        post.save(update_fields=["status", "updated_at"])
        post_transitioned(post)
    return post


@transaction.atomic
def post_media_blocked(*, post_id: UUID | str) -> Post | None:
    """The worker found an attached file on the moderators' blocklist (files sent straight to S3 are
    hashed only there): set ``blocked_media``. Returns None when the post was deleted meanwhile.
    Allowed from ``draft`` and ``processing`` (media is only processed then); else
    ``InvalidTransition``."""
    try:
        post = post_lock(post_id=post_id)
    except NotFound:
        return None
    _require_status(post, MEDIA_EDITABLE_STATUSES, "block media of")
    if not post.blocked_media:
        post.blocked_media = True
        post.save(update_fields=["blocked_media", "updated_at"])
    return post


# --- end of media-driven transitions -------------------------------------------------------------


# --- polls ---------------------------------------------------------------------------------------------


@transaction.atomic
def poll_vote(*, post_id: UUID | str, user: AbstractBaseUser, option_ids: list[int]) -> Poll:
    """Vote; a new vote replaces the caller's old one. Counts are recomputed in the same transaction."""
    post = post_lock(post_id=post_id, actor=user, owner_only=False)
    if post.type != PostType.POLL:
        raise NotFound("This post has no poll.")
    if post.status != PostStatus.PUBLISHED:
        raise InvalidTransition("Votes are only taken on published polls.")
    poll = Poll.objects.select_for_update().get(post=post)
    ids = list(dict.fromkeys(option_ids))
    if not ids:
        raise ValidationFailed("Choose at least one option.", extra={"errors": {"option_ids": ["Required."]}})
    if not poll.multiple_choice and len(ids) > 1:
        raise ValidationFailed(
            "This poll takes one choice.",
            extra={"errors": {"option_ids": ["Only one option may be chosen."]}},
        )
    options = {o.id: o for o in poll.options.all()}
    unknown = [i for i in ids if i not in options]
    if unknown:
        raise ValidationFailed(
            "Unknown option for this poll.", extra={"errors": {"option_ids": [f"Not an option: {unknown}."]}}
        )
    PollVote.objects.filter(poll=poll, user=user).delete()
    PollVote.objects.bulk_create(PollVote(poll=poll, option_id=i, user=user) for i in ids)
    _poll_recount(poll)
    return poll


def _poll_recount(poll: Poll) -> None:
    counts = dict(
        PollVote.objects.filter(poll=poll)
        .values("option_id")
        .annotate(n=Count("id"))
        .values_list("option_id", "n")
    )
    for option in poll.options.all():
        new = counts.get(option.id, 0)
        if option.votes != new:
            option.votes = new
            option.save(update_fields=["votes"])
    poll.total_voters = PollVote.objects.filter(poll=poll).values("user_id").distinct().count()
    poll.save(update_fields=["total_voters"])


# --- reports -------------------------------------------------------------------------------------------


@transaction.atomic
def report_create(
    *, post_id: UUID | str, reporter: AbstractBaseUser, reason: str, detail: str = ""
) -> Report:
    """Report a published post; ``report_threshold`` distinct reporters send it back to review
    (``post_hold_for_reports``, in the same transaction)."""
    post = post_lock(post_id=post_id, actor=reporter, owner_only=False)
    if post.status != PostStatus.PUBLISHED:
        raise InvalidTransition("Only published posts can be reported.")
    if post.author_id == reporter.pk:
        raise ValidationFailed("You cannot report your own post.", code="own_post")
    try:
        with transaction.atomic():
            report = Report.objects.create(post=post, reporter=reporter, reason=reason, detail=detail)
    except IntegrityError:
        raise Conflict("You have already reported this post.", code="already_reported") from None
    post_hold_for_reports(post_id=post.pk)
    return report


@transaction.atomic
def post_hold_for_reports(*, post_id: UUID | str) -> Post:
    """``published`` → ``pending_review``/``under_review`` once ``moderation.policy`` says enough
    distinct users reported the post since its last approval (DESIGN.md §3, §11); below that the post
    is returned unchanged. Writes the ``reports`` audit row and bumps the revision, so an AI verdict
    still in flight for the post before the reports is stale. Raises ``InvalidTransition`` unless the
    post is published, ``NotFound`` for a missing or deleted post."""
    post = post_lock(post_id=post_id)
    _require_status(post, [PostStatus.PUBLISHED], "hold for reports")
    reporters = policy.reporters_since_approval(post)
    if not policy.reports_hold_due(reporters):
        return post
    before = (post.status, post.moderation_state)
    post.status = PostStatus.PENDING_REVIEW
    post.moderation_state = ModerationState.UNDER_REVIEW
    post.submitted_at = timezone.now()
    post.revision += 1
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
    post_transitioned(
        post,
        notification=NotificationType.POST_HELD,
        reason="Several people reported this post; it is hidden until a moderator looks at it.",
    )
    return post
