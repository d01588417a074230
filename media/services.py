"""Every write to uploads and media: staging, attaching, the processing lifecycle, retries.

Processing work is queued with ``transaction.on_commit``: never before the row is committed, never
when the request rolls back. Kinds: one Dramatiq actor and queue per media kind (``media/tasks``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from config.errors import (
    BlockedMedia as BlockedMediaError,
)
from config.errors import (
    Conflict,
    FileTooLarge,
    InvalidTransition,
    NotFound,
    QuotaExceeded,
    UnsupportedMediaType,
    ValidationFailed,
)
from content.models import Post, PostStatus, PostType
from content.services import post_lock, post_media_attached, post_media_detached
from media import processing, storage
from media.models import Media, MediaKind, Upload, UploadState
from media.processors.base import UnsupportedMedia
from media.processors.tracks import NO_VIDEO_TRACK, probe_tracks
from media.sniff import Sniffed, as_kind, refusal, sniff

logger = logging.getLogger(__name__)

ALLOWED_CONTENT_TYPES = {
    "image": {"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif", "image/avif"},
    "video": {
        "video/mp4",
        "video/quicktime",
        "video/webm",
        "video/x-matroska",
        "video/x-msvideo",
        "video/ogg",
        "video/mp2t",
        "video/mpeg",
        "video/3gpp",
        "video/3gpp2",
        "video/x-flv",
        "video/x-ms-asf",
        "video/x-ms-wmv",
    },
    "audio": {
        "audio/mpeg",
        "audio/mp4",
        "audio/x-m4a",
        "audio/aac",
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/flac",
        "audio/x-flac",
        "audio/ogg",
        "audio/opus",
        "audio/webm",
        "audio/aiff",
        "audio/x-aiff",
        "audio/x-ms-wma",
        "audio/x-caf",
        "audio/x-wavpack",
        "audio/wavpack",
        "audio/amr",
        "audio/3gpp",
        "audio/x-matroska",
    },
}
POST_TYPE_KINDS = {
    PostType.IMAGE: {MediaKind.IMAGE},
    PostType.VIDEO: {MediaKind.VIDEO},
    PostType.AUDIO: {MediaKind.AUDIO},
    PostType.TEXT: {MediaKind.IMAGE},  # illustrations
    PostType.LINK: {MediaKind.IMAGE},
    PostType.LIVESTREAM: {MediaKind.VIDEO},
    PostType.POLL: {MediaKind.IMAGE},
}
SINGLE_MEDIUM_TYPES = {PostType.VIDEO, PostType.AUDIO, PostType.LIVESTREAM}
ATTACHABLE_STATUSES = (PostStatus.DRAFT, PostStatus.PROCESSING)


def safe_filename(name: str) -> str:
    """The client's file name, for display only: no path, no control characters, no quotes."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"<>')
    return name.strip()[:200] or "upload"


def kind_for_content_type(content_type: str) -> str | None:
    ct = (content_type or "").split(";")[0].strip().lower()
    return next((kind for kind, types in ALLOWED_CONTENT_TYPES.items() if ct in types), None)


def max_bytes_for(kind: str) -> int:
    return settings.MEDIA_MAX_BYTES[kind]


def _human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _check_size(kind: str, size: int) -> None:
    limit = max_bytes_for(kind)
    if size > limit:
        raise FileTooLarge(
            f"The file is {_human_size(size)}; the limit for {kind} files is {_human_size(limit)}.",
            extra={"max_bytes": limit},
        )
    if size <= 0:
        raise ValidationFailed("The file is empty.", code="empty_file")


def user_storage_used(user: AbstractBaseUser) -> int:
    """Bytes the user holds: stored media not yet purged plus uploads reserved but not attached."""
    media = Media.objects.filter(owner=user, purged_at__isnull=True).aggregate(n=Sum("size_bytes"))["n"] or 0
    staged = (
        Upload.objects.filter(owner=user, state__in=[UploadState.PENDING, UploadState.RECEIVED]).aggregate(
            n=Sum("declared_size")
        )["n"]
        or 0
    )
    return media + staged


