"""Reads that are more than a one-line query."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import BooleanField, Exists, OuterRef, Prefetch, Q, QuerySet, Value

from content.models import Post, PostRevision, PostRevisionMedia, PostStatus
from media.models import Media

STAFF_VIEW_PERMISSION = "media.view_media"


def is_staff_viewer(user: AbstractBaseUser | None) -> bool:
    """Staff who may see every post that is not public and its bytes: ``is_staff`` *and* the
    ``media.view_media`` permission (the Moderators group has it; superusers have every permission).
    A bare ``is_staff`` flag is not enough (docs/operations.md)."""
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_staff
        and user.is_active
        and user.has_perm(STAFF_VIEW_PERMISSION)
    )


def is_owner_or_staff(user: AbstractBaseUser | None, owner_id: int | None) -> bool:
    """Who sees what is not public (DESIGN.md §3): the owner, and staff."""
    if user is None or not user.is_authenticated:
        return False
    return user.pk == owner_id or is_staff_viewer(user)


def can_view_post(post: Post, user: AbstractBaseUser | None) -> bool:
    """One post's visibility; ``posts_visible_to`` is the same rule as a queryset."""
    if post.deleted_at is not None:
        return False
    return post.status == PostStatus.PUBLISHED or is_owner_or_staff(user, post.author_id)


def public_media() -> QuerySet[Media]:
    """Attached media that belong to their post's public revision (all attached media while the post
    has none, i.e. before its first publish). Media of an edit still waiting for the prescreen is not
    in it: nobody but the owner and staff learns it exists before the edit is cleared (DESIGN.md §9).
    Rows carry ``in_public_revision=True`` for ``MediaSerializer``. One correlated EXISTS on an
    index, in the same query: revisions cost the feed no extra query."""
    in_public = PostRevisionMedia.objects.filter(
        revision_id=OuterRef("post__public_revision_id"), media_id=OuterRef("pk")
    )
    # Derived media (a cover-art thumbnail) follow the medium they came from.
    parent_in_public = PostRevisionMedia.objects.filter(
        revision_id=OuterRef("post__public_revision_id"), media_id=OuterRef("parent_id")
    )
    return (
        Media.objects.attached()
        .filter(Q(post__public_revision__isnull=True) | Exists(in_public) | Exists(parent_in_public))
        .annotate(in_public_revision=Value(True, output_field=BooleanField()))
    )


def media_in_public_revision(media: Media) -> bool:
    """Whether ``media`` is part of what the public may see of its post (``public_media``)."""
    if getattr(media, "in_public_revision", None) is not None:
        return bool(media.in_public_revision)
    return public_media().filter(pk=media.pk).exists()


def can_view_media(media: Media, user: AbstractBaseUser | None) -> bool:
    """A medium's visibility: its post is visible to ``user`` and, unless ``user`` is the owner or
    staff, the medium belongs to the post's public revision and the post is published."""
    post = media.post
    if post is None or not can_view_post(post, user):
        return False
    return is_owner_or_staff(user, post.author_id) or media_in_public_revision(media)


def _with_relations(qs: QuerySet[Post]) -> QuerySet[Post]:
    return qs.select_related("author", "poll", "livestream").prefetch_related(
        Prefetch("media", queryset=public_media()),
        "poll__options",
    )


def post_revisions_for(post: Post, user: AbstractBaseUser | None) -> QuerySet[PostRevision]:
    """A post's revision history, newest first, with each revision's media: all of them for the
    owner and staff, only those that were public for anyone else (DESIGN.md §9). The caller has
    checked that ``user`` may see the post."""
    qs = post.revisions.prefetch_related("items").order_by("-number")
    if not is_owner_or_staff(user, post.author_id):
        qs = qs.filter(public_at__isnull=False)
    return qs


def posts_visible_to(user) -> QuerySet[Post]:
    """DESIGN.md §3: published posts for everyone; the owner's own and, for staff viewers
    (``is_staff_viewer``), everything."""
    qs = Post.objects.alive()
    if user is not None and user.is_authenticated:
        if is_staff_viewer(user):
            return _with_relations(qs)
        return _with_relations(qs.filter(Q(status=PostStatus.PUBLISHED) | Q(author=user)))
    return _with_relations(qs.filter(status=PostStatus.PUBLISHED))


def post_feed(*, type: str | None = None, author: str | None = None) -> QuerySet[Post]:
    qs = Post.objects.published()
    if type:
        qs = qs.filter(type=type)
    if author:
        # Only ASCII digits that fit a bigint are an id ("²".isdigit() is true, int("²") fails).
        is_id = author.isascii() and author.isdigit() and int(author) < 2**63
        qs = qs.filter(author_id=int(author)) if is_id else qs.filter(author__username=author)
    return _with_relations(qs)


def posts_of(user, *, status: str | None = None) -> QuerySet[Post]:
    qs = Post.objects.alive().filter(author=user)
    if status:
        qs = qs.filter(status=status)
    return _with_relations(qs)
