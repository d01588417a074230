"""The Media processing lifecycle: the one module that writes ``Media.processing_status``.

    pending --dispatch/requeue/retry--> (queued) --claim--> processing --complete--> ready
                                                                       --fail------> pending (retry) | failed

``claim`` takes the row under a lock and hands out an attempt token; ``complete`` and ``fail`` change
the row only while that token still owns it, so a late, superseded attempt never overwrites a newer
one. Idempotent: a duplicate message for ready media, or for media a live attempt owns, does nothing.
Messages are sent by actor name (``config.queueing``): this module never imports ``media.tasks``.
The post's side of each change goes through content's transitions (``content.services``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from config import queueing
from config.errors import InvalidTransition, NotFound
from config.locking import lock_rows, retry_lock_conflicts
from content.notifications import media_progress, media_transitioned
from content.services import (
    MEDIA_EDITABLE_STATUSES,
    post_media_blocked,
    post_media_settled,
    post_processing_started,
    post_transcript_settled,
)
from media import storage
from media.middleware import current_job, peak_memory_kb
from media.models import Media, MediaKind, ProcessingStatus, ProcessorRun, RunResult
from media.processors import get_processor, has_processor
from media.processors.base import ProcessingError, ProcessorResult, StepLog
from media.processors.video import HLS_MIME

logger = logging.getLogger("postflow.media.processing")

PROGRESS_EVERY_SECONDS = 1.0


def actor_name(kind: str) -> str:
    """The Dramatiq actor that processes ``kind`` (declared in ``media/tasks/<kind>.py``)."""
    return f"process_{kind}_media"


# --- queueing -------------------------------------------------------------------------------------


def dispatch(media: Media) -> None:
    """Queue processing after commit, or mark the media ready at once when the operator switched
    processing off (its bytes are already verified: ``sha256`` is known). With the event trigger
    off nothing is sent: the sweep picks it up."""
    from moderation.platform import get_platform_settings

    ps = get_platform_settings()
    if not ps.post_processing_enabled and media.sha256:
        media.processing_status = ProcessingStatus.READY
        media.processed_at = timezone.now()
        media.metadata = {**media.metadata, "bypass": True, "bypass_reason": "post_processing_enabled is off"}
        media.save(update_fields=["processing_status", "processed_at", "metadata", "updated_at"])
        media_transitioned(media)
        _settle_on_commit(media)
        return
    if not ps.processor_event_trigger_media_enabled:
        return
    send_on_commit(media)


def send_on_commit(media: Media) -> None:
    """Send the media's processing message once the transaction commits (kinds without a
    processor are never sent). A broker failure leaves it ``pending`` for the sweep."""
    if has_processor(media.kind):
        queueing.send_on_commit(actor_name(media.kind), str(media.pk))


@transaction.atomic
def retry(*, media_id: UUID | str, actor: AbstractBaseUser) -> Media:
    """The owner (or staff) retries failed media: a fresh set of attempts, queued again, and its
    draft post back in ``processing``. NotFound for media the actor may not see; InvalidTransition
    unless the media is ``failed`` and its post a draft (or processing)."""
    try:
        media = lock_rows(Media.objects.live(), of=("self",)).select_related("post").get(pk=media_id)
    except (Media.DoesNotExist, ValueError):
        raise NotFound("Media not found.") from None
    if media.owner_id != actor.pk and not actor.is_staff:
        raise NotFound("Media not found.")
    if media.processing_status != ProcessingStatus.FAILED:
        raise InvalidTransition(f"Only failed media can be retried; this one is {media.processing_status}.")
    if media.post and media.post.status not in MEDIA_EDITABLE_STATUSES:
        raise InvalidTransition(f"Media of a {media.post.status} post cannot be retried; unpublish it first.")
    media.processing_status = ProcessingStatus.PENDING
    media.processing_error = ""
    media.attempts = 0  # an explicit retry grants a fresh set of attempts
    media.failed_permanently = False
    media.attempt_token = None
    media.save(
        update_fields=[
            "processing_status",
            "processing_error",
            "attempts",
            "attempt_token",
            "failed_permanently",
            "updated_at",
        ]
    )
    media_transitioned(media)
    if media.post_id and media.is_primary:
        post_processing_started(post_id=media.post_id)
    dispatch(media)
    return media


@dataclass
class Requeued:
    """What ``requeue`` found (the row as it was) and whether it changed it."""

    media: Media
    status_before: str
    attempts_before: int
    idle_since: datetime


def requeue(
    *, media_id: UUID | str, candidates: QuerySet, reset_attempts: bool = False, dry_run: bool = False
) -> Requeued | None:
    """The sweep's write: under a row lock, if the media still matches ``candidates`` (it may have
    finished meanwhile: then None), set it ``pending`` and queue it after commit. A superseded
    attempt that still runs loses its token and is dropped when it finishes. ``reset_attempts``
    (failed media only) restarts its attempts. ``dry_run`` reports without writing."""
    with transaction.atomic():
        media = lock_rows(Media.objects.filter(pk=media_id)).first()
        if media is None or not candidates.filter(pk=media_id).exists():
            return None
        found = Requeued(media, media.processing_status, media.attempts, media.updated_at)
        if dry_run:
            return found
        now = timezone.now()
        if found.status_before == ProcessingStatus.FAILED and reset_attempts:
            media.attempts = 0
            media.failed_permanently = False
        media.processing_status = ProcessingStatus.PENDING
        media.attempt_token = None
        media.metadata = {**media.metadata, "swept_at": now.isoformat(), "swept_from": found.status_before}
        media.save(
            update_fields=[
                "processing_status",
                "attempt_token",
                "attempts",
                "failed_permanently",
                "metadata",
                "updated_at",
            ]
        )
        media_transitioned(media)
        send_on_commit(media)
    return found


# --- a worker's attempt ----------------------------------------------------------------------------


@dataclass
class Claim:
    """One attempt's ownership of a media row: valid while ``Media.attempt_token == token``."""

    media: Media
    run: ProcessorRun
    token: uuid.UUID


