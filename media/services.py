"""Every write to uploads and media: staging, attaching, the processing lifecycle, retries.

Processing work is queued with ``transaction.on_commit``: never before the row is committed, never
when the request rolls back. Kinds: one Dramatiq actor and queue per media kind (``media/tasks``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
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
from django.db.models import Q, Sum
from django.utils import timezone

from config import queueing
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
from config.locking import lock_rows
from content.models import Post, PostStatus, PostType
from content.services import (
    post_edit,
    post_lock,
    post_media_attached,
    post_media_detached,
    post_transcript_edited,
)
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
# Published posts take media too: it joins a new revision (content.services.post_edit).
ATTACH_TO_STATUSES = (*ATTACHABLE_STATUSES, PostStatus.PUBLISHED)


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
    # A resumable upload counts from its ``complete`` on (DESIGN.md §8), a single one from its start.
    reserved = Q(state=UploadState.RECEIVED) | Q(state=UploadState.PENDING, resumable=False)
    staged = Upload.objects.filter(reserved, owner=user).aggregate(n=Sum("declared_size"))["n"] or 0
    return media + staged


def _check_quota(user: AbstractBaseUser, extra: int) -> None:
    """Refuse ``extra`` bytes over the user's quota. Must run inside the transaction that then
    reserves them (an Upload or a Media row): the user's row is locked first, so two requests of one
    user check and reserve one after the other (on PostgreSQL; SQLite serialises writers anyway)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("_check_quota must run inside the transaction that reserves the bytes")
    list(lock_rows(get_user_model().objects.filter(pk=user.pk)).values_list("pk", flat=True))
    used = user_storage_used(user)
    quota = settings.MEDIA_USER_QUOTA_BYTES
    if used + extra > quota:
        raise QuotaExceeded(
            f"This file would take you over your storage quota ({_human_size(used)} of "
            f"{_human_size(quota)} used). Delete some media first.",
            extra={"quota_bytes": quota, "used_bytes": used},
        )


def blocklist_check(sha256: str, *, pdq_hashes: list[dict] | None = None) -> bool:
    """True when the bytes are on the moderators' blocklist and the platform quarantines them;
    raises ``BlockedMedia`` (451 ``blocked_media``) when it refuses them. On the blocklist means an
    exact ``sha256`` match, or one of ``pdq_hashes`` (``Media.pdq_hashes`` entries, computed by the
    worker) within ``PDQ_MATCH_DISTANCE`` of a blocked PDQ hash (``moderation.blocklist.match``)."""
    from moderation.models import BlockedMedia

    exact = bool(sha256) and BlockedMedia.objects.filter(sha256=sha256).exists()
    if not exact and not (pdq_hashes and pdq_blocklist_match(pdq_hashes)):
        return False
    return blocked_media_quarantines()


def blocked_media_quarantines() -> bool:
    """What happens to a medium found on the blocklist: True when the platform quarantines it (the
    post goes to review); raises ``BlockedMedia`` when it refuses it (``blocked_media_action``)."""
    from moderation.models import BlockedMediaAction
    from moderation.platform import get_platform_settings

    if get_platform_settings().blocked_media_action == BlockedMediaAction.REFUSE:
        raise BlockedMediaError()
    return True


def pdq_blocklist_match(pdq_hashes: list[dict]):
    """The blocked PDQ hash one of ``pdq_hashes`` is near (``moderation.blocklist.PdqBlockMatch``:
    blocked_id, hash, source, distance), or None."""
    from moderation import blocklist

    return blocklist.match(pdq_hashes)


# --- direct uploads ------------------------------------------------------------------------------------


