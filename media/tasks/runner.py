"""The shared processing runner: claim under a row lock, process outside any transaction, store the
outputs, then complete only if this attempt still owns the row. Idempotent by construction:
a duplicate message for ready media, or for media another live attempt owns, does nothing, and a
late, stale attempt never overwrites a newer one."""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from dramatiq.middleware import CurrentMessage

from config.errors import ServiceError
from content.services import post_media_settled
from media import storage
from media.models import Media, MediaKind, ProcessingStatus, ProcessorRun, RunResult
from media.processors import get_processor
from media.processors.base import ProcessingError, ProcessorResult, StepLog
from media.services import blocklist_check

logger = logging.getLogger("postflow.media.runner")

PROGRESS_EVERY_SECONDS = 1.0


class RetryLater(Exception):
    """Raised to the broker so Dramatiq's Retries middleware re-delivers with backoff."""


@dataclass
class Claim:
    media: Media
    run: ProcessorRun
    token: uuid.UUID
    started: float


def stuck_before() -> timezone.datetime:
    return timezone.now() - timedelta(minutes=settings.MEDIA_STUCK_MINUTES)


def _message_info() -> tuple[str, str, str, int]:
    message = CurrentMessage.get_current_message()
    if message is None:
        return "", "", "", 0
    return message.message_id, message.actor_name, message.queue_name, message.options.get("retries", 0)


def _claim(media_id: str, kind: str) -> Claim | None:
    message_id, actor, queue, _retries = _message_info()
    with transaction.atomic():
        media = (
            Media.objects.select_for_update(of=("self",)).filter(pk=media_id).select_related("post").first()
        )
        if media is None or media.detached_at or media.purged_at:
            logger.info("media %s is gone or detached; nothing to do", media_id)
            return None
        before = media.processing_status
        skip_reason = None
        redelivered = False
        if before == ProcessingStatus.READY:
            skip_reason = "already ready"
        elif before == ProcessingStatus.PROCESSING and media.updated_at > stuck_before():
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
            actor=actor,
            queue=queue,
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
        media.processing_status = ProcessingStatus.PROCESSING
        media.attempts += 1
        media.attempt_token = token
        media.processing_started_at = timezone.now()
        media.save(
            update_fields=[
                "processing_status",
                "attempts",
                "attempt_token",
                "processing_started_at",
                "updated_at",
            ]
        )
        processor = get_processor(kind)
        run = ProcessorRun.objects.create(
            **base,
            attempt=media.attempts,
            processor_class=f"{type(processor).__module__}.{type(processor).__name__}",
        )
    return Claim(media=media, run=run, token=token, started=time.perf_counter())


def _settle_on_commit(media: Media) -> None:
    """After commit, let the post leave ``processing``. Robust: a failure here (a lock timeout) is
    logged, never mistaken for a processing failure; the sweep settles such posts later."""
    if media.post_id:
        post_id = media.post_id
        transaction.on_commit(lambda: post_media_settled(post_id=post_id), robust=True)


def _peak_memory_kb() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children)


def _progress_writer(claim: Claim):
    last = [0.0]

    def write(steps: list[dict]) -> None:
        now = time.monotonic()
        running = bool(steps) and steps[-1]["status"] == "running"
        if running and now - last[0] < PROGRESS_EVERY_SECONDS:
            return
        last[0] = now
        ProcessorRun.objects.filter(pk=claim.run.pk).update(steps=steps)
        # A heartbeat: the sweep treats ``processing`` rows not updated for a while as stuck.
        Media.objects.filter(pk=claim.media.pk, attempt_token=claim.token).update(updated_at=timezone.now())

    return write


_reaped = False


def reap_orphan_workdirs() -> int:
    """Remove scratch folders of worker processes that died (SIGKILL, OOM) mid-job: their partial
    outputs never reach storage, and this keeps them from filling the disk. Runs once per process."""
    global _reaped
    if _reaped:
        return 0
    _reaped = True
    removed = 0
    for path in Path(tempfile.gettempdir()).glob("postflow-*-p*-*"):
        try:
            pid = int(path.name.split("-")[2][1:])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        except PermissionError:
            continue
    if removed:
        logger.info("removed %s scratch folders of dead workers", removed)
    return removed


def _verify_bytes(claim: Claim, source: Path, steps: StepLog) -> None:
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
        Media.objects.filter(pk=media.pk).update(sha256=sha)
        media.sha256 = sha
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
            Media.objects.filter(pk=media.pk).update(metadata={**media.metadata, "blocked_media": True})
            media.metadata = {**media.metadata, "blocked_media": True}
            if media.post_id:
                from content.models import Post

                with transaction.atomic():
                    post = Post.objects.select_for_update().get(pk=media.post_id)
                    post.metadata = {**post.metadata, "blocked_media": True}
                    post.save(update_fields=["metadata", "updated_at"])


