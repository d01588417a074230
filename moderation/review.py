"""Runs one AI review of a post revision: gathers the processed media, asks the provider, and
hands the verdict to ``moderation.services``. Fails closed: errors never publish anything."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import dramatiq
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from dramatiq.middleware import CurrentMessage

from content.models import Post
from media import storage
from media.models import Media, MediaKind, ProcessingStatus
from moderation.providers import get_provider
from moderation.providers.base import ProviderError, ReviewInput, TranscriptInput
from moderation.services import (
    ai_review_record_failure,
    ai_transcript_rescore_apply,
    ai_verdict_apply,
    waiting_for_ai,
)

logger = logging.getLogger("postflow.moderation.review")

IMAGE_VARIANT_PREFERENCE = ("medium", "small", "large", "thumb")
VIDEO_VARIANT_PREFERENCE = ("360p", "720p", "1080p")


class ReviewRetry(Exception):
    """Raised so Dramatiq retries the review with backoff."""


class TranscriptPending(Exception):
    """A transcript of the post's media is still being made: the verdict waits for it (issue 17)."""


HEARD_SUFFIX = ":heard"  # transcript cue scores of what the recogniser heard, before the creator's edits
TRANSCRIPT_POLL_SECONDS = 60  # the safety-net re-check; a finished transcript sends the review at once


def _transcripts(media_qs, held_edits: dict[str, int] | None = None) -> list[TranscriptInput]:
    """The cues of every transcript among ``media_qs`` (the reviewed revision's media and what derives
    from them). Raises ``TranscriptPending`` while one is being made, and a non-retryable
    ``ProviderError`` when one failed: the speech was never screened, so a human decides (fail
    closed)."""
    found = []
    for t in media_qs.filter(kind=MediaKind.TRANSCRIPT).order_by("created_at"):
        if t.processing_status in (ProcessingStatus.PENDING, ProcessingStatus.PROCESSING):
            raise TranscriptPending(f"the transcript {t.pk} is {t.processing_status}")
        if t.processing_status == ProcessingStatus.FAILED:
            raise ProviderError(
                f"The transcript of a medium failed ({t.processing_error or 'no detail'}); "
                "its speech could not be screened.",
                retryable=False,
            )
        # A held edit of the creator's (media.services.transcript_edit) is what goes public with this
        # verdict (moderation.services applies it when the post is published), so it is what is scored.
        pending = t.metadata.get("pending_edit") or {}
        if pending and held_edits is not None:
            held_edits[str(t.pk)] = int(pending.get("edit") or 0)  # the verdict applies this one only
        shown = pending.get("segments") or t.metadata.get("segments")
        cues = _cues(shown)
        if cues:
            found.append(TranscriptInput(media_id=str(t.pk), cues=cues))
        # What the recogniser heard before the creator's edits: an edit fixes captions, it does not
        # hide what was said (scored under "<id>:heard", which the review page shows beside the text).
        heard = _cues(t.metadata.get("speech_segments"))
        if heard and [c[2] for c in heard] != [c[2] for c in cues]:
            found.append(TranscriptInput(media_id=f"{t.pk}{HEARD_SUFFIX}", cues=heard))
    return found


def _cues(segments: list | None) -> list[tuple[float, float, str]]:
    """A transcript's stored segments ([start, end, text, confidence] rows) as the (start s, end s,
    text) cues a provider scores."""
    return [(float(c[0]), float(c[1]), str(c[2])) for c in segments or []]


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
    item.transcripts = _transcripts(media_qs, item.hints.setdefault("transcript_edits", {}))
    unfinished = media_qs.exclude(processing_status=ProcessingStatus.READY).exclude(kind=MediaKind.TRANSCRIPT)
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
        try:
            item = build_input(post, workdir, revision)
        except TranscriptPending as exc:
            if _wait_for_transcript(post, revision):
                logger.info("post %s waits for its transcript (%s)", post_id, exc)
                return
            raise ProviderError(
                f"The transcript was not ready within {settings.SPEECH_PRESCREEN_WAIT_SECONDS} s; "
                "its speech could not be screened.",
                retryable=False,
            ) from exc
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
    held_edits = item.hints.get("transcript_edits") or {}
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
        raw={**result.raw, "transcript_edits": held_edits} if held_edits else result.raw,
    )


def _wait_for_transcript(post: Post, revision: int) -> bool:
    """While the post is within ``SPEECH_PRESCREEN_WAIT_SECONDS`` of its submission, look again
    later (a finished transcript also sends the review at once: ``content.services
    .post_transcript_settled``) and return True. Past the bound, False: a human decides."""
    submitted = post.submitted_at or post.updated_at
    left = (
        submitted + timedelta(seconds=settings.SPEECH_PRESCREEN_WAIT_SECONDS) - timezone.now()
    ).total_seconds()
    if left <= 0:
        return False
    delay_ms = int(min(left + 1, TRANSCRIPT_POLL_SECONDS) * 1000)
    dramatiq.get_broker().get_actor("review_post").send_with_options(
        args=(str(post.pk), revision), delay=delay_ms
    )
    return True


def transcript_rescore(
    *, post_id: str, media_id: str, revision: int, max_retries: int, edit: int | None = None
) -> None:
    """Score the held edit ``edit`` of the transcript ``media_id`` of a published post (text only,
    cue by cue; ``media.services.transcript_edit`` holds it) and let
    ``moderation.services.ai_transcript_rescore_apply`` publish it or hold the post by the usual bands.
    An edit that is no longer held (replaced by a newer one, or applied) is not scored. Provider
    errors are retried; when retries are spent the post goes to a human (fail closed: an edit that
    could not be screened never reaches the public unreviewed)."""
    post = Post.objects.filter(pk=post_id).first()
    transcript = Media.objects.attached().filter(pk=media_id, kind=MediaKind.TRANSCRIPT).first()
    if post is None or transcript is None:
        return
    pending = transcript.metadata.get("pending_edit") or {}
    if not pending or (edit is not None and int(pending.get("edit") or 0) != int(edit)):
        logger.info("transcript %s: edit %s is no longer held; not scored", media_id, edit)
        return
    edit = int(pending["edit"])
    message = CurrentMessage.get_current_message()
    attempt = (message.options.get("retries", 0) if message else 0) + 1
    cues = _cues(pending.get("segments"))
    spoken = TranscriptInput(media_id=str(transcript.pk), cues=cues)
    item = ReviewInput(text="", transcripts=[spoken], hints={"post_id": post_id})
    provider = get_provider()
    started = time.perf_counter()
    try:
        result = provider.review(item)
        if not 0.0 <= float(result.overall) <= 1.0:
            raise ProviderError(f"provider returned an overall score out of range: {result.overall!r}")
    except Exception as exc:
        final = attempt > max_retries or not getattr(exc, "retryable", True)
        ai_transcript_rescore_apply(
            post_id=post_id,
            revision=revision,
            media_id=media_id,
            edit=edit,
            provider=provider.name,
            error=f"{type(exc).__name__}: {exc}",
            final=final,
            duration_ms=(time.perf_counter() - started) * 1000,
            attempt=attempt,
        )
        if not final:
            raise ReviewRetry(str(exc)) from exc
        return
    ai_transcript_rescore_apply(
        post_id=post_id,
        revision=revision,
        media_id=media_id,
        edit=edit,
        provider=result.provider,
        model=result.model,
        scores=result.scores,
        overall=float(result.overall),
        labels=result.labels,
        raw=result.raw,
        duration_ms=(time.perf_counter() - started) * 1000,
        attempt=attempt,
    )
