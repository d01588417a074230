"""Row locks on posts: the one way content and moderation lock a ``Post`` (Saleor's ``lock_objects``).

Every Post transition (content's creator actions, moderation's decisions and AI verdicts, media-driven
moves) re-reads its row through ``post_lock`` inside ``transaction.atomic()``, so the lock is taken the
same way everywhere: ``SELECT … FOR NO KEY UPDATE OF content_post`` on PostgreSQL (never the joined
author's row; ``config.locking.lock_rows`` says why NO KEY), a no-op on SQLite, whose writers are
serialised by the database lock.
"""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from config.errors import NotFound, PermissionDenied
from config.locking import lock_rows
from content.models import Post
from content.selectors import can_view_post


def post_qs_select_for_update() -> QuerySet[Post]:
    """Posts, locked ``FOR NO KEY UPDATE`` of the post row only (``config.locking.lock_rows``). Call it
    inside ``transaction.atomic()``."""
    return lock_rows(Post.objects.all(), of=("self",))


def post_lock(
    *,
    post_id: UUID | str,
    actor: AbstractBaseUser | None = None,
    owner_only: bool = True,
    include_deleted: bool = False,
) -> Post:
    """Re-read one post under a row lock; the caller must be inside ``transaction.atomic()``.

    ``actor`` given: a post the actor may not see is ``NotFound`` (never 403, DESIGN.md §4), and with
    ``owner_only`` one the actor sees but does not own is ``PermissionDenied``. Soft-deleted posts are
    ``NotFound`` unless ``include_deleted`` (moderation keeps deciding on evidence; AI verdicts for a
    deleted post are recorded as stale). A malformed id is ``NotFound`` too.
    """
    qs = post_qs_select_for_update()
    if not include_deleted:
        qs = qs.filter(deleted_at__isnull=True)
    try:
        post = qs.get(pk=post_id)
    except (Post.DoesNotExist, ValueError, TypeError, ValidationError):
        raise NotFound("Post not found.") from None
    if actor is not None:
        if not can_view_post(post, actor):
            raise NotFound("Post not found.")
        if owner_only and post.author_id != actor.pk:
            raise PermissionDenied("Only the author can change this post.")
    return post