def _injected_fault(media: Media) -> None:
    """Fault injection for the fault suite only (``POSTFLOW_FAULT_KILL_SHA256``, empty by default):
    die like an OOM-killed worker when processing these bytes."""
    if media.sha256 and media.sha256 in settings.POSTFLOW_FAULT_KILL_SHA256:
        logger.error("fault injection: killing this worker on media %s", media.pk)
        os.kill(os.getpid(), signal.SIGKILL)


def run_media(media_id: str, *, kind: str) -> None:
    reap_orphan_workdirs()
    claim = _claim(media_id, kind)
    if claim is None:
        return
    _injected_fault(claim.media)
    steps = StepLog(on_change=_progress_writer(claim))
    workdir = Path(tempfile.mkdtemp(prefix=f"postflow-{kind}-p{os.getpid()}-"))
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
            _complete(
                claim,
                ProcessorResult(metadata={"bypass": True, "bypass_reason": "post_processing_enabled is off"}),
                steps,
            )
            return
        out_dir = workdir / "out"
        out_dir.mkdir()
        result = get_processor(kind).process(source=source, workdir=out_dir, steps=steps)
        _complete(claim, result, steps)
    except ProcessingError as exc:
        _fail(claim, exc, steps, retryable=exc.retryable)
    except Exception as exc:
        logger.exception("media %s: unexpected error in %s processor", media_id, kind)
        _fail(claim, exc, steps, retryable=True)
    except BaseException as exc:  # time limit, worker shutdown: record, then let Dramatiq handle it
        _fail(claim, exc, steps, retryable=True, reraise=False)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _owns(claim: Claim) -> Media | None:
    media = Media.objects.select_for_update().filter(pk=claim.media.pk).first()
    if media is None or media.attempt_token != claim.token:
        return None
    return media


def _store_outputs(claim: Claim, result: ProcessorResult, steps: StepLog) -> dict:
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


def _complete(claim: Claim, result: ProcessorResult, steps: StepLog) -> None:
    with transaction.atomic():
        if _owns(claim) is None:
            return _stale(claim, steps)
    variants = _store_outputs(claim, result, steps)
    with transaction.atomic():
        media = _owns(claim)
        if media is None:
            return _stale(claim, steps)
        old_keys = {v.get("key") for v in media.variants.values()} - {v["key"] for v in variants.values()}
        media.processing_status = ProcessingStatus.READY
        media.processing_error = ""
        media.width, media.height = result.width, result.height
        media.duration_seconds = result.duration_seconds
        media.blurhash = result.blurhash or ""
        if result.mime_type:
            media.mime_type = result.mime_type
        media.metadata = {**media.metadata, **result.metadata}
        media.variants = variants
        media.attempt_token = None
        media.processed_at = timezone.now()
        media.save()
        for extra in result.extra_media:
            _create_derived(media, extra)
        _finish_run(claim, steps, RunResult.SUCCEEDED, media.processing_status)
        _settle_on_commit(media)
        for key in old_keys:
            transaction.on_commit(lambda k=key: storage.delete(k))


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


def _stale(claim: Claim, steps: StepLog) -> None:
    logger.info(
        "media %s: attempt %s lost ownership; its result is dropped", claim.media.pk, claim.run.attempt
    )
    _finish_run(
        claim, steps, RunResult.SKIPPED, "", error=("StaleAttempt", "A newer attempt owns this media.")
    )


def _fail(claim: Claim, exc: BaseException, steps: StepLog, *, retryable: bool, reraise: bool = True) -> None:
    message = (
        str(exc)
        if isinstance(exc, ProcessingError)
        else f"Processing failed unexpectedly ({type(exc).__name__})."
    )
    with transaction.atomic():
        media = _owns(claim)
        if media is None:
            return _stale(claim, steps)
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
        _finish_run(
            claim,
            steps,
            RunResult.RETRYING if will_retry else RunResult.FAILED,
            media.processing_status,
            error=(type(exc).__name__, str(exc)[:4000]),
        )
        if not will_retry:
            _settle_on_commit(media)
    if will_retry and reraise:
        raise RetryLater(f"media {claim.media.pk}: {message}") from exc


def _finish_run(
    claim: Claim, steps: StepLog, result: str, status_after: str, error: tuple[str, str] | None = None
) -> None:
    duration_ms = round((time.perf_counter() - claim.started) * 1000, 1)
    peak_kb = _peak_memory_kb()
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


__all__ = ["run_media", "RetryLater", "MediaKind"]
