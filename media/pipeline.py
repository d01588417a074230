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
from media.processors import get_processor
from media.processors.base import ProcessingError, ProcessorResult, StepLog
from media.services import blocklist_check

logger = logging.getLogger("postflow.media.pipeline")


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
        source = workdir / f"original.{storage.extension_for(claim.media.mime_type)}"
        with steps.step("download", key=claim.media.original_key) as s:
            storage.download_to(claim.media.original_key, source)
            s.output = {"bytes": source.stat().st_size}
        _verify_bytes(claim, source, steps)
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
        variants = _store_outputs(claim, result, steps)
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
        try:
            quarantine = blocklist_check(sha)
        except ServiceError as exc:
            raise ProcessingError(exc.detail, code=exc.code) from exc
        if quarantine:
            try:
                processing.record_blocked(claim)
            except InvalidTransition as exc:
                raise ProcessingError(
                    "The post changed while its file was checked; attach the file again.",
                    code="post_changed",
                ) from exc


def _store_outputs(claim: processing.Claim, result: ProcessorResult, steps: StepLog) -> dict:
    media = claim.media
    variants = {}
    with steps.step("store", count=len(result.variants)) as s:
        for variant in result.variants:
            key = storage.media_key(media.owner_id, media.pk, variant.name, variant.path.suffix or ".bin")
            storage.save(key, variant.path, variant.mime_type)
            variants[variant.name] = {
                "key": key,
                "width": variant.width,
                "height": variant.height,
                "mime_type": variant.mime_type,
                "size_bytes": variant.size_bytes,
                **variant.extra,
            }
        s.output = {"stored": sorted(variants)}
    return variants