class OwnerAtCapacity(Exception):
    """The media's owner already has ``MEDIA_MAX_CONCURRENT_PER_USER`` media of this kind being
    processed: the message should come back later (it used no attempt)."""

    def __init__(self, media_id: str, active: int):
        super().__init__(f"media {media_id}: its owner already has {active} being processed")
        self.active = active


def heartbeat_stale_before() -> datetime:
    """Heartbeats older than this mean the attempt is gone: it no longer counts as running (for
    fairness) and the sweep may take its row over."""
    return timezone.now() - timedelta(seconds=settings.MEDIA_HEARTBEAT_STALE_SECONDS)


def _last_sign_of_life(media: Media) -> datetime:
    return max(t for t in (media.heartbeat_at, media.updated_at) if t is not None)


def _owner_active(media: Media) -> int:
    """How many other media of this owner and kind a live attempt is processing. The owner's row
    is locked first so that two workers never both see a free slot (PostgreSQL; SQLite serialises
    write transactions anyway)."""
    list(lock_rows(get_user_model().objects.filter(pk=media.owner_id)).values_list("pk"))
    return (
        Media.objects.filter(
            owner_id=media.owner_id,
            kind=media.kind,
            processing_status=ProcessingStatus.PROCESSING,
            heartbeat_at__gte=heartbeat_stale_before(),
        )
        .exclude(pk=media.pk)
        .count()
    )


