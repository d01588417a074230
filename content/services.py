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
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from config.errors import (
    Conflict,
    InvalidTransition,
    MediaFailed,
    NotFound,
    ValidationFailed,
)
from config.locking import lock_rows
from config.queueing import send_on_commit
from content.locks import post_lock
from content.models import (
    REVISION_OPEN,
    ModerationState,
    NotificationType,
    Poll,
    PollOption,
    PollVote,
    Post,
    PostRevision,
    PostRevisionMedia,
    PostStatus,
    PostType,
    Report,
    RevisionStatus,
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
from moderation.policy import is_suspended  # noqa: F401 (media's interface)

logger = logging.getLogger(__name__)

MEDIA_POST_TYPES = {
    PostType.IMAGE: MediaKind.IMAGE,
    PostType.VIDEO: MediaKind.VIDEO,
    PostType.AUDIO: MediaKind.AUDIO,
}
EDITABLE_FIELDS = ("title", "body", "link_url", "sensitive", "spoiler_text")
# The editable content a PostRevision holds (the media set and alt texts are its items).
REVISION_FIELDS = EDITABLE_FIELDS
# What _submit may change, whichever way the post goes.
SUBMIT_FIELDS = (
    "status",
    "moderation_state",
    "publish_requested",
    "revision",
    "submitted_at",
    "published_at",
    "public_revision",
    "pending_revision",
    "edited_at",
    "scheduled_at",
    "updated_at",
)
# PostRevision.link_preview while the ``links`` worker builds the revision's card (DESIGN.md §9).
PREVIEW_FETCHING = {"status": "fetching"}
# publish_at must be this far ahead (DESIGN.md §9).
SCHEDULE_MIN_AHEAD = timedelta(minutes=1)
SCHEDULE_MAX_AHEAD = timedelta(days=365)


class InvalidPublishAt(ValidationFailed):
    code = "invalid_publish_at"
    default_detail = "publish_at must be between 1 minute and 1 year from now."


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
    sensitive: bool = False,
    spoiler_text: str = "",
) -> Post:
    _validate_content(type=type, title=title, body=body, link_url=link_url, poll=poll)
    post = Post.objects.create(
        author=author,
        type=type,
        title=title,
        body=body,
        link_url=link_url,
        sensitive=sensitive,
        spoiler_text=spoiler_text.strip(),
        status=PostStatus.DRAFT,
        moderation_state=ModerationState.UNREVIEWED,
    )
    if poll:
        _poll_replace(post, poll)
    _queue_link_preview(post)
    return post


def _queue_link_preview(post: Post) -> None:
    """A link post's card is built by the ``links`` worker (content.linkpreview) after commit."""
    if post.type == PostType.LINK and post.link_url:
        send_on_commit("link_preview_fetch", str(post.pk), post.link_url)


UNREADY = (ProcessingStatus.PENDING, ProcessingStatus.PROCESSING, ProcessingStatus.FAILED)


def _drop_unready_preview(post: Post, statuses: Iterable[str]) -> None:
    """A preview never blocks publishing: a link preview image still in one of ``statuses`` is
    detached (the card keeps its text), so the post neither waits for it nor fails on it, and the
    review sees exactly the preview image that will be shown."""
    stale = Media.objects.attached().filter(
        post=post, kind=MediaKind.THUMBNAIL, metadata__link_preview=True, processing_status__in=list(statuses)
    )
    ids = {str(pk) for pk in stale.values_list("pk", flat=True)}
    if not ids:
        return
    stale.update(detached_at=timezone.now(), updated_at=timezone.now())
    preview = dict((post.metadata or {}).get("link_preview") or {})
    if preview.get("image_media_id") in ids:
        preview["image_media_id"] = None
        post.metadata = {**post.metadata, "link_preview": preview}
        post.save(update_fields=["metadata", "updated_at"])


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


def post_update(
    *,
    post_id: UUID | str,
    actor: AbstractBaseUser,
    media: list[dict[str, Any]] | None = None,
    **changes: Any,
) -> Post:
    """PATCH: edit a draft in place (``post_draft_update``), or make a new revision of a published
    post (``post_edit``). ``media`` is a list of {id, description} (alt text of attached media)."""
    status = Post.objects.filter(pk=post_id).values_list("status", flat=True).first()
    if status == PostStatus.PUBLISHED:
        post_edit(post_id=post_id, actor=actor, changes=changes, media=media or [])
        return Post.objects.get(pk=post_id)
    return post_draft_update(post_id=post_id, actor=actor, media=media, **changes)


