"""What a worker does with one media message: claim it, download the original into a scratch
folder, verify the bytes, run the kind's processor, store the outputs, complete or fail. Every
status change goes through ``media.processing``; this module only moves bytes and decides which
change applies. The reaper for what a killed worker leaves behind is
``media.scratch``."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import dramatiq
from django.conf import settings
from dramatiq.middleware.time_limit import TimeLimitExceeded

from config.errors import InvalidTransition, ServiceError
from media import processing, scratch, storage
from media.middleware import current_job
from media.models import MediaKind
from media.processors import get_processor, pdq
from media.processors.base import ProcessingError, ProcessorResult, StepLog
from media.processors.image_specs import (
    IMAGE_REVIEW_PREFERENCE,
    JPEG_SUFFIX,
    POSTER,
    VIDEO_REVIEW_PREFERENCE,
)
from media.processors.tracks import NO_VIDEO_TRACK, probe_tracks
from media.services import (
    POST_TYPE_KINDS,
    blocked_media_quarantines,
    blocklist_check,
    pdq_blocklist_match,
)
from media.sniff import Sniffed, as_kind, sniff

logger = logging.getLogger("postflow.media.pipeline")

JPEG_REVIEW_FALLBACK = tuple(name + JPEG_SUFFIX for name in IMAGE_REVIEW_PREFERENCE)


class RetryLater(Exception):
    """Raised to the broker so Dramatiq's Retries middleware re-delivers with backoff."""


def run(media_id: str, *, kind: str) -> None:
    """Process one media message (the body of every media actor). Returns quietly when there is
    nothing to do; raises ``RetryLater`` when a transient failure should be retried by the broker.
    Time-limit overruns and non-retryable ``ProcessingError``s (bombs, budgets) fail the media at
    once and are not retried."""
    scratch.reap_orphans()
    try:
        claim = processing.claim(media_id, kind)
    except processing.OwnerAtCapacity as exc:
        logger.info("%s; deferring it %s ms", exc, settings.MEDIA_FAIRNESS_DELAY_MS)
        _defer(media_id, kind)
        return
    if claim is None:
        return
    # Progress reaches the runner (and the creator's live events) a few times a second.
    steps = StepLog(
        on_change=processing.progress_writer(claim),
        heartbeat_seconds=min(1.0, settings.EVENTS_PROGRESS_INTERVAL_SECONDS),
    )
    workdir = scratch.make_scratch_folder(kind)
    try:
        source_key, source_mime = processing.source_of(claim.media)
        source = workdir / f"original.{storage.extension_for(source_mime)}"
        with steps.step("download", key=source_key) as s:
            storage.download_to(source_key, source)
            s.output = {"bytes": source.stat().st_size}
        if kind != MediaKind.TRANSCRIPT:  # a transcript reads its parent's verified sound
            _verify_bytes(claim, source, steps)
        kind = _kind_from_tracks(claim, source, kind, steps)
        if kind is None:
            processing.drop_stale(claim, steps)
            return
        from moderation.platform import get_platform_settings

        if not get_platform_settings().post_processing_enabled:
            # Verified (checksum, blocklist) but not processed: the operator switched processing off.
            steps.skip(kind, "post_processing_enabled is off")
            bypass = {"bypass": True, "bypass_reason": "post_processing_enabled is off"}
            processing.complete(claim, ProcessorResult(metadata=bypass), {}, steps)
            return
        out_dir = workdir / "out"
        out_dir.mkdir()
        result = get_processor(kind).process(source=source, workdir=out_dir, steps=steps)
        if not processing.owns(claim):
            processing.drop_stale(claim, steps)  # a newer attempt took over: store nothing
            return
        _perceptual_blocklist(claim, result, out_dir, steps)
        variants = _store_outputs(claim, result, steps)
        # A transcript's captions go into its video's HLS tree, and a video's new tree gets its ready
        # transcript's captions again: both in ``complete``, under the video's row lock.
        processing.complete(claim, result, variants, steps)
    except ProcessingError as exc:
        if processing.fail(claim, exc, steps, retryable=exc.retryable):
            raise RetryLater(f"media {media_id}: {exc}") from exc
    except TimeLimitExceeded as exc:
        # The same file would overrun again: fail now, and do not hand the message back to Retries.
        limit = current_job().time_limit_ms
        message = (
            f"Processing took longer than the {limit / 1000:.0f} s limit for {kind} files; "
            "try a shorter or smaller file."
            if limit
            else f"Processing took longer than the time limit for {kind} files."
        )
        processing.fail(claim, exc, steps, retryable=False, message=message)
    except Exception as exc:
        logger.exception("media %s: unexpected error in %s processor", media_id, kind)
        if processing.fail(claim, exc, steps, retryable=True):
            raise RetryLater(f"media {media_id}: {exc}") from exc
    except BaseException as exc:  # worker shutdown: record, then let Dramatiq handle it
        processing.fail(claim, exc, steps, retryable=True)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _defer(media_id: str, kind: str) -> None:
    """Send the message back with a short delay, keeping its retry count: waiting for a slot is not
    an attempt."""
    broker = dramatiq.get_broker()
    message = current_job().message
    delay = settings.MEDIA_FAIRNESS_DELAY_MS
    if message is not None:
        broker.enqueue(message.copy(), delay=delay)
    else:
        broker.get_actor(processing.actor_name(kind)).send_with_options(args=(media_id,), delay=delay)