def claim(media_id: UUID | str, kind: str) -> Claim | None:
    """Take the media for this worker's attempt: ``processing``, one more attempt, a new token and
    a ``ProcessorRun``. Returns None when there is nothing to do (gone, detached, ready, owned by
    a live attempt, attempts exhausted; exhausted poison media is marked ``failed`` here). Raises
    ``OwnerAtCapacity`` when the owner's other media of this kind hold every slot they may use."""
    job = current_job()
    message_id = job.message_id
    with transaction.atomic():
        media = lock_rows(Media.objects.filter(pk=media_id), of=("self",)).select_related("post").first()
        if media is None or media.detached_at or media.purged_at:
            logger.info("media %s is gone or detached; nothing to do", media_id)
            return None
        before = media.processing_status
        skip_reason = None
        redelivered = False
        stuck_before = timezone.now() - timedelta(minutes=settings.MEDIA_STUCK_MINUTES)
        if before == ProcessingStatus.READY:
            skip_reason = "already ready"
        elif before == ProcessingStatus.PROCESSING and _last_sign_of_life(media) > stuck_before:
            # Redis redelivers a message only once the worker holding it is dead: the same message id
            # as the running attempt means that attempt died (OOM, SIGKILL). Anything else is a duplicate.
            redelivered = (
                bool(message_id)
                and ProcessorRun.objects.filter(
                    media=media, result=RunResult.RUNNING, message_id=message_id
                ).exists()
            )
            if not redelivered:
                skip_reason = "another attempt is processing it"
        elif before == ProcessingStatus.FAILED and media.attempts >= settings.MEDIA_MAX_ATTEMPTS:
            skip_reason = "attempts exhausted; use retry"
        if skip_reason:
            logger.info("media %s: %s (message %s)", media_id, skip_reason, message_id)
            return None
        base = dict(
            media=media,
            post=media.post,
            owner_id=media.owner_id,
            processor=kind,
            actor=job.actor_name,
            queue=job.queue_name,
            message_id=message_id,
            status_before=before,
        )
        if media.attempts >= settings.MEDIA_MAX_ATTEMPTS:
            # Poison: every earlier claim died without finishing (OOM, segfault, SIGKILL).
            media.processing_status = ProcessingStatus.FAILED
            media.processing_error = (
                f"Processing stopped {media.attempts} times without finishing; the file may be damaged. "
                "Try re-exporting it, or retry."
            )
            media.attempt_token = None
            media.save(update_fields=["processing_status", "processing_error", "attempt_token", "updated_at"])
            media_transitioned(media)
            ProcessorRun.objects.create(
                **base,
                attempt=media.attempts,
                status_after=media.processing_status,
                result=RunResult.FAILED,
                error_class="AttemptsExhausted",
                error_message=media.processing_error,
                completed_at=timezone.now(),
                duration_ms=0,
            )
            _settle_on_commit(media)
            return None
        cap = settings.MEDIA_MAX_CONCURRENT_PER_USER
        if cap > 0 and (active := _owner_active(media)) >= cap:
            raise OwnerAtCapacity(str(media.pk), active)
        # Runs still "running" belong to attempts whose worker died (a redelivery says so), or that the
        # sweep declared stuck: close them honestly. A superseded attempt that finishes later is dropped.
        ProcessorRun.objects.filter(media=media, result=RunResult.RUNNING).update(
            result=RunResult.FAILED,
            status_after=before,
            error_class="WorkerLost" if redelivered else "Superseded",
            error_message="The worker stopped before this attempt finished."
            if redelivered
            else "A newer attempt took over (the sweep found this one stuck).",
            completed_at=timezone.now(),
        )
        token = uuid.uuid4()
        now = timezone.now()
        media.processing_status = ProcessingStatus.PROCESSING
        media.attempts += 1
        media.attempt_token = token
        media.processing_started_at = now
        media.heartbeat_at = now
        media.save(
            update_fields=[
                "processing_status",
                "attempts",
                "attempt_token",
                "processing_started_at",
                "heartbeat_at",
                "updated_at",
            ]
        )
        media_transitioned(media, progress=0.0)
        processor = get_processor(kind)
        run = ProcessorRun.objects.create(
            **base,
            attempt=media.attempts,
            processor_class=f"{type(processor).__module__}.{type(processor).__name__}",
        )
    return Claim(media=media, run=run, token=token)