@transaction.atomic
def upload_create(
    *,
    owner: AbstractBaseUser,
    filename: str,
    content_type: str,
    size: int,
    sha256: str = "",
    resumable: bool = False,
    request=None,
) -> tuple[Upload, dict[str, Any]]:
    """Start a direct upload and say where to send the bytes.

    Single (``resumable`` false, at most ``UPLOAD_SINGLE_MAX_BYTES``): reserves ``size`` bytes of the
    owner's quota as a pending Upload; the target is ``storage.upload_target`` ({method, url, fields,
    headers}). Resumable (DESIGN.md §8): the target is {method "multipart", part_size, part_count};
    the quota is checked now (so nobody sends a gigabyte to be refused at the end) but reserved only
    on ``upload_complete``. Quota checks are serialised per user (``_check_quota`` locks the user's
    row). Errors: UnsupportedMediaType, FileTooLarge, ValidationFailed ``resumable_required``,
    QuotaExceeded, BlockedMedia (a declared sha256 on the blocklist)."""
    kind = kind_for_content_type(content_type)
    if kind is None:
        raise UnsupportedMediaType(
            f"{content_type or 'This type'} is not accepted. Upload JPEG, PNG, GIF, WebP, HEIC or AVIF "
            "images, MP4/MOV/WebM/MKV/AVI/MPEG/WMV video, or MP3/M4A/WAV/FLAC/OGG/AIFF/WMA audio."
        )
    _check_size(kind, size)
    single_max = settings.UPLOAD_SINGLE_MAX_BYTES
    if not resumable and size > single_max:
        raise ValidationFailed(
            f'Files over {_human_size(single_max)} go up in parts: start the upload with "resumable": true.',
            code="resumable_required",
            extra={"single_max_bytes": single_max},
        )
    _check_quota(owner, size)
    if sha256:
        blocklist_check(sha256)
    upload_id = uuid.uuid4()
    key = storage.upload_key(owner.pk, upload_id)
    if resumable:
        part_size = _part_size(size)
        upload = Upload.objects.create(
            id=upload_id,
            owner=owner,
            filename=safe_filename(filename),
            content_type=content_type,
            kind=kind,
            declared_size=size,
            declared_sha256=sha256,
            storage_key=key,
            resumable=True,
            part_size=part_size,
            part_count=max(1, math.ceil(size / part_size)),
            multipart_id=storage.multipart_start(key, content_type),
            expires_at=timezone.now() + timedelta(seconds=settings.UPLOAD_RESUMABLE_TTL_SECONDS),
        )
        return upload, {"method": "multipart", "part_size": part_size, "part_count": upload.part_count}
    ttl = settings.UPLOAD_URL_TTL_SECONDS
    upload = Upload.objects.create(
        id=upload_id,
        owner=owner,
        filename=safe_filename(filename),
        content_type=content_type,
        kind=kind,
        declared_size=size,
        declared_sha256=sha256,
        storage_key=key,
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


S3_MIN_PART = 5 * 1024 * 1024  # S3 refuses smaller parts but the last (CompleteMultipartUpload)
S3_MAX_PARTS = 10_000


def _part_size(size: int) -> int:
    """``UPLOAD_PART_SIZE_BYTES``, raised so that no upload needs more than S3's 10,000 parts, and to
    S3's 5 MiB minimum on S3."""
    part = max(settings.UPLOAD_PART_SIZE_BYTES, math.ceil(size / S3_MAX_PARTS), 1)
    if storage.issues_bearer_urls():  # the S3 backend
        part = max(part, S3_MIN_PART)
    return part


def _expected_part_size(upload: Upload, part_number: int) -> int:
    if part_number < upload.part_count:
        return upload.part_size
    return upload.declared_size - upload.part_size * (upload.part_count - 1)


def _open_resumable(upload_id, owner, *, lock: bool) -> Upload:
    qs = lock_rows(Upload.objects.all()) if lock else Upload.objects
    try:
        upload = qs.get(pk=upload_id, owner=owner, resumable=True)
    except (Upload.DoesNotExist, ValueError, TypeError):
        raise NotFound("Upload not found.") from None
    return upload


def _require_open(upload: Upload) -> None:
    if upload.state != UploadState.PENDING:
        raise Conflict(f"This upload is {upload.state}; no more parts can be sent.", code="upload_closed")
    if upload.expires_at < timezone.now():
        raise Conflict("This upload has expired; start it again.", code="upload_expired")


def upload_parts(
    *, upload_id: UUID | str, owner: AbstractBaseUser, part_numbers: list[int], request=None
) -> list[dict]:
    """Signed URLs to PUT the given parts of a resumable upload ([{part_number, method, url,
    headers}]); each works until ``UPLOAD_URL_TTL_SECONDS`` or the upload's expiry, whichever is
    first, and may be asked for again (a part re-sent replaces the one before). Errors: NotFound,
    Conflict ``upload_closed``/``upload_expired``, ValidationFailed ``invalid_part_number``."""
    upload = _open_resumable(upload_id, owner, lock=False)
    _require_open(upload)
    bad = [n for n in part_numbers if not 1 <= n <= upload.part_count]
    if bad:
        raise ValidationFailed(
            f"Part numbers run from 1 to {upload.part_count}; {bad[:5]} are not among them.",
            code="invalid_part_number",
        )
    left = int((upload.expires_at - timezone.now()).total_seconds())
    ttl = max(1, min(settings.UPLOAD_URL_TTL_SECONDS, left))
    return [
        storage.part_target(
            upload_id=upload.pk,
            key=upload.storage_key,
            multipart_id=upload.multipart_id,
            part_number=n,
            ttl=ttl,
            request=request,
        )
        for n in sorted(set(part_numbers))
    ]


class _CheckedBody:
    """A request body read through: counted, hashed (md5, S3's part ETag; sha256 when asked), and
    refused as soon as it is longer than ``limit``."""

    def __init__(self, stream: IO[bytes], limit: int):
        self.stream, self.limit, self.total = stream, limit, 0
        self.md5 = hashlib.md5(usedforsecurity=False)

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(min(n if n and n > 0 else 64 * 1024, 64 * 1024))
        self.total += len(chunk)
        if self.total > self.limit:
            raise FileTooLarge(f"This part may be {_human_size(self.limit)} at most.")
        self.md5.update(chunk)
        return chunk


def upload_part_receive(
    *, upload_id: UUID | str, part_number: int, stream: IO[bytes], content_length: int | None
) -> dict:
    """The filesystem backend's part PUT: stream the body into the part's own file (replacing an
    earlier copy), check its length (every part but the last is ``part_size`` bytes), and record
    it. Returns {part_number, size, etag} (etag = the md5 hex of the part, as S3's). Errors:
    NotFound, Conflict ``upload_closed``/``upload_expired``, FileTooLarge, ValidationFailed
    ``part_size_mismatch`` (a short body: e.g. the connection dropped; send the part again)."""
    try:
        upload = Upload.objects.get(pk=upload_id, resumable=True)
    except (Upload.DoesNotExist, ValueError):
        raise NotFound("Upload not found.") from None
    _require_open(upload)
    if not 1 <= part_number <= upload.part_count:
        raise ValidationFailed("No such part in this upload.", code="invalid_part_number")
    expected = _expected_part_size(upload, part_number)
    if content_length is not None and content_length > expected:
        raise FileTooLarge(f"Part {part_number} is {expected} bytes; {content_length} were sent.")
    body = _CheckedBody(stream, expected)
    key = storage.upload_part_key(upload.storage_key, part_number)
    storage.save(key, body, None)
    if body.total != expected:
        storage.delete(key)
        raise ValidationFailed(
            f"Part {part_number} must be {expected} bytes; {body.total} arrived. Send it again.",
            code="part_size_mismatch",
        )
    part = {"part_number": part_number, "size": body.total, "etag": body.md5.hexdigest()}
    with transaction.atomic():
        upload = lock_rows(Upload.objects.all()).get(pk=upload.pk)
        _require_open(upload)
        upload.parts = {**upload.parts, str(part_number): {"size": part["size"], "etag": part["etag"]}}
        upload.save(update_fields=["parts", "updated_at"])
    return part


def upload_status(*, upload_id: UUID | str, owner: AbstractBaseUser) -> dict:
    """What a client needs to resume: {upload_id, state, resumable, part_size, part_count,
    received_size, parts: [{part_number, size, etag}], expires_at}. Parts are those storage holds
    now (S3 ListParts, or the filesystem's record); empty once completed."""
    try:
        upload = Upload.objects.get(pk=upload_id, owner=owner)
    except (Upload.DoesNotExist, ValueError, TypeError):
        raise NotFound("Upload not found.") from None
    parts: list[dict] = []
    received = upload.received_size or 0
    if upload.resumable and upload.state == UploadState.PENDING:
        parts = _received_parts(upload)
        received = sum(p["size"] for p in parts)
    return {
        "upload_id": upload.pk,
        "state": upload.state,
        "resumable": upload.resumable,
        "part_size": upload.part_size,
        "part_count": upload.part_count,
        "received_size": received,
        "parts": parts,
        "expires_at": upload.expires_at,
    }


def _received_parts(upload: Upload) -> list[dict]:
    listed = storage.multipart_parts(upload.storage_key, upload.multipart_id)
    if listed is not None:
        return listed
    return [
        {"part_number": int(n), "size": p["size"], "etag": p["etag"]}
        for n, p in sorted(upload.parts.items(), key=lambda kv: int(kv[0]))
    ]


def upload_complete(*, upload_id: UUID | str, owner: AbstractBaseUser, parts: list[dict]) -> Upload:
    """Join the parts of a resumable upload into the staged object, then count it in the quota.

    ``parts``: [{part_number, etag}] for every part 1..part_count, as the part PUTs answered. The
    quota is checked before joining and reserved after, with the user's row locked
    (``_check_quota``). Filesystem: parts are streamed into one file (constant memory) and hashed on
    the way; S3: CompleteMultipartUpload, and the worker hashes the bytes when it processes them.
    Returns the upload, now ``received``. Errors: NotFound, Conflict ``upload_closed`` /
    ``upload_expired`` / ``upload_incomplete`` (parts missing: see ``missing``),
    ValidationFailed ``part_mismatch`` (an etag or size that storage does not hold),
    QuotaExceeded."""
    upload = _open_resumable(upload_id, owner, lock=False)
    _require_open(upload)
    wanted = {int(p["part_number"]): str(p.get("etag", "")).strip('"') for p in parts}
    held = {p["part_number"]: p for p in _received_parts(upload)}
    missing = [n for n in range(1, upload.part_count + 1) if n not in held or n not in wanted]
    if missing:
        raise Conflict(
            f"{len(missing)} part(s) have not arrived yet: send them, then complete.",
            code="upload_incomplete",
            extra={"missing": missing[:100]},
        )
    extra = sorted(set(wanted) - set(range(1, upload.part_count + 1)))
    wrong = [n for n, etag in wanted.items() if n in held and held[n]["etag"] != etag]
    if extra or wrong or sum(p["size"] for p in held.values()) != upload.declared_size:
        raise ValidationFailed(
            "The parts listed do not match the parts received (part numbers, ETags or sizes).",
            code="part_mismatch",
            extra={"parts": (extra + wrong)[:100]},
        )
    with transaction.atomic():
        _check_quota(owner, upload.declared_size)  # early answer; reserved below
    ordered = [{"part_number": n, "etag": held[n]["etag"]} for n in range(1, upload.part_count + 1)]
    try:
        size, sha = storage.multipart_complete(upload.storage_key, upload.multipart_id, ordered)
    except Exception as exc:  # S3: completed or aborted meanwhile (another request)
        if _is_missing_multipart(exc):
            raise Conflict("This upload was already completed or aborted.", code="upload_closed") from exc
        raise
    with transaction.atomic():
        try:
            _check_quota(owner, upload.declared_size)
        except QuotaExceeded:
            transaction.on_commit(lambda: storage.delete(upload.storage_key))
            Upload.objects.filter(pk=upload.pk).update(state=UploadState.ABORTED, updated_at=timezone.now())
            raise
        upload = lock_rows(Upload.objects.all()).get(pk=upload.pk)
        if upload.state != UploadState.PENDING:
            raise Conflict("This upload was already completed or aborted.", code="upload_closed")
        upload.state = UploadState.RECEIVED
        upload.received_size = size
        upload.received_sha256 = sha
        upload.parts = {}
        upload.save(update_fields=["state", "received_size", "received_sha256", "parts", "updated_at"])
    return upload


def _is_missing_multipart(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "NoSuchUpload"


def upload_abort(*, upload_id: UUID | str, owner: AbstractBaseUser) -> None:
    """Cancel an upload that is not attached: drop every part (S3 AbortMultipartUpload) or the
    staged object, and release its quota. Idempotent. Errors: NotFound, Conflict ``upload_used``."""
    with transaction.atomic():
        try:
            upload = lock_rows(Upload.objects.all()).get(pk=upload_id, owner=owner)
        except (Upload.DoesNotExist, ValueError, TypeError):
            raise NotFound("Upload not found.") from None
        if upload.state == UploadState.ATTACHED:
            raise Conflict("This upload is attached to a post; detach the media instead.", code="upload_used")
        if upload.state in (UploadState.ABORTED, UploadState.EXPIRED):
            return
        Upload.objects.filter(pk=upload.pk).update(
            state=UploadState.ABORTED, parts={}, updated_at=timezone.now()
        )
    discard_upload_bytes(upload)


def discard_upload_bytes(upload: Upload) -> None:
    """Delete what storage holds for an upload: its parts (and S3's open multipart upload) and the
    staged object. Used by abort and by ``purge_media`` for expired uploads."""
    if upload.resumable:
        storage.multipart_abort(upload.storage_key, upload.multipart_id)
    storage.delete(upload.storage_key)


def upload_receive(*, upload_id: UUID | str, stream: IO[bytes], content_length: int | None) -> Upload:
    """The local backend's PUT target: stream the body to storage, never more than declared."""
    with transaction.atomic():
        try:
            upload = lock_rows(Upload.objects.all()).get(pk=upload_id)
        except (Upload.DoesNotExist, ValueError):
            raise NotFound("Upload not found.") from None
        if upload.resumable:
            raise Conflict("This upload goes up in parts: PUT each part to its URL.", code="upload_resumable")
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
            upload = lock_rows(Upload.objects.all()).get(pk=upload_id)
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
    if upload.state == UploadState.ABORTED:
        raise Conflict("This upload was aborted; upload the file again.", code="upload_aborted")
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
    if post.status not in ATTACH_TO_STATUSES:
        raise InvalidTransition(
            f"Media can only be attached to a draft or a published post; this post is {post.status}."
        )
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
    *,
    post_id: UUID | str,
    actor: AbstractBaseUser,
    upload_id: UUID | str,
    is_primary: bool = True,
    description: str = "",
    focus: dict[str, float] | None = None,
) -> Media:
    post = post_lock(post_id=post_id, actor=actor)
    try:
        upload = lock_rows(Upload.objects.all()).get(pk=upload_id, owner=actor)
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
        description=description,
        focus=focus,
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
    description: str = "",
    focus: dict[str, float] | None = None,
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
        description=description,
        focus=focus,
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
    description: str = "",
    focus: dict[str, float] | None = None,
) -> Media:
    extra_metadata = extra_metadata or {}
    description, (focus_x, focus_y) = _clean_description(description), _clean_focus(focus)
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
            description=description,
            focus_x=focus_x,
            focus_y=focus_y,
            metadata={**({"blocked_media": True} if quarantine else {}), **extra_metadata},
        )
        post_media_attached(post_id=post.pk, is_primary=is_primary, blocked=quarantine, media_id=media.pk)
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
    if post.status == PostStatus.PUBLISHED:
        # A new revision without it; the public keeps seeing it until that revision is cleared.
        post_edit(post_id=post.pk, actor=actor, detach_media_ids=[media_id])
        return
    if post.status not in ATTACHABLE_STATUSES:
        raise InvalidTransition(f"Media can only be removed from a draft; this post is {post.status}.")
    try:
        media = lock_rows(Media.objects.attached()).get(pk=media_id, post=post)
    except (Media.DoesNotExist, ValueError):
        raise NotFound("Media not found.") from None
    media.detached_at = timezone.now()
    media.save(update_fields=["detached_at", "updated_at"])
    blocked_remaining = any(
        m.get("blocked_media")
        for m in Media.objects.attached().filter(post=post).values_list("metadata", flat=True)
    )
    post_media_detached(post_id=post.pk, blocked_remaining=blocked_remaining)


