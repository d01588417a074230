"""Every state change of a livestream (DESIGN.md §13), each in a transaction on the locked row:

    idle --publish accepted--> live --encoder stops / end / post hidden--> ended
      \\-------------------------- end --------------------------------/   (failed: the ingest broke)

The creator's side (provision on create, rotate the key, end) is called by content's API; the
ingest's side (``publish_check``, ``went_live``, ``finished``) by ``media.live.ingest`` or the Mux
webhook; moderation ends streams through ``livestream_end`` with no actor. The recording becomes a
``livestream_recording`` medium only once its bytes are in storage (``livestream_finished``), and is
queued on commit: a worker that dies afterwards leaves a ``pending`` medium that the sweep re-queues.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from config import queueing
from config.errors import InvalidTransition, NotFound, PermissionDenied, ServiceError
from config.locking import lock_rows
from content import events
from content.locks import post_lock
from content.models import NotificationType, Post, PostStatus, PostType
from content.notifications import notify
from content.services import is_owner_or_staff, post_recording_attached
from media import processing
from media.live import keys
from media.live.models import LiveStatus, LiveStream
from media.live.providers import LiveProviderError, get_live_provider
from media.models import Media, MediaKind, ProcessingStatus

logger = logging.getLogger("postflow.live")

WATCH_ACTOR = "watch_livestream"  # moderation.tasks: samples a frame every LIVESTREAM_AI_INTERVAL_SECONDS
OPEN = (LiveStatus.IDLE, LiveStatus.LIVE)


class LivestreamUnavailable(ServiceError):
    """The configured provider cannot take a new stream now (the local ingest is down, Mux refused)."""

    code = "livestream_unavailable"
    status_code = 503
    default_detail = "Livestreams are unavailable right now."


class PublishRefused(Exception):
    """The ingest must refuse an encoder: ``str(exc)`` says why (logged, never shown to the encoder)."""


# --- the creator's side -----------------------------------------------------------------------------


def livestream_provision(post: Post) -> LiveStream:
    """Provision the stream of a new ``livestream`` post through ``LIVESTREAM_PROVIDER``, inside the
    caller's transaction (a refusal rolls the post back). Raises ``LivestreamUnavailable`` (503) with
    the provider's reason when it cannot take streams now."""
    provider = get_live_provider()
    reason = provider.unavailable_reason()
    if reason:
        raise LivestreamUnavailable(reason)
    stream_id = uuid.uuid4()
    try:
        provisioned = provider.provision(stream_id=str(stream_id))
    except LiveProviderError as exc:
        raise LivestreamUnavailable(f"The {provider.name} livestream provider refused: {exc.detail}") from exc
    return LiveStream.objects.create(
        id=stream_id,
        post=post,
        owner_id=post.author_id,
        provider=provider.name,
        key_hash=keys.hash_key(provisioned.stream_key),
        key_encrypted=keys.encrypt(provisioned.stream_key),
        provider_stream_id=provisioned.provider_stream_id,
        provider_playback_id=provisioned.playback_id,
        provider_data=provisioned.data,
    )


def _locked_stream(post: Post) -> LiveStream:
    stream = lock_rows(LiveStream.objects.all()).filter(post=post).first()
    if stream is None:
        raise NotFound("This post has no livestream.", code="livestream_not_found")
    return stream


@transaction.atomic
def livestream_rotate_key(*, post_id: UUID | str, actor: AbstractBaseUser) -> LiveStream:
    """The owner gets a new stream key; the old one is refused from now on (an encoder already live
    keeps its connection). InvalidTransition once the stream has ended."""
    post = post_lock(post_id=post_id, actor=actor)
    stream = _locked_stream(post)
    if stream.status not in OPEN:
        raise InvalidTransition(f"The livestream has {stream.status}; its key can no longer be used.")
    try:
        key = get_live_provider(stream.provider).rotate_key(stream)
    except LiveProviderError as exc:
        raise LivestreamUnavailable(exc.detail) from exc
    stream.key_hash = keys.hash_key(key)
    stream.key_encrypted = keys.encrypt(key)
    stream.key_rotated_at = timezone.now()
    stream.save(update_fields=["key_hash", "key_encrypted", "key_rotated_at", "updated_at"])
    return stream