def progress_writer(claim: Claim):
    """A ``StepLog`` callback: persists the steps (at most every ``PROGRESS_EVERY_SECONDS`` while a
    step runs) and the attempt's heartbeat (``Media.heartbeat_at``, at most every
    ``MEDIA_HEARTBEAT_SECONDS``). Processors report progress at least every few seconds during long
    steps, so a fresh heartbeat means the attempt is alive, however long it runs."""
    last_steps = [0.0]
    last_beat = [timezone.now()]
    last_event = [0.0, None]

    def write(steps: list[dict]) -> None:
        import time

        now = time.monotonic()
        running_step = steps[-1] if steps and steps[-1].get("status") == "running" else {}
        percent = (running_step.get("output") or {}).get("percent")
        if (
            percent is not None
            and percent != last_event[1]
            and now - last_event[0] >= settings.EVENTS_PROGRESS_INTERVAL_SECONDS
        ):
            # The processor's own progress (ffmpeg's out_time over the duration), as a live event.
            last_event[:] = [now, percent]
            media_progress(claim.media, percent)
        running = bool(steps) and steps[-1]["status"] == "running"
        if not running or now - last_steps[0] >= PROGRESS_EVERY_SECONDS:
            last_steps[0] = now
            ProcessorRun.objects.filter(pk=claim.run.pk).update(steps=steps)
        wall = timezone.now()
        if (wall - last_beat[0]).total_seconds() >= settings.MEDIA_HEARTBEAT_SECONDS:
            last_beat[0] = wall
            Media.objects.filter(pk=claim.media.pk, attempt_token=claim.token).update(heartbeat_at=wall)

    return write


def heartbeat(claim: Claim) -> bool:
    """Record that the attempt is alive now. False when it no longer owns the row."""
    return bool(
        Media.objects.filter(pk=claim.media.pk, attempt_token=claim.token).update(heartbeat_at=timezone.now())
    )


def owns(claim: Claim) -> bool:
    """True while this attempt still owns the row (no newer attempt took it over)."""
    return Media.objects.filter(pk=claim.media.pk, attempt_token=claim.token).exists()


def record_checksum(claim: Claim, sha256: str) -> None:
    """Store the sha256 the worker computed (files sent straight to S3 are hashed only there)."""
    Media.objects.filter(pk=claim.media.pk).update(sha256=sha256)
    claim.media.sha256 = sha256


def record_pdq_hashes(claim: Claim, hashes: list[dict]) -> None:
    """Store the PDQ hashes the worker computed (``[{hash, quality, source}]``)."""
    Media.objects.filter(pk=claim.media.pk).update(pdq_hashes=hashes)
    claim.media.pdq_hashes = hashes


def rekind(claim: Claim, *, kind: str, mime_type: str) -> bool:
    """The worker read the tracks of a file whose kind waited for them (``tracks_pending``, an upload
    sent straight to S3): record the kind they give (e.g. a WebM voice note is ``audio``) and its
    MIME type, and file this attempt's run under that kind's processor. Returns False (and changes
    nothing) when a newer attempt owns the row."""
    with transaction.atomic():
        media = _lock_owned(claim)
        if media is None:
            return False
        metadata = {k: v for k, v in media.metadata.items() if k != "tracks_pending"}
        if media.kind != kind:
            metadata["kind_before_tracks"] = media.kind
        metadata["kind_from"] = "tracks"
        media.kind, media.mime_type, media.metadata = kind, mime_type, metadata
        media.save(update_fields=["kind", "mime_type", "metadata", "updated_at"])
        ProcessorRun.objects.filter(pk=claim.run.pk).update(processor=kind)
    claim.media.kind, claim.media.mime_type, claim.media.metadata = kind, mime_type, metadata
    claim.run.processor = kind
    return True


@transaction.atomic
def record_blocked(claim: Claim, *, match: dict | None = None) -> None:
    """The bytes are on the moderators' blocklist (the platform quarantines them): flag the media
    and its post (``content.services.post_media_blocked``). ``match`` says which blocked PDQ hash a
    near-duplicate matched (kept in the media's metadata as ``blocked_match``)."""
    media = claim.media
    media.metadata = {**media.metadata, "blocked_media": True, **({"blocked_match": match} if match else {})}
    Media.objects.filter(pk=media.pk).update(metadata=media.metadata)
    if media.post_id:
        post_media_blocked(post_id=media.post_id)


def _lock_owned(claim: Claim) -> Media | None:
    media = lock_rows(Media.objects.filter(pk=claim.media.pk)).first()
    if media is None or media.attempt_token != claim.token:
        return None
    return media


