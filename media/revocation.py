"""Revoking media URLs when a post stops being public (DESIGN.md §4, issue 9 row 2).

On S3 the URL of a published variant is a presigned GET: a bearer URL that S3 honours until it
expires, whatever Django thinks of the post. So the only way to break it early is to make the key it
names disappear: when a post leaves ``published`` every stored object of its media is copied to a new,
random key (``storage.rotated_key``), the rows are pointed at the new keys and the old objects are
deleted. Owners and staff get working URLs for the new keys at their next request; everything issued
before is dead (403/404 from S3).

Bookkeeping, so that nothing is lost if the broker is down when the post is hidden:
``Media.urls_exposed_at`` is set *before* the first bearer URL for the current keys is handed out and
cleared once a rotation deleted the old objects; ``media_revoke_overdue`` (run by the scheduler every
minute and by ``purge_media``) rotates every medium that is still marked while its post is not public.
On the filesystem backend every URL is checked by Django at request time, so nothing is ever marked and
there is nothing to rotate.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config.locking import lock_rows
from content.models import PostStatus
from content.selectors import author_suspended_q
from media import storage
from media.models import Media
from moderation.policy import is_suspended

logger = logging.getLogger(__name__)

# The scheduled safety net leaves a freshly hidden post to its on-commit message for this long.
OVERDUE_GRACE = timedelta(seconds=60)


def _is_public(media: Media) -> bool:
    post = media.post
    return (
        post is not None
        and post.status == PostStatus.PUBLISHED
        and post.deleted_at is None
        and media.detached_at is None
        and media.purged_at is None
        and not is_suspended(post.author_id)  # a suspended account's posts are hidden (DESIGN.md §11)
    )


def _public_q() -> Q:
    return Q(
        post__status=PostStatus.PUBLISHED,
        post__deleted_at__isnull=True,
        detached_at__isnull=True,
        purged_at__isnull=True,
    ) & ~author_suspended_q("post__")


def media_mark_urls_exposed(media: Media) -> bool:
    """Call before handing out a public URL for ``media``. Returns whether a public URL may be issued.

    On a backend whose public URLs are bearer URLs (S3), records ``urls_exposed_at`` for the current
    keys — in the same statement that checks the post is still public and the keys unchanged, so a
    post hidden meanwhile either sees the mark (and rotates) or gets no public URL (False: issue a
    Django URL, which checks the viewer at request time). Writes at most once per key generation.
    """
    if not storage.issues_bearer_urls() or media.urls_exposed_at is not None:
        return True
    now = timezone.now()
    marked = Media.objects.filter(_public_q(), pk=media.pk, original_key=media.original_key).update(
        urls_exposed_at=now
    )
    if marked:
        media.urls_exposed_at = now
    return bool(marked)


@dataclass
class RevokeReport:
    """``rotated``: media whose keys changed; ``objects``: old objects deleted."""

    rotated: list[str] = field(default_factory=list)
    objects: int = 0


def _keys(media: Media) -> list[str]:
    keys = [media.original_key] if media.original_key else []
    keys += [v["key"] for v in (media.variants or {}).values() if isinstance(v, dict) and v.get("key")]
    return keys


def media_rotate_keys(*, media_id: UUID | str) -> int:
    """Give every stored object of one medium a new key and delete the old objects, if the medium had
    bearer URLs issued (``urls_exposed_at``) and is not public now. Returns how many old objects were
    deleted (0 when there was nothing to do). Idempotent and safe to repeat or to run concurrently:
    the row is locked while keys change; a run interrupted after the commit leaves the old keys in
    ``stale_keys`` and the mark set, so the next run deletes them.
    """
    with transaction.atomic():
        media = (
            lock_rows(Media.objects.all(), of=("self",)).select_related("post").filter(pk=media_id).first()
        )
        if media is None or media.urls_exposed_at is None or _is_public(media):
            return 0
        for key in media.stale_keys or []:
            storage.delete(key)
        mapping: dict[str, str] = {}
        for key in _keys(media):
            if key in mapping or not storage.exists(key):
                continue
            new = storage.rotated_key(key, user_id=media.owner_id, media_id=media.pk)
            storage.copy(key, new)  # server-side on S3; the object's Content-Type comes along
            mapping[key] = new
        tree_moves = _rotate_hls_tree(media, mapping)
        media.original_key = mapping.get(media.original_key, media.original_key)
        media.variants = {
            name: (
                {**v, "key": mapping.get(v["key"], v["key"])} if isinstance(v, dict) and v.get("key") else v
            )
            for name, v in (media.variants or {}).items()
        }
        media.stale_keys = sorted(set(mapping) | set(tree_moves))
        media.save(update_fields=["original_key", "variants", "stale_keys", "updated_at"])
    for key in media.stale_keys:
        storage.delete(key)
    with transaction.atomic():
        current = lock_rows(Media.objects.all(), of=("self",)).select_related("post").get(pk=media_id)
        fields: dict[str, Any] = {"stale_keys": [], "keys_rotated_at": timezone.now()}
        if not _is_public(current) and current.original_key == media.original_key:
            fields["urls_exposed_at"] = None  # else: public again and maybe exposed anew; keep the mark
        Media.objects.filter(pk=media_id).update(**fields)
    logger.info("media %s: rotated %s keys, old objects deleted", media_id, len(media.stale_keys))
    return len(media.stale_keys)


def _rotate_hls_tree(media: Media, mapping: dict[str, str]) -> dict[str, str]:
    """Move the whole HLS folder of a medium (``dirname(variants.hls.key)``: playlists, init and
    media segments) to a new random folder, keeping relative paths so the playlists' relative URIs
    still resolve; point ``mapping[master]`` at the new master. Returns {old key: new key} for every
    object of the tree (the old ones are deleted with the rest)."""
    hls = (media.variants or {}).get("hls")
    if not isinstance(hls, dict) or not hls.get("key"):
        return {}
    folder = posixpath.dirname(hls["key"])
    if not storage.key_belongs_to(folder, user_id=media.owner_id, media_id=media.pk):
        return {}
    new_folder = storage.rotated_tree(folder, user_id=media.owner_id, media_id=media.pk)
    moves = {}
    for key in storage.list_prefix(folder):
        new = new_folder + key[len(folder) :]
        if key in mapping:  # the master, copied with the flat keys above: put it in the tree instead
            storage.delete(mapping.pop(key))
        storage.copy(key, new)
        moves[key] = new
    if hls["key"] in moves:
        mapping[hls["key"]] = moves[hls["key"]]
    return moves


def media_revoke_post_urls(*, post_id: UUID | str) -> RevokeReport:
    """Break every URL issued for the media of a post that is no longer public (its own media and
    media derived from them, e.g. posters and cover art). Sent by name as the actor
    ``media_revoke_post_urls`` on commit of every transition out of ``published``."""
    report = RevokeReport()
    ids = Media.objects.filter(Q(post_id=post_id) | Q(parent__post_id=post_id), urls_exposed_at__isnull=False)
    for media_id in ids.values_list("pk", flat=True).distinct():
        deleted = media_rotate_keys(media_id=media_id)
        if deleted:
            report.rotated.append(str(media_id))
            report.objects += deleted
    return report


def media_revoke_overdue(*, grace: timedelta = OVERDUE_GRACE, limit: int = 500) -> RevokeReport:
    """The safety net for a lost message: rotate media that had bearer URLs issued and are no longer
    public, when their post changed more than ``grace`` ago (or they were detached or purged)."""
    report = RevokeReport()
    cutoff = timezone.now() - grace
    overdue = (
        Media.objects.filter(urls_exposed_at__isnull=False)
        .exclude(_public_q())
        .filter(Q(post__isnull=True) | Q(post__updated_at__lt=cutoff) | Q(updated_at__lt=cutoff))
    )
    for media_id in overdue.values_list("pk", flat=True)[:limit]:
        deleted = media_rotate_keys(media_id=media_id)
        if deleted:
            report.rotated.append(str(media_id))
            report.objects += deleted
    if report.rotated:
        logger.warning("revoked URLs of %s media whose message was lost", len(report.rotated))
    return report