@transaction.atomic
def post_draft_update(
    *, post_id: UUID | str, actor: AbstractBaseUser, media: list[dict[str, Any]] | None = None, **changes: Any
) -> Post:
    """Edit a draft in place. Published posts get revisions (``post_edit``); other statuses are
    ``InvalidTransition`` (a quarantined or rejected post cannot be edited by its owner)."""
    post = post_lock(post_id=post_id, actor=actor)
    _require_status(post, [PostStatus.DRAFT, PostStatus.PUBLISHED], "edit")
    if post.status == PostStatus.PUBLISHED:  # published between the dispatch and the lock
        post_edit(post_id=post.pk, actor=actor, changes=changes, media=media or [])
        return Post.objects.get(pk=post.pk)
    old_link_url = post.link_url
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
    if media:
        descriptions = _descriptions_by_id(media)
        attached = {str(m.pk): m for m in Media.objects.attached().filter(post=post)}
        _check_media_ids(descriptions, attached)
        if _media_has_description():
            for media_id, text in descriptions.items():
                m = attached[media_id]
                m.description = text
                m.save(update_fields=["description", "updated_at"])
    link_changed = "link_url" in changes and changes["link_url"] != old_link_url
    if link_changed:
        post.metadata = {k: v for k, v in (post.metadata or {}).items() if not k.startswith("link_preview")}
    post.revision += 1
    post.save(
        update_fields=[*EDITABLE_FIELDS, "revision", "updated_at", *(["metadata"] if link_changed else [])]
    )
    if link_changed:
        Media.objects.attached().filter(
            post=post, kind=MediaKind.THUMBNAIL, metadata__link_preview=True
        ).update(detached_at=timezone.now(), updated_at=timezone.now())
        _queue_link_preview(post)
    return post


# --- revisions (DESIGN.md §9 "Edits after publish") ------------------------------------------------------
# The post's columns hold the public content; a submitted PostRevision holds a version with its media
# set and alt texts. Helpers here run inside a transition that holds the post's lock.


def _media_has_description() -> bool:
    """Whether Media has its ``description`` column (issue 13's other half adds it)."""
    return any(f.name == "description" for f in Media._meta.concrete_fields)