def complete(claim: Claim, result: ProcessorResult, variants: dict[str, dict], steps: StepLog) -> bool:
    """Mark the media ``ready`` with the processor's facts and the stored ``variants``
    (name -> {key, width, height, mime_type, size_bytes}), create its derived media, and settle
    its post after commit. Variants it no longer has are deleted after commit. Returns False (and
    changes nothing) when a newer attempt owns the row."""
    with transaction.atomic():
        media = _lock_owned(claim)
        if media is None:
            drop_stale(claim, steps)
            return False
        old_keys = {v.get("key") for v in media.variants.values()} - {v["key"] for v in variants.values()}
        media.processing_status = ProcessingStatus.READY
        media.processing_error = ""
        media.width, media.height = result.width, result.height
        media.duration_seconds = result.duration_seconds
        media.blurhash = result.blurhash or ""
        if result.mime_type:
            media.mime_type = result.mime_type
        if media.kind == MediaKind.TRANSCRIPT and "captions" in variants:
            result.metadata["hls_subtitles"] = _subtitles_into_parent(
                media, variants["captions"], result, steps
            )
        elif isinstance(variants.get("hls"), dict):
            variants = _with_transcript_subtitles(media, variants, result, steps)
        media.metadata = {**media.metadata, **result.metadata}
        media.variants = variants
        media.attempt_token = None
        media.processed_at = timezone.now()
        media.save(
            update_fields=[
                "processing_status",
                "processing_error",
                "width",
                "height",
                "duration_seconds",
                "blurhash",
                "mime_type",
                "metadata",
                "variants",
                "attempt_token",
                "processed_at",
                "updated_at",
            ]
        )
        for extra in result.extra_media:
            _create_derived(media, extra)
        _start_transcript(media)
        media_transitioned(media)
        finish_run(claim, steps, RunResult.SUCCEEDED, media.processing_status)
        _settle_on_commit(media)
        for key in old_keys:
            transaction.on_commit(lambda k=key: storage.delete(k))
    return True


def _create_derived(parent: Media, extra) -> None:
    derived_id = uuid.uuid4()
    key = storage.media_key(parent.owner_id, derived_id, "original", extra.path.suffix or ".bin")
    storage.save(key, extra.path, extra.mime_type)
    variants = {}
    res = extra.result
    if res is not None:
        for v in res.variants:
            vkey = storage.media_key(parent.owner_id, derived_id, v.name, v.path.suffix or ".bin")
            storage.save(vkey, v.path, v.mime_type)
            variants[v.name] = {
                "key": vkey,
                "width": v.width,
                "height": v.height,
                "mime_type": v.mime_type,
                "size_bytes": v.size_bytes,
                "sha256": storage.file_sha256(v.path),
            }
    Media.objects.filter(parent=parent, kind=extra.kind).delete()
    Media.objects.create(
        id=derived_id,
        post=parent.post,
        owner_id=parent.owner_id,
        parent=parent,
        kind=extra.kind,
        is_primary=False,
        processing_status=ProcessingStatus.READY,
        original_key=key,
        mime_type=extra.mime_type,
        size_bytes=extra.path.stat().st_size,
        sha256="",
        width=res.width if res else None,
        height=res.height if res else None,
        blurhash=(res.blurhash or "") if res else "",
        variants=variants,
        metadata=res.metadata if res else {},
        processed_at=timezone.now(),
    )


# --- transcripts (issue 17): a derived ``transcript`` medium per audio or video with sound ---------------

SPEECH_KINDS = (MediaKind.AUDIO, MediaKind.VIDEO, MediaKind.LIVESTREAM_RECORDING)
# The parent's file the speech step decodes: the smallest rendition that carries its sound.
SPEECH_SOURCE_PREFERENCE = ("audio", "m4a", "360p", "480p", "720p", "1080p")


def source_of(media: Media) -> tuple[str, str]:
    """The storage key and MIME type a worker downloads for ``media``: its original, or for a
    transcript its parent's smallest rendition with sound (the parent's original otherwise)."""
    if media.kind != MediaKind.TRANSCRIPT or media.parent_id is None:
        return media.original_key, media.mime_type
    parent = Media.objects.get(pk=media.parent_id)
    for name in SPEECH_SOURCE_PREFERENCE:
        variant = (parent.variants or {}).get(name)
        if isinstance(variant, dict) and variant.get("key"):
            return variant["key"], variant.get("mime_type") or parent.mime_type
    return parent.original_key, parent.mime_type


