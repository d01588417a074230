"""Reads that are more than a one-line query."""

from __future__ import annotations

from django.db.models import Prefetch, Q, QuerySet

from content.models import Post, PostStatus
from media.models import Media


def _with_relations(qs: QuerySet[Post]) -> QuerySet[Post]:
    return qs.select_related("author", "poll").prefetch_related(
        Prefetch("media", queryset=Media.objects.attached()),
        "poll__options",
    )


def posts_visible_to(user) -> QuerySet[Post]:
    """DESIGN.md §3: published posts for everyone; the owner's own and, for staff, everything."""
    qs = Post.objects.alive()
    if user is not None and user.is_authenticated:
        if user.is_staff:
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