def _check_quota(user: AbstractBaseUser, extra: int) -> None:
    """Refuse ``extra`` bytes over the user's quota. Must run inside the transaction that then
    reserves them (an Upload or a Media row): the user's row is locked first, so two requests of one
    user check and reserve one after the other (on PostgreSQL; SQLite serialises writers anyway)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("_check_quota must run inside the transaction that reserves the bytes")
    list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True))
    used = user_storage_used(user)
    quota = settings.MEDIA_USER_QUOTA_BYTES
    if used + extra > quota:
        raise QuotaExceeded(
            f"This file would take you over your storage quota ({_human_size(used)} of "
            f"{_human_size(quota)} used). Delete some media first.",
            extra={"quota_bytes": quota, "used_bytes": used},
        )


def blocklist_check(sha256: str) -> bool:
    """True when the bytes are on the moderators' blocklist and the platform quarantines them;
    raises when it refuses them."""
    from moderation.models import BlockedMedia, BlockedMediaAction
    from moderation.platform import get_platform_settings

    if not sha256 or not BlockedMedia.objects.filter(sha256=sha256).exists():
        return False
    if get_platform_settings().blocked_media_action == BlockedMediaAction.REFUSE:
        raise BlockedMediaError()
    return True


# --- direct uploads ------------------------------------------------------------------------------------


@transaction.atomic
def upload_create(
    *, owner: AbstractBaseUser, filename: str, content_type: str, size: int, sha256: str = "", request=None
) -> tuple[Upload, dict[str, Any]]:
    """Reserve ``size`` bytes of the owner's quota as a pending Upload and say where to send them
    (``storage.upload_target``). Quota check and reservation are serialised per user
    (``_check_quota`` locks the user's row). Errors: UnsupportedMediaType, FileTooLarge,
    QuotaExceeded, BlockedMedia (a declared sha256 on the blocklist)."""
    kind = kind_for_content_type(content_type)
    if kind is None:
        raise UnsupportedMediaType(
            f"{content_type or 'This type'} is not accepted. Upload JPEG, PNG, GIF, WebP, HEIC or AVIF "
            "images, MP4/MOV/WebM/MKV/AVI/MPEG/WMV video, or MP3/M4A/WAV/FLAC/OGG/AIFF/WMA audio."
        )
    _check_size(kind, size)
    _check_quota(owner, size)
    if sha256:
        blocklist_check(sha256)
    upload_id = uuid.uuid4()
    ttl = settings.UPLOAD_URL_TTL_SECONDS
    upload = Upload.objects.create(
        id=upload_id,
        owner=owner,
        filename=safe_filename(filename),
        content_type=content_type,
        kind=kind,
        declared_size=size,
        declared_sha256=sha256,
        storage_key=storage.upload_key(owner.pk, upload_id),
        expires_at=timezone.now() + timedelta(seconds=ttl),
    )
    target = storage.upload_target(
        upload_id=upload.id,
        key=upload.storage_key,
        content_type=content_type,
        max_bytes=size,
        ttl=ttl,
        request=request,
    )
    return upload, target


def upload_receive(*, upload_id: UUID | str, stream: IO[bytes], content_length: int | None) -> Upload:
    """The local backend's PUT target: stream the body to storage, never more than declared."""
    with transaction.atomic():
        try:
            upload = Upload.objects.select_for_update().get(pk=upload_id)
        except (Upload.DoesNotExist, ValueError):
            raise NotFound("Upload not found.") from None
        if upload.state != UploadState.PENDING:
            raise Conflict("This upload URL was already used.", code="upload_used")
        if upload.expires_at < timezone.now():
            raise Conflict("This upload URL has expired; request a new one.", code="upload_expired")
        if content_length is not None and content_length > upload.declared_size:
            raise FileTooLarge(
                f"The body is {_human_size(content_length)} but "
                f"{_human_size(upload.declared_size)} was declared.",
            )
    digest, total = hashlib.sha256(), 0
    with tempfile.SpooledTemporaryFile(max_size=storage.CHUNK) as tmp:
        while True:
            chunk = stream.read(64 * 1024)
            if not chunk:
                break
            total += len(chunk)
            if total > upload.declared_size:
                raise FileTooLarge(
                    f"More bytes were sent than the {_human_size(upload.declared_size)} declared.",
                )
            digest.update(chunk)
            tmp.write(chunk)
        tmp.seek(0)
        if total == 0:
            raise ValidationFailed("The body is empty.", code="empty_file")
        with transaction.atomic():
            upload = Upload.objects.select_for_update().get(pk=upload_id)
            if upload.state != UploadState.PENDING:
                raise Conflict("This upload URL was already used.", code="upload_used")
            storage.save(upload.storage_key, tmp, upload.content_type)
            upload.state = UploadState.RECEIVED
            upload.received_size = total
            upload.received_sha256 = digest.hexdigest()
            upload.save(update_fields=["state", "received_size", "received_sha256", "updated_at"])
    return upload


def _finish_upload(upload: Upload) -> tuple[str, int]:
    """Check the staged object: it exists, its size matches, its sha256 matches when declared."""
    if upload.state == UploadState.ATTACHED:
        raise Conflict("This upload is already attached.", code="upload_used")
    if upload.state == UploadState.EXPIRED or (
        upload.state == UploadState.PENDING and upload.expires_at < timezone.now() - timedelta(hours=1)
    ):
        raise Conflict("This upload has expired; upload the file again.", code="upload_expired")
    if not storage.exists(upload.storage_key):
        raise Conflict(
            "The file has not been uploaded yet: send the bytes to the upload URL first.",
            code="upload_incomplete",
        )
    if upload.received_sha256 and upload.received_size:
        sha, size = upload.received_sha256, upload.received_size  # hashed while we received it
    else:
        # Sent straight to S3: check the size with a HEAD now; the worker, which downloads the bytes
        # anyway, computes the sha256 and checks it against the declared one (and the blocklist).
        sha, size = "", storage.size(upload.storage_key)
    if size != upload.declared_size:
        raise ValidationFailed(
            f"The uploaded file is {size} bytes but {upload.declared_size} were declared.",
            code="size_mismatch",
        )
    if sha and upload.declared_sha256 and sha != upload.declared_sha256.lower():
        raise ValidationFailed(
            "The uploaded file does not match the declared sha256.", code="checksum_mismatch"
        )
    return sha, size


# --- attach / detach ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _local_file(file: IO[bytes]) -> Iterator[Path]:
    """A path to a multipart file's bytes: Django's temporary file, or (for a small upload Django kept
    in memory) a scratch copy that is removed afterwards."""
    temporary = getattr(file, "temporary_file_path", None)
    if temporary is not None:
        yield Path(temporary())
        return
    with tempfile.NamedTemporaryFile(prefix="postflow-attach-") as tmp:
        file.seek(0)
        for chunk in iter(lambda: file.read(storage.CHUNK), b""):
            tmp.write(chunk)
        tmp.flush()
        yield Path(tmp.name)


def _sniff_or_refuse(head: bytes, post: Post, *, local: Path | None) -> Sniffed:
    """What the file is, or 415 ``unsupported_media_type`` with what to do instead.

    The kind follows the tracks, not the container (issue 11): for a container that may hold sound
    only or a picture too (``Sniffed.tracks_decide``), ``local`` (the bytes on this machine: a
    multipart file, a local-storage upload) is probed with the safe ffprobe and its tracks decide.
    Without local bytes (an upload sent straight to S3) the container is taken as the kind the post
    wants, if it can be that, and marked ``tracks_pending``: the worker, which downloads the bytes
    anyway, probes them and re-kinds the medium (``media.pipeline``)."""
    found = sniff(head)
    if found is None:
        raise UnsupportedMediaType(
            refusal(head)
            or "This file is not an image, video or audio file we accept "
            "(we look at its contents, not its name)."
        )
    allowed = POST_TYPE_KINDS.get(post.type, set())
    if found.tracks_decide:
        if local is not None:
            try:
                tracks = probe_tracks(local, demuxer=found.demuxer)
            except UnsupportedMedia as exc:
                raise UnsupportedMediaType(str(exc)) from exc
            found = as_kind(found, tracks.kind)
        elif found.kind not in allowed:
            wanted = next((kind for kind in ("audio", "video") if kind in allowed), None)
            if wanted is not None:
                found = as_kind(found, wanted)
    if found.kind not in allowed:
        if found.kind == MediaKind.AUDIO and MediaKind.VIDEO in allowed:
            raise UnsupportedMediaType(NO_VIDEO_TRACK)
        if found.kind == MediaKind.VIDEO and MediaKind.AUDIO in allowed:
            raise UnsupportedMediaType("This file has a video track; post it as a video.")
        raise UnsupportedMediaType(
            f"A {post.type} post takes {' or '.join(sorted(allowed)) or 'no media'}, "
            f"but this file is {found.kind}."
        )
    return found


def _tracks_metadata(found: Sniffed, local: Path | None) -> dict:
    """Recorded on the medium: whether its kind still waits for the worker to read its tracks."""
    if not found.tracks_decide:
        return {}
    return {"kind_from": "tracks"} if local is not None else {"tracks_pending": True}


def _check_attach_allowed(post: Post, kind: str, is_primary: bool) -> None:
    if post.status not in ATTACHABLE_STATUSES:
        raise InvalidTransition(f"Media can only be attached to a draft; this post is {post.status}.")
    live = Media.objects.attached().filter(post=post)
    if live.count() >= settings.MEDIA_MAX_PER_POST:
        raise ValidationFailed(
            f"A post can have at most {settings.MEDIA_MAX_PER_POST} media.", code="too_many_media"
        )
    if is_primary and post.type in SINGLE_MEDIUM_TYPES and live.filter(is_primary=True).exists():
        raise ValidationFailed(
            f"A {post.type} post has one {kind}; remove the current one first.", code="too_many_media"
        )


@transaction.atomic
def media_attach_upload(
    *, post_id: UUID | str, actor: AbstractBaseUser, upload_id: UUID | str, is_primary: bool = True
) -> Media:
    post = post_lock(post_id=post_id, actor=actor)
    try:
        upload = Upload.objects.select_for_update().get(pk=upload_id, owner=actor)
    except (Upload.DoesNotExist, ValueError, TypeError):
        raise NotFound("Upload not found.") from None
    sha, size = _finish_upload(upload)
    local = storage.local_path(upload.storage_key)
    found = _sniff_or_refuse(storage.read_head(upload.storage_key), post, local=local)
    _check_size(found.kind, size)
    _check_attach_allowed(post, found.kind, is_primary)
    quarantine = blocklist_check(sha)
    media_id = uuid.uuid4()
    key = storage.media_key(actor.pk, media_id, "original", storage.extension_for(found.mime_type))
    storage.copy(upload.storage_key, key, found.mime_type)  # server-side on S3: no bytes through us
    upload.state = UploadState.ATTACHED
    upload.save(update_fields=["state", "updated_at"])
    transaction.on_commit(lambda: storage.delete(upload.storage_key))
    return _media_create(
        post=post,
        owner=actor,
        media_id=media_id,
        key=key,
        found=found,
        size=size,
        sha=sha,
        filename=upload.filename,
        is_primary=is_primary,
        quarantine=quarantine,
        extra_metadata={
            **({"expected_sha256": upload.declared_sha256.lower()} if upload.declared_sha256 else {}),
            **_tracks_metadata(found, local),
        },
    )


@transaction.atomic
def media_attach_file(
    *,
    post_id: UUID | str,
    actor: AbstractBaseUser,
    file: IO[bytes],
    filename: str,
    size: int,
    is_primary: bool = True,
) -> Media:
    """Multipart attach: Django already streamed the body to a temporary file; we hash it, sniff it
    and copy it to storage in chunks."""
    post = post_lock(post_id=post_id, actor=actor)
    file.seek(0)
    head = file.read(4096)
    with _local_file(file) as local:
        found = _sniff_or_refuse(head, post, local=local)
    _check_size(found.kind, size)
    _check_attach_allowed(post, found.kind, is_primary)
    _check_quota(actor, size)
    file.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: file.read(storage.CHUNK), b""):
        digest.update(chunk)
    sha = digest.hexdigest()
    quarantine = blocklist_check(sha)
    media_id = uuid.uuid4()
    key = storage.media_key(actor.pk, media_id, "original", storage.extension_for(found.mime_type))
    file.seek(0)
    storage.save(key, file, found.mime_type)
    return _media_create(
        post=post,
        owner=actor,
        media_id=media_id,
        key=key,
        found=found,
        size=size,
        sha=sha,
        filename=filename,
        is_primary=is_primary,
        quarantine=quarantine,
        extra_metadata=_tracks_metadata(found, local),
    )