def _kind_from_tracks(claim: processing.Claim, source: Path, kind: str, steps: StepLog) -> str | None:
    """For media whose kind waited for its tracks (``tracks_pending``: a WebM, MP4, Ogg, ASF … sent
    straight to S3, so not probed at attach), probe them now and return the kind they give, after
    recording it (``processing.rekind``). A kind the post does not take fails the media with what to
    do, e.g. "This file has no video track; post it as audio." on a video post. None when a newer
    attempt took the row over meanwhile."""
    media = claim.media
    if not media.metadata.get("tracks_pending"):
        return kind
    with steps.step("tracks") as s:
        with source.open("rb") as fh:
            found = sniff(fh.read(4096))
        if found is None or found.demuxer is None:
            raise ProcessingError(
                "This file is not a video or audio file we accept.", code="unsupported_media_type"
            )
        tracks = probe_tracks(source, demuxer=found.demuxer)
        s.output = {
            "demuxer": tracks.demuxer,
            "video": tracks.video,
            "audio": tracks.audio,
            "kind": tracks.kind,
        }
        allowed = POST_TYPE_KINDS.get(media.post.type, set()) if media.post_id else {tracks.kind}
        if tracks.kind not in allowed:
            if tracks.kind == "audio":
                raise ProcessingError(NO_VIDEO_TRACK, code="unsupported_media_type")
            raise ProcessingError(
                "This file has a video track; post it as a video.", code="unsupported_media_type"
            )
        mime = as_kind(Sniffed(media.kind, media.mime_type), tracks.kind).mime_type
        if not processing.rekind(claim, kind=tracks.kind, mime_type=mime):
            return None
    return tracks.kind


def _verify_bytes(claim: processing.Claim, source: Path, steps: StepLog) -> None:
    """Uploads sent straight to S3 are hashed here, where the bytes are local anyway: check the
    declared sha256 and the moderators' blocklist before any work is done."""
    media = claim.media
    if media.sha256:
        return
    with steps.step("verify") as s:
        digest = hashlib.sha256()
        with source.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1024 * 1024), b""):
                digest.update(chunk)
        sha = digest.hexdigest()
        s.output = {"sha256": sha}
        expected = media.metadata.get("expected_sha256")
        processing.record_checksum(claim, sha)
        if expected and expected != sha:
            raise ProcessingError(
                "The uploaded file does not match the sha256 declared for it; upload it again.",
                code="checksum_mismatch",
            )
        _apply_block(claim, lambda: blocklist_check(sha))