MAX_DESCRIPTION = 1500


def _clean_description(description: str | None) -> str:
    description = (description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise ValidationFailed(
            f"Alt text can be at most {MAX_DESCRIPTION} characters.",
            extra={"errors": {"description": [f"At most {MAX_DESCRIPTION} characters."]}},
        )
    if "\x00" in description:
        raise ValidationFailed("Alt text cannot contain null characters.")
    return description


def _clean_focus(focus: dict[str, float] | None) -> tuple[float | None, float | None]:
    """``{x, y}`` each in [-1, 1] (Mastodon's focal point convention), or None for no focus."""
    if focus is None:
        return None, None
    try:
        x, y = float(focus["x"]), float(focus["y"])
    except (KeyError, TypeError, ValueError):
        raise ValidationFailed(
            "focus must be {x, y} with numbers.", extra={"errors": {"focus": ["Give numbers x and y."]}}
        ) from None
    if not (-1.0 <= x <= 1.0 and -1.0 <= y <= 1.0):
        raise ValidationFailed(
            "focus x and y must each be between -1 and 1.",
            extra={"errors": {"focus": ["x and y must each be between -1 and 1."]}},
        )
    return x, y


_UNSET: Any = object()


@transaction.atomic
def media_update(
    *,
    media_id: UUID | str,
    actor: AbstractBaseUser,
    description: str | None = _UNSET,
    focus: dict[str, float] | None = _UNSET,
) -> Media:
    """Set a medium's alt text and focal point (owner only; others get NotFound).

    Draft or processing post: both change in place. Published post (DESIGN.md §9): the alt text is
    content a reviewer must see before the public does, so it becomes a new revision of the post
    (``content.services.post_edit`` with ``media=[{id, description}]``): ``ai_prescreen`` keeps the
    old alt text public until that revision clears, ``reactive_only`` shows it at once. The focal
    point changes in place on a published post too: two numbers in [-1, 1] that only say where to
    crop a preview; no text, no new bytes, nothing a prescreen judges. Other statuses:
    ``InvalidTransition`` (409). A medium of the post that no revision lists (a derived one): 400.
    """
    try:
        media = Media.objects.attached().select_related("post").get(pk=media_id)
    except (Media.DoesNotExist, ValueError, TypeError):
        raise NotFound("Media not found.") from None
    if media.post is None or media.post.deleted_at is not None:
        raise NotFound("Media not found.")
    post = post_lock(post_id=media.post_id, actor=actor)  # owner check: others get 404
    if post.status not in ATTACH_TO_STATUSES:
        raise InvalidTransition(
            f"Media of a {post.status} post cannot be changed here; edit the post instead.",
            extra={"status": post.status},
        )
    fields = []
    if focus is not _UNSET:
        media.focus_x, media.focus_y = _clean_focus(focus)
        fields += ["focus_x", "focus_y"]
    if description is not _UNSET:
        text = _clean_description(description)
        if post.status == PostStatus.PUBLISHED:
            post_edit(post_id=post.pk, actor=actor, media=[{"id": str(media.pk), "description": text}])
            media.description = Media.objects.values_list("description", flat=True).get(pk=media.pk)
        else:
            media.description = text
            fields.append("description")
    if fields:
        media.save(update_fields=[*fields, "updated_at"])
    return media


@transaction.atomic
def media_attach_link_preview(
    *, post_id: UUID | str, data: bytes, source_url: str, revision: int | None = None
) -> Media | None:
    """Attach a link preview's image to a link post as a non-primary ``thumbnail`` medium, processed by
    the image pipeline (queue ``media.image``) and prescreened with the post like any medium.

    A draft (or processing) post: it replaces an earlier preview image and is submitted with the
    post. A published post: the medium is attached outside every revision, so nobody but the owner
    and staff sees it (content.selectors.public_media) until the caller makes it an item of a
    revision that is prescreened: ``revision`` (the number of the open revision waiting for its
    card, content.services.revision_link_preview_done) or, without one, a new revision
    (content.services.post_edit with ``attach_media_ids``, in the same transaction). A post under its
    first review (``pending_review``/``scheduled``) takes no image: media are never added to what a
    review is judging. Returns None (nothing stored) when the post moved on, the bytes are not an
    image we accept, are blocklisted, or would exceed the owner's quota.
    """
    try:
        post = post_lock(post_id=post_id)
    except NotFound:
        return None
    if revision is not None:
        pending = post.pending_revision
        if (
            post.status != PostStatus.PUBLISHED
            or pending is None
            or pending.number != revision
            or (pending.link_preview or {}).get("status") != "fetching"
        ):
            return None
    elif post.status not in ATTACH_TO_STATUSES:
        return None
    found = sniff(data[:4096])
    if (
        found is None
        or found.kind != MediaKind.IMAGE
        or found.mime_type not in ALLOWED_CONTENT_TYPES["image"]
    ):
        return None
    try:
        _check_size(found.kind, len(data))
        _check_quota(post.author, len(data))
        if blocklist_check(hashlib.sha256(data).hexdigest()):
            return None
    except (FileTooLarge, QuotaExceeded, BlockedMediaError, ValidationFailed):
        return None
    now = timezone.now()
    earlier = Media.objects.attached().filter(
        post=post, kind=MediaKind.THUMBNAIL, metadata__link_preview=True
    )
    if post.status == PostStatus.PUBLISHED:
        earlier = earlier.filter(revision_items__isnull=True)  # only orphans: revisions keep theirs
    earlier.update(detached_at=now, updated_at=now)
    media_id = uuid.uuid4()
    key = storage.media_key(post.author_id, media_id, "original", storage.extension_for(found.mime_type))
    storage.save(key, io.BytesIO(data), found.mime_type)
    try:
        media = Media.objects.create(
            id=media_id,
            post=post,
            owner_id=post.author_id,
            kind=MediaKind.THUMBNAIL,
            is_primary=False,
            position=Media.objects.filter(post=post).count(),
            original_filename="link-preview",
            original_key=key,
            mime_type=found.mime_type,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            metadata={"link_preview": True, "source_url": source_url[:2000]},
        )
    except BaseException:
        storage.delete(key)
        raise
    # The image actor runs any image-like medium; thumbnails have no actor of their own.
    queueing.send_on_commit(processing.actor_name(MediaKind.IMAGE), str(media.pk))
    return media


def user_quota(user: AbstractBaseUser) -> dict[str, int]:
    """``{used_bytes, limit_bytes, media_count}``: the same accounting the quota check refuses with
    (``user_storage_used``: stored media not yet purged plus uploads reserved but not attached)."""
    return {
        "used_bytes": user_storage_used(user),
        "limit_bytes": settings.MEDIA_USER_QUOTA_BYTES,
        "media_count": Media.objects.filter(owner=user, purged_at__isnull=True).count(),
    }


# --- lifecycle ---------------------------------------------------------------------------------------------


def media_retry(*, media_id: UUID | str, actor: AbstractBaseUser) -> Media:
    """Retry failed media (see ``media.processing.retry``, which owns every status change)."""
    return processing.retry(media_id=media_id, actor=actor)


# --- transcripts: the creator's corrections (issue 17) -----------------------------------------------------

TRANSCRIPT_MAX_CHARS = 20_000
TRANSCRIPT_LOCKED_STATUSES = (PostStatus.QUARANTINED, PostStatus.REJECTED)
# Under prescreen, a post on its way to the public (being reviewed, or cleared for a later time) takes
# no transcript edit: it would reach the public unscreened (the review may already have read the text).
TRANSCRIPT_WAIT_STATUSES = (PostStatus.PENDING_REVIEW, PostStatus.SCHEDULED)


def transcript_for(*, media_id: UUID | str, actor: AbstractBaseUser) -> Media:
    """The transcript medium ``media_id`` names: a transcript, or the transcript of an audio or video.
    ``NotFound`` unless the actor owns it (staff read through the admin) or there is none."""
    media = Media.objects.live().select_related("post").filter(pk=media_id).first()
    if media is None or media.owner_id != actor.pk:
        raise NotFound("Media not found.")
    if media.kind != MediaKind.TRANSCRIPT:
        media = (
            Media.objects.live()
            .select_related("post")
            .filter(parent=media, kind=MediaKind.TRANSCRIPT)
            .order_by("-created_at")
            .first()
        )
        if media is None:
            raise NotFound("This medium has no transcript.", code="transcript_not_found")
    return media


@transaction.atomic
def transcript_edit(*, media_id: UUID | str, actor: AbstractBaseUser, text: str) -> Media:
    """The owner corrects a transcript (accessibility): ``text`` has one caption per line; the same
    number of lines as cues keeps each cue's timing, anything else is spread over the cues
    (``media.speech.captions.retime``). The captions and text are stored under new keys (public URLs
    are cached as immutable).

    Nothing public before it is cleared: when the post is ``published`` and its author's posts are
    prescreened (``moderation.policy.needs_prescreen``), the edit is held in the transcript's
    ``metadata.pending_edit`` ({edit, segments, variants, submitted_at, word_count}) while the public
    keeps the cleared captions; the AI scores it (``rescore_transcript``), and it replaces them only
    when cleared (``transcript_edit_cleared``) or approved by a moderator
    (``transcript_edits_approved``). Otherwise (drafts: the prescreen at publish reads it; authors
    not prescreened) it replaces them at once. ``media.pending_edit_held`` tells the caller which.

    Errors: ``NotFound``; ``InvalidTransition`` (``transcript_not_ready``) before the speech step
    finished or without speech, for a quarantined or rejected post, and under prescreen for a post
    waiting for review or scheduled; ``ValidationFailed`` for empty or too long text."""
    from media.speech import captions
    from moderation import policy

    found = transcript_for(media_id=media_id, actor=actor)
    media = lock_rows(Media.objects.all(), of=("self",)).select_related("post").get(pk=found.pk)
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("Send the transcript text, one caption per line.", code="invalid")
    if len(text) > TRANSCRIPT_MAX_CHARS:
        raise ValidationFailed(f"A transcript is at most {TRANSCRIPT_MAX_CHARS} characters.", code="invalid")
    segments = [captions.Segment(*row) for row in media.metadata.get("segments") or []]
    if media.processing_status != "ready" or not segments:
        raise InvalidTransition(
            "This transcript is not ready, or no speech was found to caption.", code="transcript_not_ready"
        )
    post = media.post
    if post and post.status in TRANSCRIPT_LOCKED_STATUSES:
        raise InvalidTransition(f"The transcript of a {post.status} post cannot be edited.")
    screened = post is not None and policy.needs_prescreen(post)
    if screened and post.status in TRANSCRIPT_WAIT_STATUSES:
        raise InvalidTransition(
            f"This post is {post.status.replace('_', ' ')}; edit its transcript once it is published."
        )
    cues = captions.retime(segments, text)
    language = media.metadata.get("language") or "en"
    pending = media.metadata.get("pending_edit") or {}
    edits = max(int(media.metadata.get("edits") or 0), int(pending.get("edit") or 0)) + 1
    variants = {}
    with tempfile.TemporaryDirectory(prefix="postflow-transcript-") as tmp:
        for name, ext, mime, body in (
            ("captions", ".vtt", "text/vtt", captions.render_webvtt(cues, language=language)),
            ("text", ".txt", "text/plain", captions.plain_text(cues)),
        ):
            path = f"{tmp}/{name}{ext}"
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(body)
            key = storage.media_key(media.owner_id, media.pk, f"{name}-{edits}", ext)
            storage.save(key, Path(path), mime)
            variants[name] = {
                "key": key,
                "width": None,
                "height": None,
                "mime_type": mime,
                "size_bytes": Path(path).stat().st_size,
                "sha256": storage.file_sha256(Path(path)),
                **({"language": language} if name == "captions" else {}),
            }
    edit = {
        "edit": edits,
        "segments": [list(c.as_tuple()) for c in cues],
        "variants": variants,
        "submitted_at": timezone.now().isoformat(),
        "word_count": sum(len(c.text.split()) for c in cues),
    }
    held = screened and post.status == PostStatus.PUBLISHED
    if held:
        before = _transcript_keys(media, live=False)
        media.metadata = {**media.metadata, "pending_edit": edit}
        media.save(update_fields=["metadata", "updated_at"])
        _delete_unused_transcript_files(media, before)
        queueing.send_on_commit("rescore_transcript", str(post.pk), str(media.pk), post.revision, edits)
    else:
        _apply_transcript_edit(media, edit)
    media.pending_edit_held = held
    return media


def _apply_transcript_edit(media: Media, edit: dict) -> None:
    """Make ``edit`` (a ``pending_edit`` dict) the transcript's captions and text; drop any held
    edit; delete the files nothing points at any more after commit. The caller holds the row lock."""
    before = _transcript_keys(media)
    media.variants = {**media.variants, **edit["variants"]}
    media.original_key = edit["variants"]["text"]["key"]
    metadata = {k: v for k, v in media.metadata.items() if k != "pending_edit"}
    media.metadata = {
        **metadata,
        # What the recogniser heard is kept: the prescreen scores it as well as the creator's text,
        # so an edit cannot hide what was said (moderation.review), and moderators still see it.
        "speech_segments": metadata.get("speech_segments") or metadata.get("segments") or [],
        "segments": edit["segments"],
        "edits": edit["edit"],
        "edited_at": timezone.now().isoformat(),
        "word_count": edit["word_count"],
    }
    media.save(update_fields=["variants", "original_key", "metadata", "updated_at"])
    _delete_unused_transcript_files(media, before)
    # The video's HLS tree carries its own copy of the captions (a subtitle rendition): rewrite it too.
    transaction.on_commit(lambda: processing.refresh_hls_subtitles(transcript_id=media.pk), robust=True)
    if media.post_id:  # after commit: the post is locked after, never while, its media row is
        post_id = media.post_id
        transaction.on_commit(lambda: post_transcript_edited(post_id=post_id), robust=True)


def _transcript_keys(media: Media, *, live: bool = True, held: bool = True) -> set[str]:
    """The storage keys of the transcript's public variants and/or its held edit's."""
    variants = list(media.variants.values()) if live else []
    if held:
        variants += list(((media.metadata.get("pending_edit") or {}).get("variants") or {}).values())
    return {v["key"] for v in variants if isinstance(v, dict) and v.get("key")}


def _delete_unused_transcript_files(media: Media, old_keys: set[str]) -> None:
    """After commit, delete those of ``old_keys`` that neither the transcript's variants nor its held
    edit use now."""
    for key in old_keys - _transcript_keys(media):
        transaction.on_commit(lambda k=key: storage.delete(k))


@transaction.atomic
def transcript_edit_cleared(*, media_id: UUID | str, edit: int) -> bool:
    """The AI cleared the held edit number ``edit`` of the transcript ``media_id``: it replaces the
    public captions and text. False (nothing changes) when that edit is no longer the held one (a
    newer edit replaced it, or it was applied) or the transcript is gone."""
    media = (
        lock_rows(Media.objects.live(), of=("self",)).filter(pk=media_id, kind=MediaKind.TRANSCRIPT).first()
    )
    pending = (media.metadata.get("pending_edit") or {}) if media else {}
    if not pending or int(pending.get("edit") or 0) != int(edit):
        return False
    _apply_transcript_edit(media, pending)
    return True


@transaction.atomic
def transcript_edits_approved(*, post_id: UUID | str, edits: dict[str, int] | None = None) -> list[str]:
    """The post went public by a decision that saw its held transcript edits: a moderator's (the
    review page shows them; while a post waits for a human its transcript takes no edit) or the AI's
    verdict, which passes ``edits`` ({transcript id: held edit number} it scored) so that only those,
    and no newer edit, are applied. Each replaces its public captions and text. Returns the
    transcript ids changed."""
    changed = []
    for media in lock_rows(Media.objects.attached(), of=("self",)).filter(
        post_id=post_id, kind=MediaKind.TRANSCRIPT
    ):
        pending = media.metadata.get("pending_edit")
        if pending and edits is not None and edits.get(str(media.pk)) != int(pending.get("edit") or 0):
            continue
        if pending:
            _apply_transcript_edit(media, pending)
            changed.append(str(media.pk))
    return changed