@transaction.atomic
def livestream_end(
    *, post_id: UUID | str, actor: AbstractBaseUser | None = None, reason: str = ""
) -> LiveStream:
    """End the stream of a post: by its owner or staff (``actor``), or by the platform (no actor:
    the AI, a moderator's quarantine). ``idle``/``live`` → ``ended``; the provider drops the encoder
    (the local ingest within a poll interval) and the recording follows (``livestream_finished``).
    NotFound for a post the actor may not see, PermissionDenied for a viewer who is neither owner nor
    staff, InvalidTransition when the stream already ended."""
    post = post_lock(post_id=post_id, actor=actor, owner_only=False, include_deleted=actor is None)
    if actor is not None and not is_owner_or_staff(actor, post.author_id):
        raise PermissionDenied("Only the author or a moderator can end this livestream.")
    stream = _locked_stream(post)
    if stream.status not in OPEN:
        raise InvalidTransition(
            f"The livestream has already {stream.status}.", extra={"status": stream.status}
        )
    before = stream.status
    stream.status = LiveStatus.ENDED
    stream.ended_at = timezone.now()
    if not reason:
        reason = "ended by its author" if actor is not None and actor.pk == post.author_id else "ended"
    stream.end_reason = reason[:200]
    stream.save(update_fields=["status", "ended_at", "end_reason", "updated_at"])
    provider = get_live_provider(stream.provider)
    stream_pk = stream.pk

    def tell_provider() -> None:
        try:
            provider.end(LiveStream.objects.get(pk=stream_pk))
        except LiveProviderError:
            logger.exception("livestream %s: the provider could not end it", stream_pk)

    transaction.on_commit(tell_provider, robust=True)
    _announce(stream, before)
    return stream


# --- the ingest's side ------------------------------------------------------------------------------


def livestream_publish_check(key: str, *, provider: str = "local") -> LiveStream:
    """The stream an encoder may publish with ``key`` now, or ``PublishRefused``: unknown key, a
    stream that is not idle (one broadcast per stream), or a post that is not published — in
    ``ai_prescreen`` a livestream goes live only once its text has cleared the prescreen."""
    stream = (
        LiveStream.objects.select_related("post")
        .filter(key_hash=keys.hash_key(key or ""), provider=provider)
        .first()
    )
    if stream is None:
        raise PublishRefused("unknown stream key")
    if stream.status != LiveStatus.IDLE:
        raise PublishRefused(f"stream {stream.pk} is {stream.status}")
    post = stream.post
    if post.deleted_at is not None or post.status != PostStatus.PUBLISHED:
        raise PublishRefused(f"post {post.pk} is {post.status if post.deleted_at is None else 'deleted'}")
    return stream


@transaction.atomic
def livestream_went_live(*, stream_id: UUID | str, hls_folder: str) -> LiveStream | None:
    """The encoder's stream was accepted: ``idle`` → ``live``, its live HLS tree in ``hls_folder``.
    Sends the frame watcher (in ``ai_prescreen``). None when the stream is no longer idle."""
    stream = lock_rows(LiveStream.objects.all()).filter(pk=stream_id).first()
    if stream is None or stream.status != LiveStatus.IDLE:
        return None
    stream.status = LiveStatus.LIVE
    stream.started_at = timezone.now()
    stream.hls_folder = hls_folder
    stream.error = ""
    stream.save(update_fields=["status", "started_at", "hls_folder", "error", "updated_at"])
    if ai_watches_streams():
        queueing.send_on_commit(WATCH_ACTOR, str(stream.pk))
    _announce(stream, LiveStatus.IDLE)
    return stream


def ai_watches_streams() -> bool:
    """Frames of live streams are scored while the platform is in ``ai_prescreen`` mode."""
    from moderation.platform import get_platform_settings

    return get_platform_settings().moderation_mode == "ai_prescreen"


def livestream_segment_seen(stream_id: UUID | str) -> None:
    """The ingest stored a new segment (the admin shows when the stream last moved)."""
    LiveStream.objects.filter(pk=stream_id).update(last_segment_at=timezone.now())