def _start_transcript(media: Media) -> None:
    """After an audio or video medium is ready: create its ``transcript`` medium (pending) and send
    the speech step (queue ``media.speech``) after commit. Nothing when speech is off, the medium
    was not processed (bypass), has no audio track, or already has a transcript (idempotent)."""
    from media import speech

    if media.kind not in SPEECH_KINDS or media.metadata.get("bypass") or not speech.enabled():
        return
    if media.kind != MediaKind.AUDIO and media.metadata.get("has_audio") is False:
        media.metadata = {**media.metadata, "transcript": {"skipped": "no audio track"}}
        Media.objects.filter(pk=media.pk).update(metadata=media.metadata)
        return
    if Media.objects.filter(parent=media, kind=MediaKind.TRANSCRIPT).exists():
        return
    transcript_id = uuid.uuid4()
    transcript = Media.objects.create(
        id=transcript_id,
        post_id=media.post_id,
        owner_id=media.owner_id,
        parent=media,
        kind=MediaKind.TRANSCRIPT,
        is_primary=False,
        position=media.position,
        processing_status=ProcessingStatus.PENDING,
        # The plain text is stored here by the speech step (its ``text`` variant has the same key).
        original_key=storage.media_key(media.owner_id, transcript_id, "text", ".txt"),
        mime_type="text/plain",
        sha256="",
        metadata={"speech_provider": speech.provider_name()},
    )
    dispatch(transcript)  # the event-trigger toggle applies as to any medium (else the sweep sends it)


# --- the transcript's captions as a subtitle rendition of the video's HLS tree ----------------------------
#
# Writing ``subs/<lang>.vtt`` and ``subs/<lang>.m3u8`` and rewriting the master playlist changes objects
# whose sha256 the video's row records (``variants.hls.sha256`` and ``variants.hls.files``: the ETags
# ``/m/h/…`` answers with). So every such rewrite happens here, under the video's row lock, and records
# the new sha256s in the same transaction: two writers of one tree (the speech step finishing, and a new
# processing attempt of the video rewriting the tree) take turns, and the one that comes second finds the
# other's work (a ready transcript, or the new tree) and puts the subtitles in again.

SUBTITLE_NAMES = {"en": "English"}


def _subtitles_into_parent(
    transcript: Media, captions: dict, result: ProcessorResult, steps: StepLog
) -> dict | None:
    """The speech step finished (its row is locked by ``complete``): put its ``captions`` into the
    parent video's HLS tree. Returns what was written, or None when the parent has no HLS tree."""
    language = captions.get("language") or result.metadata.get("language") or "en"
    return _put_subtitles(transcript.parent_id, captions, language, result.duration_seconds, steps)


def refresh_hls_subtitles(*, transcript_id: UUID | str) -> dict | None:
    """Put a ready transcript's current captions into its video's HLS tree again, e.g. after its owner
    corrected them (the edit stores them under new keys; the tree's copy is rewritten in place, and its
    new sha256s recorded). Run it after the change commits. Returns what was written, or None when
    there is nothing to do (no such ready transcript, no captions, no HLS tree)."""
    with transaction.atomic():
        # The transcript's row lock first (then the video's, as the speech step's ``complete`` takes
        # them): two corrections in quick succession write the tree one after the other, the newest last.
        transcript = lock_rows(
            Media.objects.filter(
                pk=transcript_id, kind=MediaKind.TRANSCRIPT, processing_status=ProcessingStatus.READY
            )
        ).first()
        found = _captions_of(transcript)
        if found is None or not transcript.parent_id:
            return None
        captions, language = found
        return _put_subtitles(transcript.parent_id, captions, language, None, StepLog())


def _put_subtitles(
    parent_id: UUID | str, captions: dict, language: str, duration: float | None, steps: StepLog
) -> dict | None:
    """Under the parent's row lock (inside the caller's transaction): write the subtitle rendition
    into the parent's current HLS tree and record the master's and the subs files' new sha256s."""
    parent = lock_rows(Media.objects.filter(pk=parent_id)).first()
    hls = (parent.variants or {}).get("hls") if parent else None
    if not isinstance(hls, dict) or not hls.get("key"):
        return None
    hls_after = _write_subtitles(hls, captions, language, parent.duration_seconds or duration, steps)
    parent.variants = {**parent.variants, "hls": hls_after}
    parent.save(update_fields=["variants", "updated_at"])
    return _subtitle_keys(hls, language)