def _media_create(
    *,
    post: Post,
    owner,
    media_id,
    key: str,
    found: Sniffed,
    size: int,
    sha: str,
    filename: str,
    is_primary: bool,
    quarantine: bool,
    extra_metadata: dict | None = None,
) -> Media:
    extra_metadata = extra_metadata or {}
    try:
        position = Media.objects.filter(post=post).count()
        media = Media.objects.create(
            id=media_id,
            post=post,
            owner=owner,
            kind=found.kind,
            is_primary=is_primary,
            position=position,
            original_filename=safe_filename(filename),
            original_key=key,
            mime_type=found.mime_type,
            size_bytes=size,
            sha256=sha,
            metadata={**({"blocked_media": True} if quarantine else {}), **extra_metadata},
        )
        post_media_attached(post_id=post.pk, is_primary=is_primary, blocked=quarantine)
        processing.dispatch(media)
    except BaseException:
        # The bytes were stored before the row: without the row they belong to nothing.
        storage.delete(key)
        raise
    return media


@transaction.atomic
def media_detach(*, post_id: UUID | str, media_id: UUID | str, actor: AbstractBaseUser) -> None:
    """Detach from a draft. The bytes stay (moderation may need them) until the purge's retention."""
    post = post_lock(post_id=post_id, actor=actor)
    if post.status not in ATTACHABLE_STATUSES:
        raise InvalidTransition(f"Media can only be removed from a draft; this post is {post.status}.")
    try:
        media = Media.objects.attached().select_for_update().get(pk=media_id, post=post)
    except (Media.DoesNotExist, ValueError):
        raise NotFound("Media not found.") from None
    media.detached_at = timezone.now()
    media.save(update_fields=["detached_at", "updated_at"])
    blocked_remaining = any(
        m.get("blocked_media")
        for m in Media.objects.attached().filter(post=post).values_list("metadata", flat=True)
    )
    post_media_detached(post_id=post.pk, blocked_remaining=blocked_remaining)


# --- lifecycle ---------------------------------------------------------------------------------------------


def media_retry(*, media_id: UUID | str, actor: AbstractBaseUser) -> Media:
    """Retry failed media (see ``media.processing.retry``, which owns every status change)."""
    return processing.retry(media_id=media_id, actor=actor)