def _descriptions_by_id(media: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in media:
        text = str(item.get("description") or "")
        if len(text) > 1500:
            raise ValidationFailed(
                "Alt text is at most 1500 characters.",
                extra={"errors": {"media": ["description: at most 1500 characters."]}},
            )
        out[str(item.get("id"))] = text
    return out


def _check_media_ids(descriptions: dict[str, str], known: dict[str, Any]) -> None:
    unknown = sorted(set(descriptions) - set(known))
    if unknown:
        raise ValidationFailed(
            "Unknown media for this post.",
            extra={"errors": {"media": [f"Not media of this post: {unknown}."]}},
        )


def _revision_content(source: Post | PostRevision) -> dict[str, Any]:
    return {f: getattr(source, f) for f in REVISION_FIELDS}


def _revision_items(revision: PostRevision) -> list[tuple[UUID, str]]:
    """(media id, alt text) of a revision, in order."""
    return list(revision.items.order_by("position").values_list("media_id", "description"))


def _revision_create(
    post: Post,
    *,
    actor: AbstractBaseUser | None,
    content: dict[str, Any],
    items: list[tuple[UUID, str]],
    link_preview: dict[str, Any] | None = None,
) -> PostRevision:
    """Record a submission of ``post`` as revision ``post.revision`` (the caller bumped it), supersede
    any open one, and make it the post's ``pending_revision``. The caller saves the post."""
    PostRevision.objects.filter(post=post, status__in=REVISION_OPEN).update(
        status=RevisionStatus.SUPERSEDED, decided_at=timezone.now()
    )
    revision = PostRevision.objects.create(
        post=post,
        number=post.revision,
        status=RevisionStatus.PENDING,
        created_by=actor,
        link_preview=link_preview,
        **content,
    )
    PostRevisionMedia.objects.bulk_create(
        PostRevisionMedia(revision=revision, media_id=media_id, position=i, description=text)
        for i, (media_id, text) in enumerate(items)
    )
    post.pending_revision = revision
    return revision


def _draft_items(post: Post) -> list[tuple[UUID, str]]:
    """The media set of a draft as it is submitted: every attached medium with its alt text."""
    media = Media.objects.attached().filter(post=post, parent__isnull=True).order_by("position", "created_at")
    return [(m.pk, getattr(m, "description", "") or "") for m in media]


def _ensure_public_revision(post: Post, *, exclude: Iterable[UUID | str] = ()) -> PostRevision:
    """The public revision of a published post; posts published before revisions existed get one
    recorded from their columns and attached media but ``exclude`` (media being attached by this
    edit), cleared, public since ``published_at``."""
    if post.public_revision_id:
        return post.public_revision
    post.revision += 1
    revision = PostRevision.objects.create(
        post=post,
        number=post.revision,
        status=RevisionStatus.CLEARED,
        created_by=post.author,
        decided_at=post.published_at or timezone.now(),
        public_at=post.published_at or timezone.now(),
        **_revision_content(post),
    )
    PostRevisionMedia.objects.bulk_create(
        PostRevisionMedia(revision=revision, media_id=media_id, position=i, description=text)
        for i, (media_id, text) in enumerate(
            item for item in _draft_items(post) if str(item[0]) not in {str(e) for e in exclude}
        )
    )
    post.public_revision = revision
    post.save(update_fields=["revision", "public_revision", "updated_at"])
    return revision


def revision_make_public(post: Post, revision: PostRevision) -> list[str]:
    """Make a cleared ``revision`` the public one: the post's columns and alt texts take its values,
    media it dropped are detached, the previous public revision is superseded, ``edited_at`` is set
    when it replaces an earlier public one. The caller holds the post's lock and saves the returned
    fields of the post. Shared by the AI verdict, moderators' approvals and the scheduler."""
    now = timezone.now()
    previous = post.public_revision
    if previous is not None and previous.pk != revision.pk:
        previous.status = RevisionStatus.SUPERSEDED
        previous.public_until = now
        previous.save(update_fields=["status", "public_until"])
        post.edited_at = now
    revision.status = RevisionStatus.CLEARED
    revision.decided_at = revision.decided_at or now
    revision.public_at = now
    revision.save(update_fields=["status", "decided_at", "public_at"])
    for field in REVISION_FIELDS:
        setattr(post, field, getattr(revision, field))
    items = dict(_revision_items(revision))
    detached = []
    for m in lock_rows(Media.objects.attached().filter(post=post)):
        if (m.parent_id or m.pk) not in items:  # derived media follow their parent
            m.detached_at = now
            m.save(update_fields=["detached_at", "updated_at"])
            detached.append(m.pk)
        elif m.pk in items and _media_has_description() and m.description != items[m.pk]:
            m.description = items[m.pk]
            m.save(update_fields=["description", "updated_at"])
    post.public_revision = revision
    if post.pending_revision_id == revision.pk:
        post.pending_revision = None
    _apply_revision_card(post, revision)
    if detached:
        # Bytes of media that left the post: their bearer URLs must stop working (media.revocation).
        send_on_commit("media_revoke_post_urls", str(post.pk))
    return [*REVISION_FIELDS, "public_revision", "pending_revision", "edited_at", "metadata", "updated_at"]


def _is_fetching(revision: PostRevision) -> bool:
    return (revision.link_preview or {}).get("status") == PREVIEW_FETCHING["status"]


def _apply_revision_card(post: Post, revision: PostRevision) -> None:
    """A revision with a card of its own (``PostRevision.link_preview`` done) puts it in the post's
    ``metadata.link_preview`` (and its error in ``link_preview_error``); others leave the card."""
    own = revision.link_preview or {}
    if own.get("status") != "done":
        return
    data = {k: v for k, v in (post.metadata or {}).items() if not k.startswith("link_preview")}
    if own.get("card"):
        data["link_preview"] = own["card"]
    if own.get("error"):
        data["link_preview_error"] = own["error"]
    post.metadata = data


def _preview_ids(media_ids: Iterable[UUID]) -> set[UUID]:
    """Which of ``media_ids`` are link preview images."""
    return set(
        Media.objects.filter(
            pk__in=list(media_ids), kind=MediaKind.THUMBNAIL, metadata__link_preview=True
        ).values_list("pk", flat=True)
    )


def revision_hold(post: Post, revision: PostRevision) -> None:
    """The prescreen held ``revision`` for a human: it waits in the review queue (``submitted_at``
    orders it there) while the public keeps the previous one. The caller saves the post's
    ``submitted_at``."""
    revision.status = RevisionStatus.HELD
    revision.save(update_fields=["status"])
    post.submitted_at = timezone.now()


def revision_reject(post: Post, revision: PostRevision) -> list[str]:
    """Drop ``revision``: the public one stays, media only it had are detached, the creator may edit
    again. The caller holds the lock and saves the returned fields."""
    now = timezone.now()
    revision.status = RevisionStatus.REJECTED
    revision.decided_at = now
    revision.save(update_fields=["status", "decided_at"])
    keep = set()
    if post.public_revision_id:
        keep = {m for m, _ in _revision_items(post.public_revision)}
    only_here = [m for m, _ in _revision_items(revision) if m not in keep]
    Media.objects.attached().filter(post=post).filter(
        Q(pk__in=only_here) | Q(parent_id__in=only_here)
    ).update(detached_at=now, updated_at=now)
    if post.pending_revision_id == revision.pk:
        post.pending_revision = None
    return ["pending_revision", "updated_at"]


def _revision_media(revision: PostRevision) -> list[Media]:
    return list(Media.objects.filter(revision_items__revision=revision))


def _revision_submit(post: Post, revision: PostRevision) -> list[str]:
    """Send a published post's new revision on: wait for its media, hold it (blocked bytes), queue the
    AI review (prescreen), or make it public at once (``reactive_only``). Returns fields to save."""
    if _is_fetching(revision):
        return []  # revision_link_preview_done submits it when the card is built (or failed)
    media = _revision_media(revision)
    if any(m.processing_status in (ProcessingStatus.PENDING, ProcessingStatus.PROCESSING) for m in media):
        return []  # post_media_settled submits it when the files are processed
    if any(m.processing_status == ProcessingStatus.FAILED for m in media):
        post.metadata = {**post.metadata, "publish_error": "A media file of your edit failed processing."}
        return ["metadata", "updated_at"]
    if any((m.metadata or {}).get("blocked_media") for m in media):
        revision_hold(post, revision)
        return ["submitted_at", "updated_at"]
    if policy.needs_prescreen(post):
        post.submitted_at = timezone.now()
        send_on_commit("review_post", str(post.pk), revision.number)
        return ["submitted_at", "updated_at"]
    return revision_make_public(post, revision)


@transaction.atomic
def post_edit(
    *,
    post_id: UUID | str,
    actor: AbstractBaseUser,
    changes: dict[str, Any] | None = None,
    media: list[dict[str, Any]] | None = None,
    attach_media_ids: Iterable[UUID] = (),
    detach_media_ids: Iterable[UUID | str] = (),
    link_preview: dict[str, Any] | None = None,
) -> PostRevision:
    """Edit a published post: a new revision from the latest one (the open one if the creator edits
    again, else the public one) with ``changes`` (title, body, link_url, sensitive, spoiler_text),
    alt texts (``media`` [{id, description}]) and media attached/detached. ``reactive_only``: it is
    public at once; ``ai_prescreen``: it waits for the prescreen while the public keeps the last
    cleared revision (DESIGN.md §9). A new ``link_url`` of a link post gives the revision a card of its
    own: the ``links`` worker builds it (the revision waits, ``revision_link_preview_done``), its image
    becomes an item of the revision (so the prescreen sees it) and the card replaces the public one
    only when the revision clears. ``link_preview`` (a built card, {url, title, description,
    site_name, image_media_id}) is the late card of the first publish (content.linkpreview); its
    image is among ``attach_media_ids``. Allowed from ``published`` only; a poll cannot be changed once
    it takes votes (``poll_locked``); an image/video/audio post keeps at least one primary medium
    (``media_required``). Returns the new revision (or the latest one when nothing changed)."""
    post = post_lock(post_id=post_id, actor=actor)
    _require_status(post, [PostStatus.PUBLISHED], "edit")
    changes = dict(changes or {})
    if "poll" in changes:
        raise ValidationFailed(
            "A published poll cannot be changed.", code="poll_locked", extra={"errors": {"poll": ["Locked."]}}
        )
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationFailed(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    attach_media_ids = list(attach_media_ids)
    public = _ensure_public_revision(post, exclude=attach_media_ids)
    base = post.pending_revision if post.pending_revision_id else public
    content = {**_revision_content(base), **changes}
    _validate_content(type=post.type, poll=None, **{k: content[k] for k in ("title", "body", "link_url")})
    items = dict(_revision_items(base))
    descriptions = _descriptions_by_id(media or [])
    _check_media_ids(descriptions, {str(k): v for k, v in items.items()})
    for media_id, text in descriptions.items():
        items[UUID(media_id)] = text
    for media_id in detach_media_ids:
        if UUID(str(media_id)) not in items:
            raise NotFound("Media not found.")
        items.pop(UUID(str(media_id)))
    for media_id in attach_media_ids:
        items.setdefault(UUID(str(media_id)), "")
    card = _edit_card(post, public, base, content["link_url"], items, link_preview)
    if (
        content == _revision_content(base)
        and list(items.items()) == _revision_items(base)
        and card == base.link_preview
    ):
        return base
    kind = MEDIA_POST_TYPES.get(post.type)
    if kind and not Media.objects.filter(pk__in=list(items), kind=kind, is_primary=True).exists():
        raise ValidationFailed(f"A {post.type} post keeps at least one {kind}.", code="media_required")
    post.revision += 1
    revision = _revision_create(
        post, actor=actor, content=content, items=list(items.items()), link_preview=card
    )
    if _is_fetching(revision):
        send_on_commit("link_preview_fetch", str(post.pk), revision.link_url, revision.number)
    fields = _revision_submit(post, revision)
    post.save(update_fields=list(dict.fromkeys(["revision", "pending_revision", "updated_at", *fields])))
    return revision


def _edit_card(
    post: Post,
    public: PostRevision,
    base: PostRevision,
    link_url: str,
    items: dict[UUID, str],
    late_card: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The ``link_preview`` of a new revision of a link post, adjusting ``items`` (its preview image)
    in place: the public card (None) while ``link_url`` is the public one; the card of the open
    revision it is based on if that one has the same link and a built card; else a new fetch
    (``PREVIEW_FETCHING``, no preview image until the worker adds one). ``late_card``: a card built
    for the public link after the first publish (its image is already in ``items``)."""
    if post.type != PostType.LINK:
        return None
    if late_card is not None:
        return {"status": "done", "card": late_card, "error": None}
    if link_url == base.link_url:
        return dict(PREVIEW_FETCHING) if _is_fetching(base) else base.link_preview
    for media_id in _preview_ids(items):
        items.pop(media_id)
    if link_url == public.link_url:
        # Back to the public link: the public card and its image again.
        public_items = dict(_revision_items(public))
        for media_id in _preview_ids(public_items):
            items[media_id] = public_items[media_id]
        return None
    return dict(PREVIEW_FETCHING)


@transaction.atomic
def revision_link_preview_done(
    *,
    post_id: UUID | str,
    revision: int,
    card: dict[str, Any] | None,
    error: dict[str, str] | None = None,
    image_media_id: UUID | str | None = None,
) -> bool:
    """The ``links`` worker built (or failed to build: ``card`` None, ``error`` {code, detail}) the
    card of revision number ``revision`` of a published link post. The image (a ``thumbnail`` medium
    attached by media.services.media_attach_link_preview) joins the revision's items, the card is
    stored on the revision, and the revision goes on to its prescreen (``_revision_submit``; after
    the image is processed). Stale (the revision was superseded or decided): the image is detached
    unless some revision has it. Returns whether the revision took the card."""
    try:
        post = post_lock(post_id=post_id)
    except NotFound:
        return False
    rev = post.pending_revision
    if (
        post.status != PostStatus.PUBLISHED
        or rev is None
        or rev.number != revision
        or rev.status != RevisionStatus.PENDING
        or not _is_fetching(rev)
    ):
        if image_media_id:
            Media.objects.attached().filter(pk=image_media_id, post=post, revision_items__isnull=True).update(
                detached_at=timezone.now(), updated_at=timezone.now()
            )
        return False
    if image_media_id:
        position = rev.items.count()
        PostRevisionMedia.objects.create(revision=rev, media_id=image_media_id, position=position)
        card = {**(card or {}), "image_media_id": str(image_media_id)}
    rev.link_preview = {"status": "done", "card": card, "error": error}
    rev.save(update_fields=["link_preview"])
    fields = _revision_submit(post, rev)
    post.save(update_fields=list(dict.fromkeys(["updated_at", *fields])))
    return True


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
    (and so verified and shown to the prescreen). A link preview image does not hold the post back:
    it is left out here, and dropped at submission unless ready (``_drop_unready_preview``). Nor do
    transcripts: the prescreen waits for them (``moderation.review``), and a failed one sends the
    post to a human, never to ``media_failed``."""
    return [
        m
        for m in Media.objects.attached().filter(post=post)
        if m.kind != MediaKind.TRANSCRIPT
        and not (m.kind == MediaKind.THUMBNAIL and (m.metadata or {}).get("link_preview"))
    ]


def check_publish_at(publish_at: datetime, *, now: datetime | None = None) -> None:
    """``publish_at`` must be aware and 1 minute – 1 year ahead (DESIGN.md §9); else
    ``InvalidPublishAt`` (400 ``invalid_publish_at``)."""
    now = now or timezone.now()
    if timezone.is_naive(publish_at):
        raise InvalidPublishAt("publish_at needs a time zone (e.g. 2030-01-01T12:00:00Z).")
    if not now + SCHEDULE_MIN_AHEAD <= publish_at <= now + SCHEDULE_MAX_AHEAD:
        raise InvalidPublishAt()


@transaction.atomic
def post_publish(*, post_id: UUID | str, actor: AbstractBaseUser, publish_at: datetime | None = None) -> Post:
    """Publish a draft (DESIGN.md §3). Returns the post; its status tells the caller what happened:
    ``published``, ``pending_review`` (prescreen), ``scheduled`` (``publish_at`` given: the prescreen
    runs now, the post goes public at that time if cleared by then, else when cleared), or
    ``processing`` with ``publish_requested``."""
    if publish_at is not None:
        check_publish_at(publish_at)
    post = post_lock(post_id=post_id, actor=actor)
    _require_status(post, [PostStatus.DRAFT, PostStatus.PROCESSING], "publish")
    _drop_unready_preview(post, UNREADY)
    media = _live_media(post)
    if any(m.processing_status == ProcessingStatus.FAILED for m in media):
        raise MediaFailed()
    if publish_at is not None and post.scheduled_at != publish_at:
        post.scheduled_at = publish_at
        post.save(update_fields=["scheduled_at", "updated_at"])
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
    """Draft → published, pending_review or scheduled, by moderation mode, author trust and
    ``scheduled_at``; the submission is recorded as a PostRevision. The caller holds the post's lock
    and has checked the from-state (``post_publish``, ``post_media_settled``)."""
    now = timezone.now()
    post.publish_requested = False
    post.revision += 1
    notification, reason = None, ""
    revision = _revision_create(
        post, actor=post.author, content=_revision_content(post), items=_draft_items(post)
    )
    scheduled = post.scheduled_at is not None and post.scheduled_at > now
    if not scheduled:
        post.scheduled_at = None
    if post.blocked_media:
        # Bytes a moderator already rejected: straight to quarantine, a human looks again.
        revision_hold(post, revision)
        post.status = PostStatus.QUARANTINED
        post.moderation_state = ModerationState.FLAGGED
        post.submitted_at = now
        post.save(update_fields=SUBMIT_FIELDS)
        notification = NotificationType.POST_QUARANTINED
        reason = "A file of this post matches one the moderators blocked; a moderator will look at it."
    elif policy.needs_prescreen(post):
        post.status = PostStatus.SCHEDULED if scheduled else PostStatus.PENDING_REVIEW
        post.moderation_state = ModerationState.UNDER_REVIEW
        post.submitted_at = now
        post.save(update_fields=SUBMIT_FIELDS)
        # The review actor (moderation.tasks), by name; if the broker is down the sweep queues it.
        send_on_commit("review_post", str(post.pk), post.revision)
    elif scheduled:
        revision.status = RevisionStatus.CLEARED
        revision.decided_at = now
        revision.save(update_fields=["status", "decided_at"])
        post.status = PostStatus.SCHEDULED
        post.moderation_state = ModerationState.CLEAN
        post.save(update_fields=SUBMIT_FIELDS)
    else:
        revision_make_public(post, revision)
        post.status = PostStatus.PUBLISHED
        post.published_at = now
        post.save(update_fields=SUBMIT_FIELDS)
        notification = NotificationType.POST_PUBLISHED
    post_transitioned(post, notification=notification, reason=reason)
    return post


@transaction.atomic
def post_unpublish(*, post_id: UUID | str, actor: AbstractBaseUser) -> Post:
    """Owner takes a published post back to draft, or cancels a scheduled one; re-publishing runs
    the prescreen again. The draft keeps the latest version (an edit still waiting included: a draft
    is private); media it does not have are detached; open revisions are superseded."""
    post = post_lock(post_id=post_id, actor=actor)
    _require_status(post, [PostStatus.PUBLISHED, PostStatus.SCHEDULED], "unpublish")
    latest = post.pending_revision or post.public_revision
    card_changed = False
    if post.status == PostStatus.PUBLISHED and latest is not None:
        for field in REVISION_FIELDS:
            setattr(post, field, getattr(latest, field))
        card_before = post.metadata
        _apply_revision_card(post, latest)
        card_changed = post.metadata != card_before
        keep = dict(_revision_items(latest))
        now = timezone.now()
        for m in lock_rows(Media.objects.attached().filter(post=post)):
            if (m.parent_id or m.pk) not in keep:
                m.detached_at = now
                m.save(update_fields=["detached_at", "updated_at"])
            elif m.pk in keep and _media_has_description() and m.description != keep[m.pk]:
                m.description = keep[m.pk]
                m.save(update_fields=["description", "updated_at"])
    if post.public_revision_id:
        PostRevision.objects.filter(pk=post.public_revision_id).update(public_until=timezone.now())
    PostRevision.objects.filter(post=post, status__in=REVISION_OPEN).update(
        status=RevisionStatus.SUPERSEDED, decided_at=timezone.now()
    )
    post.status = PostStatus.DRAFT
    post.moderation_state = ModerationState.UNREVIEWED
    post.published_at = None
    post.scheduled_at = None
    post.public_revision = None
    post.pending_revision = None
    post.revision += 1
    post.save(
        update_fields=[
            *REVISION_FIELDS,
            "status",
            "moderation_state",
            "published_at",
            "scheduled_at",
            "public_revision",
            "pending_revision",
            "revision",
            "updated_at",
            *(["metadata"] if card_changed else []),
        ]
    )
    send_on_commit("media_revoke_post_urls", str(post.pk))
    post_transitioned(post)
    return post


# --- scheduled publishing (DESIGN.md §9) ---------------------------------------------------------------


def scheduled_go_public(post: Post, *, now: datetime | None = None) -> list[str]:
    """A ``scheduled`` post whose revision is cleared and whose time has come goes public; returns
    the fields to save ([] when it is not due or not cleared). The caller holds the post's lock:
    the AI verdict and moderators' approvals call it (cleared after ``publish_at``), and so does
    ``post_publish_scheduled`` (the scheduler)."""
    now = now or timezone.now()
    revision = post.pending_revision
    if (
        post.status != PostStatus.SCHEDULED
        or post.scheduled_at is None
        or post.scheduled_at > now
        or revision is None
        or revision.status != RevisionStatus.CLEARED
    ):
        return []
    fields = revision_make_public(post, revision)
    post.status = PostStatus.PUBLISHED
    post.published_at = now
    ModerationDecision.objects.create(
        post=post,
        moderator=None,
        action=ModerationAction.SCHEDULED_PUBLISH,
        reason=f"scheduled for {post.scheduled_at.isoformat()}",
        from_status=PostStatus.SCHEDULED,
        to_status=PostStatus.PUBLISHED,
        from_moderation_state=post.moderation_state,
        to_moderation_state=post.moderation_state,
        details={"revision": revision.number},
    )
    return [*fields, "status", "published_at"]


@transaction.atomic
def post_publish_scheduled(*, post_id: UUID | str, now: datetime | None = None) -> bool:
    """``scheduled`` → ``published`` when due and cleared. Exactly once: the row lock serialises two
    schedulers and the second one finds the post no longer ``scheduled``. Returns whether it went
    public; a post that is gone, not due, not cleared or already public is left alone."""
    try:
        post = post_lock(post_id=post_id)
    except NotFound:
        return False
    fields = scheduled_go_public(post, now=now)
    if fields:
        post.save(update_fields=list(dict.fromkeys(fields)))
        post_transitioned(post, notification=NotificationType.POST_PUBLISHED)
    return bool(fields)


def publish_due_posts(*, now: datetime | None = None, limit: int = 500) -> list[str]:
    """The scheduler's job: every cleared ``scheduled`` post whose ``publish_at`` has come goes
    public (one transaction each, ``post_publish_scheduled``). Returns the ids it published."""
    now = now or timezone.now()
    due = Post.objects.filter(
        status=PostStatus.SCHEDULED,
        scheduled_at__lte=now,
        deleted_at__isnull=True,
        moderation_state__in=[ModerationState.CLEAN, ModerationState.APPROVED],
    ).order_by("scheduled_at")
    done = []
    for post_id in list(due.values_list("pk", flat=True)[:limit]):
        if post_publish_scheduled(post_id=post_id, now=now):
            done.append(str(post_id))
    if done:
        logger.info("published %s scheduled posts", len(done), extra={"event": "scheduled_publish"})
    return done


@transaction.atomic
def post_media_settled(*, post_id: UUID | str) -> Post | None:
    """Called when a medium of the post finished (ready or failed), or by the sweep. When none is
    still pending or processing, the post leaves ``processing``: publish if asked, else back to draft."""
    try:
        post = post_lock(post_id=post_id)
    except NotFound:
        return None
    if post.status == PostStatus.PUBLISHED and post.pending_revision_id:
        revision = post.pending_revision
        if (
            revision.status == RevisionStatus.PENDING
            and not PostRevision.objects.filter(
                pk=revision.pk,
                items__media__processing_status__in=[ProcessingStatus.PENDING, ProcessingStatus.PROCESSING],
            ).exists()
        ):
            fields = _revision_submit(post, revision)
            if fields:
                post.save(update_fields=list(dict.fromkeys(fields)))
        return post
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
            _drop_unready_preview(post, UNREADY)
            return _submit(post)
    if failed:
        post.publish_requested = False
        post.metadata = {**post.metadata, "publish_error": "A media file failed processing."}
    post.save(update_fields=["status", "publish_requested", "metadata", "updated_at"])
    post_transitioned(post)
    return post


@transaction.atomic
def post_transcript_edited(*, post_id: UUID | str) -> None:
    """A creator's correction of a transcript of the post's media became public (``media.services``
    applies it): a published post shows it was edited (``edited_at``), as for any edit after publish
    (DESIGN.md §9). Other statuses and deleted posts: nothing."""
    try:
        post = post_lock(post_id=post_id)
    except NotFound:
        return
    if post.status == PostStatus.PUBLISHED:
        post.edited_at = timezone.now()
        post.save(update_fields=["edited_at", "updated_at"])


def awaits_ai_review() -> Q:
    """Posts whose current ``revision`` may wait for the prescreen: a first publish or a scheduled
    post ``under_review``, or a published post whose pending edit (numbered ``revision``) waits.
    Whether the AI already judged it is ``moderation.services.waiting_for_ai``'s to say."""
    return Q(
        status__in=[PostStatus.PENDING_REVIEW, PostStatus.SCHEDULED],
        moderation_state=ModerationState.UNDER_REVIEW,
    ) | Q(
        status=PostStatus.PUBLISHED,
        pending_revision__status=RevisionStatus.PENDING,
        pending_revision__number=F("revision"),
    )


def post_transcript_settled(*, post_id: UUID | str) -> None:
    """A transcript of the post's media finished (ready or failed). A post whose prescreen may wait
    for it (``awaits_ai_review``: a first publish, a scheduled post, or a pending edit of a published
    post) gets its AI review sent now rather than at the next safety-net look; the review itself
    checks the revision and ignores duplicates (issue 17)."""
    post = Post.objects.filter(awaits_ai_review(), pk=post_id, deleted_at__isnull=True).first()
    if post is not None:
        send_on_commit("review_post", str(post.pk), post.revision)


# --- media-driven transitions ----------------------------------------------------------------------
# Media never writes Post: media.services and media.processing call these. Each locks the post with
# post_lock, checks the allowed from-states and saves only the fields it changes.

MEDIA_EDITABLE_STATUSES = (PostStatus.DRAFT, PostStatus.PROCESSING)


@transaction.atomic
def post_media_attached(
    *, post_id: UUID | str, is_primary: bool, blocked: bool, media_id: UUID | str | None = None
) -> Post:
    """A medium was attached to the post. A primary medium puts a draft into ``processing`` (it
    cannot be published before the file is processed); ``blocked`` (the bytes are on the moderators'
    blocklist) sets ``blocked_media``, which sends the post to quarantine when it is published. On a
    ``published`` post the medium (``media_id``) joins a new revision instead (``post_edit``): it
    stays invisible to the public until that revision is cleared.

    Allowed from ``draft``, ``processing`` and ``published``; else ``InvalidTransition``. NotFound
    if deleted.
    """
    post = post_lock(post_id=post_id)
    _require_status(post, [*MEDIA_EDITABLE_STATUSES, PostStatus.PUBLISHED], "attach media to")
    if post.status == PostStatus.PUBLISHED:
        if media_id is None:
            raise InvalidTransition("Media can only be attached to a draft; this post is published.")
        post_edit(post_id=post.pk, actor=post.author, attach_media_ids=[media_id])
        return Post.objects.get(pk=post.pk)
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
def post_recording_attached(*, post_id: UUID | str, media_id: UUID | str) -> Post | None:
    """A livestream's recording (a ``livestream_recording`` medium, made by ``media.live``) joins its
    post: appended to the public revision of a published post, and to a revision waiting for review,
    so that it is shown exactly where the stream itself was (DESIGN.md §13). The post's status does
    not change. None when the post is gone."""
    try:
        post = post_lock(post_id=post_id, include_deleted=True)
    except NotFound:
        return None
    for revision_id in {post.public_revision_id, post.pending_revision_id} - {None}:
        position = PostRevisionMedia.objects.filter(revision_id=revision_id).count()
        PostRevisionMedia.objects.get_or_create(
            revision_id=revision_id, media_id=media_id, defaults={"position": position}
        )
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
    poll = lock_rows(Poll.objects.all()).get(post=post)
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
    """Report a published post. The open report puts the post in the review queue at once; whether
    the post is also hidden meanwhile is ``post_hold_for_reports``'s call (weighted reports, in the
    same transaction)."""
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
    """``published`` → ``pending_review``/``under_review`` once the open reports since the post's last
    approval weigh ``moderation.policy.hold_threshold`` (DESIGN.md §3, §11; weights by the reporters'
    standing, ``policy.report_weights``); below that the post is returned unchanged (it is in the
    queue as reported all the same). Writes the ``reports`` audit row (with the weights) and bumps the
    revision, so an AI verdict still in flight for the post before the reports is stale. Raises
    ``InvalidTransition`` unless the post is published, ``NotFound`` for a missing or deleted post."""
    post = post_lock(post_id=post_id)
    _require_status(post, [PostStatus.PUBLISHED], "hold for reports")
    weights = policy.report_weights(post)
    weight, threshold = sum(weights.values()), policy.hold_threshold(post)
    if not policy.reports_hold_due(weight, threshold):
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
        reason=f"{len(weights)} reports weighing {weight:g} (threshold {threshold:g})",
        from_status=before[0],
        to_status=post.status,
        from_moderation_state=before[1],
        to_moderation_state=post.moderation_state,
        details={"weights": {str(k): v for k, v in weights.items()}, "threshold": threshold},
    )
    send_on_commit("media_revoke_post_urls", str(post.pk))
    post_transitioned(
        post,
        notification=NotificationType.POST_HELD,
        reason="Several people reported this post; it is hidden until a moderator looks at it.",
    )
    return post