@transaction.atomic
def livestream_finished(
    *,
    stream_id: UUID | str,
    reason: str,
    recording: dict[str, Any] | None = None,
) -> Media | None:
    """The encoder is gone (it stopped, was dropped, or the stream was ended): ``live`` → ``ended``
    (kept if already ended), and the recording, whose bytes are already in storage, becomes a
    ``livestream_recording`` medium of the post, queued for the video pipeline on commit.

    ``recording``: {media_id, key, size_bytes, sha256, mime_type} (the key made with
    ``storage.media_key(owner, media_id, "original", ext)``), or None when nothing was recorded.
    Idempotent: a second call for a stream that has its recording returns that medium."""
    stream = lock_rows(LiveStream.objects.all()).select_related("post").filter(pk=stream_id).first()
    if stream is None:
        return None
    if stream.recording_media_id:
        return stream.recording_media
    before = stream.status
    fields = ["updated_at"]
    if stream.status in OPEN:
        stream.status = LiveStatus.ENDED
        stream.ended_at = timezone.now()
        stream.end_reason = reason[:200]
        fields += ["status", "ended_at", "end_reason"]
    media = None
    if recording is not None:
        media = Media.objects.create(
            id=UUID(str(recording["media_id"])),
            post=stream.post,
            owner_id=stream.owner_id,
            kind=MediaKind.LIVESTREAM_RECORDING,
            is_primary=False,
            processing_status=ProcessingStatus.PENDING,
            original_filename=f"livestream-{stream.pk}.{recording['key'].rsplit('.', 1)[-1]}",
            original_key=recording["key"],
            mime_type=recording["mime_type"],
            size_bytes=recording["size_bytes"],
            sha256=recording["sha256"],
            metadata={"livestream_id": str(stream.pk)},
        )
        stream.recording_media = media
        fields.append("recording_media")
        post_recording_attached(post_id=stream.post_id, media_id=media.pk)
        processing.dispatch(media)
    stream.save(update_fields=fields)
    if before in OPEN:
        _announce(stream, before)
    return media


@transaction.atomic
def livestream_failed(*, stream_id: UUID | str, error: str) -> None:
    """The ingest could not run the stream (the remuxer would not start): ``idle``/``live`` →
    ``failed`` with the reason, shown to the owner."""
    stream = lock_rows(LiveStream.objects.all()).filter(pk=stream_id).first()
    if stream is None or stream.status not in OPEN:
        return
    before = stream.status
    stream.status = LiveStatus.FAILED
    stream.ended_at = timezone.now()
    stream.error = error[:2000]
    stream.save(update_fields=["status", "ended_at", "error", "updated_at"])
    _announce(stream, before)


def livestream_should_stop(stream_id: UUID | str) -> str | None:
    """Why the ingest must drop a live encoder now, or None: the stream was ended (by its owner, a
    moderator or the AI), or its post is no longer public (quarantined, unpublished, deleted)."""
    row = (
        LiveStream.objects.filter(pk=stream_id)
        .values("status", "end_reason", "post__status", "post__deleted_at")
        .first()
    )
    if row is None:
        return "stream deleted"
    if row["status"] != LiveStatus.LIVE:
        return row["end_reason"] or f"stream {row['status']}"
    if row["post__deleted_at"] is not None:
        return "post deleted"
    if row["post__status"] != PostStatus.PUBLISHED:
        return f"post {row['post__status']}"
    return None


def livestream_watch_overdue(stream_id: UUID | str) -> bool:
    """Re-send the AI's frame watcher when a live stream has gone unwatched for three intervals (its
    delayed message was lost: a broker restart). True when it was sent."""
    from datetime import timedelta

    from django.conf import settings

    if not ai_watches_streams():
        return False
    row = LiveStream.objects.filter(pk=stream_id).values("status", "started_at", "ai_checked_at").first()
    if row is None or row["status"] != LiveStatus.LIVE:
        return False
    last = row["ai_checked_at"] or row["started_at"]
    overdue = timedelta(seconds=3 * settings.LIVESTREAM_AI_INTERVAL_SECONDS + 5)
    if last is None or timezone.now() - last < overdue:
        return False
    return queueing.send(WATCH_ACTOR, str(stream_id))


# --- telling the creator ------------------------------------------------------------------------------


