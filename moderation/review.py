"""Runs one AI review of a post revision: gathers the processed media, asks the provider, and
hands the verdict to ``moderation.services``. Fails closed: errors never publish anything."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from django.db.models import Q
from dramatiq.middleware import CurrentMessage

from content.models import Post
from media import storage
from media.models import Media, MediaKind, ProcessingStatus
from moderation.providers import get_provider
from moderation.providers.base import ProviderError, ReviewInput
from moderation.services import ai_review_record_failure, ai_verdict_apply, waiting_for_ai

logger = logging.getLogger("postflow.moderation.review")

IMAGE_VARIANT_PREFERENCE = ("medium", "small", "large", "thumb")
VIDEO_VARIANT_PREFERENCE = ("360p", "720p", "1080p")


class ReviewRetry(Exception):
    """Raised so Dramatiq retries the review with backoff."""


def _pick(variants: dict, names: tuple[str, ...]) -> dict | None:
    return next((variants[n] for n in names if n in variants), None)


def build_input(post: Post, workdir: Path, revision: int | None = None) -> ReviewInput:
    """What the provider judges: the submitted revision's text (title, body, link, content warning,
    alt texts) and its processed media. ``revision`` names the post's submitted ``PostRevision``
    (its number); without one (or for a post submitted before revisions) the post's own columns and
    attached media."""
    source = post.revisions.filter(number=revision).first() if revision is not None else None
    if source is not None:
        in_revision = Q(revision_items__revision=source) | Q(parent__revision_items__revision=source)
        media_qs = Media.objects.filter(pk__in=Media.objects.filter(in_revision, post=post).values("pk"))
        alt = list(source.items.values_list("description", flat=True))
    else:
        source, media_qs = post, Media.objects.attached().filter(post=post)
        alt = [getattr(m, "description", "") for m in media_qs]
    parts = (source.title, source.body, source.link_url, source.spoiler_text, *alt)
    text = "\n".join(part for part in parts if part)
    if hasattr(post, "poll"):
        text += "\n" + post.poll.question + "\n" + "\n".join(o.text for o in post.poll.options.all())
    item = ReviewInput(text=text, hints={"post_id": str(post.pk)})
    unfinished = media_qs.exclude(processing_status=ProcessingStatus.READY)
    if unfinished.exists():  # never judge a post by part of its media (fail closed: retried, then a human)
        raise ProviderError(f"{unfinished.count()} media of this post are not processed yet")
    media = media_qs.filter(processing_status=ProcessingStatus.READY).exclude(kind=MediaKind.TRANSCRIPT)
    for m in media:
        if m.kind in (MediaKind.IMAGE, MediaKind.THUMBNAIL):
            # The still variants show frame 1 only; an animation is screened from its original, which
            # has every frame (the public mp4 is made from it). The providers sample its frames.
            animated = bool(m.metadata.get("animated")) or int(m.metadata.get("frame_count") or 1) > 1
            chosen = None if animated else _pick(m.variants, IMAGE_VARIANT_PREFERENCE)
            key, ext = (chosen["key"], Path(chosen["key"]).suffix) if chosen else (m.original_key, "")
            item.image_paths.append(storage.download_to(key, workdir / f"{m.pk}-img{ext}"))
        elif m.kind in (MediaKind.VIDEO, MediaKind.LIVESTREAM_RECORDING):
            chosen = _pick(m.variants, VIDEO_VARIANT_PREFERENCE)
            key = chosen["key"] if chosen else m.original_key
            item.video_paths.append(storage.download_to(key, workdir / f"{m.pk}-video{Path(key).suffix}"))
            if "poster" in m.variants:
                poster = m.variants["poster"]["key"]
                item.poster_paths.append(
                    storage.download_to(poster, workdir / f"{m.pk}-poster{Path(poster).suffix}")
                )
    return item


def review_post_revision(*, post_id: str, revision: int, max_retries: int) -> None:
    """Review ``revision`` of the post unless it no longer waits for the AI (then: nothing). A
    provider error is recorded and raised as ``ReviewRetry`` until ``max_retries`` are spent; then the
    post stays ``pending_review`` for a human (fail closed)."""
    post = Post.objects.filter(pk=post_id).first()
    if post is None:
        return
    message = CurrentMessage.get_current_message()
    retries = message.options.get("retries", 0) if message else 0
    attempt = retries + 1
    if not waiting_for_ai(post, revision):
        logger.info("post %s revision %s is no longer waiting for the AI; skipping", post_id, revision)
        return
    provider = get_provider()
    workdir = Path(tempfile.mkdtemp(prefix="postflow-review-"))
    started = time.perf_counter()
    try:
        item = build_input(post, workdir, revision)
        result = provider.review(item)
        if not 0.0 <= float(result.overall) <= 1.0:
            raise ProviderError(f"provider returned an overall score out of range: {result.overall!r}")
    except Exception as exc:  # provider down, slow, garbage, or our own I/O: fail closed
        final = attempt > max_retries or not getattr(exc, "retryable", True)
        error = f"{type(exc).__name__}: {exc}"
        ai_review_record_failure(
            post_id=post_id,
            revision=revision,
            provider=provider.name,
            error=error,
            attempt=attempt,
            final=final,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        if not final:
            raise ReviewRetry(error) from exc
        logger.warning("AI review of post %s failed for good; left for a human: %s", post_id, error)
        return
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ai_verdict_apply(
        post_id=post_id,
        revision=revision,
        provider=result.provider,
        model=result.model,
        scores=result.scores,
        overall=float(result.overall),
        labels=result.labels,
        duration_ms=(time.perf_counter() - started) * 1000,
        attempt=attempt,
        raw=result.raw,
    )