def _with_transcript_subtitles(
    media: Media, variants: dict[str, dict], result: ProcessorResult, steps: StepLog
) -> dict[str, dict]:
    """A new attempt of a video (its row locked by ``complete``) stored a new HLS tree: when the video
    already has a ready transcript with captions, copy them into the new tree (no new transcription)
    and return ``variants`` with what that wrote recorded. A failure here leaves the new tree as the
    processor wrote it (the master is rewritten last) and the video ready without subtitles."""
    transcript = (
        Media.objects.attached()
        .filter(parent=media, kind=MediaKind.TRANSCRIPT, processing_status=ProcessingStatus.READY)
        .order_by("-created_at")
        .first()
    )
    found = _captions_of(transcript)
    if found is None:
        return variants
    captions, language = found
    try:
        hls = _write_subtitles(variants["hls"], captions, language, result.duration_seconds, steps)
    except Exception:
        logger.exception(
            "media %s: the transcript's subtitles could not be put in the new HLS tree", media.pk
        )
        return variants
    return {**variants, "hls": hls}


def _captions_of(transcript: Media | None) -> tuple[dict, str] | None:
    """A ready transcript's ``captions`` variant and its language, or None when it has none."""
    captions = (transcript.variants or {}).get("captions") if transcript else None
    if not isinstance(captions, dict) or not captions.get("key"):
        return None
    return captions, captions.get("language") or transcript.metadata.get("language") or "en"


def _subtitle_keys(hls: dict, language: str) -> dict:
    folder = posixpath.dirname(hls["key"])
    return {
        "vtt_key": f"{folder}/subs/{language}.vtt",
        "playlist_key": f"{folder}/subs/{language}.m3u8",
        "master_key": hls["key"],
    }