# A status change the author is told about as a notification, besides the ``post.updated`` event.
STATUS_NOTIFICATIONS = {
    LiveStatus.LIVE: NotificationType.LIVESTREAM_LIVE,
    LiveStatus.ENDED: NotificationType.LIVESTREAM_ENDED,
    LiveStatus.FAILED: NotificationType.LIVESTREAM_FAILED,
}


def _announce(stream: LiveStream, before: str) -> None:
    """A status change of the stream: logged, and told to its author as a ``post.updated`` event
    carrying ``livestream`` {status, started_at, ended_at, end_reason} (DESIGN.md §10's event log,
    ``content.events``), and a ``livestream_live``/``livestream_ended``/``livestream_failed``
    notification with the reason it ended or failed."""
    logger.info(
        "livestream %s: %s -> %s",
        stream.pk,
        before,
        stream.status,
        extra={"event": "livestream_status", "livestream_id": str(stream.pk), "post_id": str(stream.post_id)},
    )
    post = Post.objects.filter(pk=stream.post_id).first()
    if post is None:
        return
    data = {
        **events.post_data(post),
        "livestream": {
            "status": stream.status,
            "started_at": stream.started_at.isoformat() if stream.started_at else None,
            "ended_at": stream.ended_at.isoformat() if stream.ended_at else None,
            "end_reason": stream.end_reason,
        },
    }
    events.publish(post.author_id, "post.updated", data)
    told = STATUS_NOTIFICATIONS.get(stream.status)
    if told and stream.status != before:
        reason = stream.error if stream.status == LiveStatus.FAILED else stream.end_reason
        notify(
            user=post.author_id,
            type=told,
            post=post,
            reason=reason or "",
            data={"livestream": data["livestream"]},
        )


# --- reading -----------------------------------------------------------------------------------------


def live_streams_now(limit: int = 50) -> list[LiveStream]:
    """Streams that are live now, longest running first, with their post and author (the admin's
    "Live now" list)."""
    return list(
        LiveStream.objects.filter(status=LiveStatus.LIVE)
        .select_related("post", "owner")
        .order_by("started_at")[:limit]
    )


def obs_settings(ingest_url: str, key: str | None) -> dict[str, Any]:
    """What to type into OBS (Settings → Stream: Service "Custom…") and an ffmpeg line that works."""
    return {
        "service": "Custom...",
        "server": ingest_url,
        "stream_key": key,
        "video_encoder": "x264 (H.264)",
        "audio_encoder": "AAC, 128 kbps, 44.1 or 48 kHz",
        "rate_control": "CBR",
        "bitrate_kbps": 4500,
        "keyframe_interval_seconds": 2,
        "ffmpeg": (
            f"ffmpeg -re -i input.mp4 -c:v libx264 -preset veryfast -g 60 -keyint_min 60 "
            f"-c:a aac -b:a 128k -f flv {ingest_url}/{key or '<stream_key>'}"
        ),
    }


def livestream_json(post: Post, request=None) -> dict[str, Any] | None:
    """Post JSON ``livestream`` (DESIGN.md §13): {status, playback_url, started_at, ended_at,
    recording_media_id, end_reason}, plus ``ingest_url``, ``stream_key`` and ``obs`` for the owner
    only. The caller has checked that the viewer may see the post; ``playback_url`` is a signed live
    HLS folder grant (public only while the post is published). None for other post types."""
    if post.type != PostType.LIVESTREAM:
        return None
    try:
        stream = post.livestream
    except LiveStream.DoesNotExist:
        return None
    user = getattr(request, "user", None)
    public = post.status == PostStatus.PUBLISHED and post.deleted_at is None
    provider = get_live_provider(stream.provider)
    data: dict[str, Any] = {
        "status": stream.status,
        "playback_url": provider.playback_url(stream, public=public, request=request),
        "started_at": stream.started_at,
        "ended_at": stream.ended_at,
        "end_reason": stream.end_reason,
        "recording_media_id": str(stream.recording_media_id) if stream.recording_media_id else None,
    }
    if user is not None and user.is_authenticated and user.pk == post.author_id:
        key = keys.decrypt(stream.key_encrypted)
        ingest = provider.ingest_url(stream)
        data["ingest_url"] = ingest
        data["stream_key"] = key
        data["obs"] = obs_settings(ingest, key)
        data["error"] = stream.error
    return data