def _apply_block(claim: processing.Claim, check, match: dict | None = None) -> None:
    """Run a blocklist ``check`` (True: quarantine, False: not blocked, raises ``BlockedMedia``:
    refused) and record what it says; a refusal fails the media (not retried)."""
    try:
        quarantine = check()
    except ServiceError as exc:
        raise ProcessingError(exc.detail, code=exc.code) from exc
    if quarantine:
        try:
            processing.record_blocked(claim, match=match)
        except InvalidTransition as exc:
            raise ProcessingError(
                "The post changed while its file was checked; attach the file again.",
                code="post_changed",
            ) from exc


def _perceptual_blocklist(
    claim: processing.Claim, result: ProcessorResult, out_dir: Path, steps: StepLog
) -> None:
    """PDQ-hash the processed picture (an image's ``medium`` variant; a video's poster and
    ``PDQ_VIDEO_FRAMES`` frames of its smallest rendition), store the hashes on the media, and block
    it like an exact sha256 match when one is within ``PDQ_MATCH_DISTANCE`` of a blocked hash."""
    by_name = {v.name: v for v in result.variants}
    pictures, video = [], None
    if claim.media.kind == "image":
        name = next((n for n in (*IMAGE_REVIEW_PREFERENCE, *JPEG_REVIEW_FALLBACK) if n in by_name), None)
        pictures = [by_name[name]] if name else []
    elif claim.media.kind in ("video", "livestream_recording"):
        pictures = [by_name[POSTER]] if POSTER in by_name else []
        video = next((by_name[n] for n in VIDEO_REVIEW_PREFERENCE if n in by_name), None)
    if not pictures and video is None:
        return
    with steps.step("pdq_hash") as s:
        hashes = [h for v in pictures for h in pdq.hash_file(v.path, source=v.name, crops=video is None)]
        if video is not None and settings.PDQ_VIDEO_FRAMES > 0:
            frames_dir = out_dir / "pdq-frames"
            frames_dir.mkdir(exist_ok=True)
            hashes += pdq.video_frame_hashes(
                video.path,
                duration=result.duration_seconds,
                count=settings.PDQ_VIDEO_FRAMES,
                workdir=frames_dir,
                timeout=settings.PDQ_FRAME_TIMEOUT_SECONDS,
            )
            shutil.rmtree(frames_dir, ignore_errors=True)
        entries = [h.as_dict() for h in hashes]
        s.output = {
            "hashes": len(entries),
            "quality": [h.quality for h in hashes if not pdq.is_crop(h.source)],
        }
    processing.record_pdq_hashes(claim, entries)
    if claim.media.metadata.get("blocked_media"):
        return  # already blocked by its sha256
    with steps.step("pdq_blocklist") as s:
        found = pdq_blocklist_match(entries)
        s.output = found.as_dict() if found else {"matched": False}
    if found is not None:
        _apply_block(claim, blocked_media_quarantines, match=found.as_dict())


def _store_outputs(claim: processing.Claim, result: ProcessorResult, steps: StepLog) -> dict:
    media = claim.media
    variants = {}
    with steps.step("store", count=len(result.variants)) as s:
        for variant in result.variants:
            if variant.files:  # a folder (HLS): media/{u}/{m}/hls/master.m3u8 + its files beside it
                key = storage.media_key(
                    media.owner_id, media.pk, f"{variant.name}/{variant.path.stem}", variant.path.suffix
                )
                folder = key.rsplit("/", 1)[0]
                for companion in variant.files:  # first, so the playlist never names a missing file
                    storage.save(f"{folder}/{companion.path.name}", companion.path, companion.mime_type)
            else:
                key = storage.media_key(media.owner_id, media.pk, variant.name, variant.path.suffix or ".bin")
            storage.save(key, variant.path, variant.mime_type)
            variants[variant.name] = {
                "key": key,
                "width": variant.width,
                "height": variant.height,
                "mime_type": variant.mime_type,
                "size_bytes": variant.size_bytes,
                "sha256": storage.file_sha256(variant.path),
                **variant.extra,
            }
        s.output = {"stored": sorted(variants)}
    return variants