def _write_subtitles(
    hls: dict, captions: dict, language: str, duration: float | None, steps: StepLog
) -> dict:
    """Copy the WebVTT at ``captions["key"]`` into the tree of ``hls`` (``variants.hls``) as
    ``subs/<lang>.vtt`` with its playlist, then rewrite the master with the ``#EXT-X-MEDIA:TYPE=SUBTITLES``
    entry (last, so it never names a missing file). Returns ``hls`` with the master's new sha256 and
    size and the subs files' {size_bytes, sha256} in ``files``: the caller saves it under the row lock."""
    from media.speech import captions as webvtt

    keys = _subtitle_keys(hls, language)
    folder = posixpath.dirname(hls["key"])
    with steps.step("hls_subtitles", folder=folder, captions=captions["key"]) as s:
        with storage.open_read(captions["key"]) as fh:
            vtt = fh.read()
        playlist = webvtt.subtitle_playlist(duration=duration or 0.0, vtt_name=f"{language}.vtt").encode()
        with storage.open_read(hls["key"]) as fh:
            master = fh.read().decode("utf-8")
        master = webvtt.with_subtitles(
            master,
            uri=f"subs/{language}.m3u8",
            language=language,
            name=SUBTITLE_NAMES.get(language, language),
        ).encode()
        files = {
            name: entry for name, entry in (hls.get("files") or {}).items() if not name.startswith("subs/")
        }
        for key, body, mime in (
            (keys["vtt_key"], vtt, "text/vtt"),
            (keys["playlist_key"], playlist, HLS_MIME),
        ):
            storage.save(key, io.BytesIO(body), mime)
            files[key[len(folder) + 1 :]] = {
                "size_bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        storage.save(hls["key"], io.BytesIO(master), HLS_MIME)
        s.output = {"vtt": keys["vtt_key"], "playlist": keys["playlist_key"]}
    updated = {**hls, "sha256": hashlib.sha256(master).hexdigest(), "size_bytes": len(master), "files": files}
    if "total_bytes" in hls:
        updated["total_bytes"] = len(master) + sum(int(f.get("size_bytes") or 0) for f in files.values())
    return updated


def fail(claim: Claim, exc: BaseException, steps: StepLog, *, retryable: bool, message: str = "") -> bool:
    """Record a failed attempt. Retryable failures with attempts left go back to ``pending``
    (returns True: the caller lets the broker re-deliver with backoff); anything else is ``failed``,
    with ``failed_permanently`` when retrying cannot help, and the post is settled. ``message`` is
    shown to the creator (default: the ProcessingError's text). Returns False when a newer attempt
    owns the row."""
    if not message:
        message = (
            str(exc)
            if isinstance(exc, ProcessingError)
            else f"Processing failed unexpectedly ({type(exc).__name__})."
        )
    with transaction.atomic():
        media = _lock_owned(claim)
        if media is None:
            drop_stale(claim, steps)
            return False
        will_retry = retryable and media.attempts < settings.MEDIA_MAX_ATTEMPTS
        media.processing_status = ProcessingStatus.PENDING if will_retry else ProcessingStatus.FAILED
        media.processing_error = (
            f"Attempt {media.attempts} failed: {message} Retrying." if will_retry else message
        )
        if not will_retry and retryable:
            media.processing_error = f"{message} (gave up after {media.attempts} attempts)"
        media.attempt_token = None
        media.failed_permanently = not retryable
        media.save(
            update_fields=[
                "processing_status",
                "processing_error",
                "attempt_token",
                "failed_permanently",
                "updated_at",
            ]
        )
        media_transitioned(media)
        finish_run(
            claim,
            steps,
            RunResult.RETRYING if will_retry else RunResult.FAILED,
            media.processing_status,
            error=(type(exc).__name__, (str(exc) or message)[:4000]),
        )
        if not will_retry:
            _settle_on_commit(media)
    return will_retry


def drop_stale(claim: Claim, steps: StepLog) -> None:
    """Close the run of an attempt that lost its row to a newer one; its result is dropped."""
    logger.info(
        "media %s: attempt %s lost ownership; its result is dropped", claim.media.pk, claim.run.attempt
    )
    finish_run(
        claim, steps, RunResult.SKIPPED, "", error=("StaleAttempt", "A newer attempt owns this media.")
    )


def finish_run(
    claim: Claim, steps: StepLog, result: str, status_after: str, error: tuple[str, str] | None = None
) -> None:
    """Close the attempt's ``ProcessorRun`` (steps, duration, peak memory, error) and log it."""
    duration_ms = current_job().elapsed_ms() if current_job().message_id else _since_claim_ms(claim)
    peak_kb = peak_memory_kb()
    ProcessorRun.objects.filter(pk=claim.run.pk).update(
        result=result,
        status_after=status_after,
        steps=steps.as_list(),
        duration_ms=duration_ms,
        peak_memory_kb=peak_kb,
        error_class=error[0] if error else "",
        error_message=error[1] if error else "",
        completed_at=timezone.now(),
    )
    run = claim.run
    logger.info(
        "processor run %s on media %s: %s in %.0f ms",
        run.processor,
        claim.media.pk,
        result,
        duration_ms,
        extra={
            "event": "processor_run",
            "run_id": run.pk,
            "media_id": str(claim.media.pk),
            "post_id": str(claim.media.post_id) if claim.media.post_id else None,
            "processor": run.processor,
            "message_id": run.message_id,
            "attempt": run.attempt,
            "result": result,
            "status_after": status_after,
            "duration_ms": duration_ms,
            "peak_memory_kb": peak_kb,
            "error_class": error[0] if error else "",
        },
    )


def _since_claim_ms(claim: Claim) -> float:
    return round(max((timezone.now() - claim.run.started_at).total_seconds(), 0.0) * 1000, 1)


def _settle_on_commit(media: Media) -> None:
    """After commit, let the post leave ``processing``. A lost lock race is tried again
    (``retry_lock_conflicts``); any other failure is logged, never mistaken for a processing failure,
    and the post sweep settles such posts later."""
    if media.post_id:
        post_id = media.post_id
        if media.kind == MediaKind.TRANSCRIPT:  # the prescreen may be waiting for it
            transaction.on_commit(lambda: post_transcript_settled(post_id=post_id), robust=True)
            return
        transaction.on_commit(
            lambda: retry_lock_conflicts(
                lambda: post_media_settled(post_id=post_id), what=f"settling post {post_id}"
            ),
            robust=True,
        )
