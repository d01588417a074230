"""Uploads, attaching, media status, retries, and the signed file endpoint."""

from __future__ import annotations

import logging
import posixpath

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
)
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from config.api import error_body, error_responses
from config.errors import FileTooLarge, NotFound, ServiceError
from config.parsers import JSONParser
from content.selectors import can_view_media, media_in_public_revision
from content.services import is_owner_or_staff, is_suspended
from media import services, storage
from media.api.serializers import (
    AttachSerializer,
    MediaSerializer,
    MediaUpdateSerializer,
    PartRequestSerializer,
    PartTargetsSerializer,
    QuotaSerializer,
    TranscriptEditSerializer,
    TranscriptSerializer,
    UploadCompleteSerializer,
    UploadCreateSerializer,
    UploadStateSerializer,
    UploadStatusSerializer,
    UploadTargetSerializer,
)
from media.api.serving import (
    HLS_MIME,
    HLS_TYPES,
    allow_methods,
    request_user,
    serve_object,
)
from media.models import Media

logger = logging.getLogger(__name__)


class UploadsPerHour(UserRateThrottle):
    scope = "uploads_hour"


class UploadsPerDay(UserRateThrottle):
    scope = "uploads_day"


class UploadCreateView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [UploadsPerHour, UploadsPerDay]

    @extend_schema(
        request=UploadCreateSerializer,
        responses={201: UploadTargetSerializer, **error_responses(400, 401, 413, 415, 429, 451)},
        tags=["media"],
        summary="Start a direct-to-storage upload",
        description="Returns where to send the bytes: a presigned S3 POST (send `fields` plus `file` as "
        "multipart) or a signed, single-use PUT URL on this server. With `resumable: true` (required "
        "above UPLOAD_SINGLE_MAX_BYTES) the file goes up in `part_count` parts of `part_size` bytes: ask "
        "for part URLs, PUT each part, then complete (README: upload protocol). Then attach with "
        "`{upload_id}`.",
    )
    def post(self, request):
        data = UploadCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        upload, target = services.upload_create(
            owner=request.user,
            filename=v["filename"],
            content_type=v["content_type"],
            size=v["size"],
            sha256=v.get("sha256", ""),
            resumable=v["resumable"],
            request=request,
        )
        return Response(
            {
                "upload_id": upload.id,
                **target,
                "expires_at": upload.expires_at,
                "max_bytes": upload.declared_size,
            },
            status=201,
        )


class UploadDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={200: UploadStateSerializer, **error_responses(401, 404)},
        tags=["media"],
        summary="An upload's state and, while it is open, the parts storage holds (to resume)",
    )
    def get(self, request, upload_id):
        return Response(
            UploadStateSerializer(services.upload_status(upload_id=upload_id, owner=request.user)).data
        )

    @extend_schema(
        responses={204: None, **error_responses(401, 404, 409)},
        tags=["media"],
        summary="Abort an upload that is not attached (its parts and bytes are deleted)",
    )
    def delete(self, request, upload_id):
        services.upload_abort(upload_id=upload_id, owner=request.user)
        return Response(status=204)


class UploadPartsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=PartRequestSerializer,
        responses={200: PartTargetsSerializer, **error_responses(400, 401, 404, 409)},
        tags=["media"],
        summary="Signed URLs to PUT parts of a resumable upload",
    )
    def post(self, request, upload_id):
        data = PartRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        parts = services.upload_parts(
            upload_id=upload_id,
            owner=request.user,
            part_numbers=data.validated_data["part_numbers"],
            request=request,
        )
        return Response({"parts": parts})


class UploadCompleteView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=UploadCompleteSerializer,
        responses={200: UploadStateSerializer, **error_responses(400, 401, 404, 409, 413)},
        tags=["media"],
        summary="Join the parts of a resumable upload (then attach it with its upload_id)",
    )
    def post(self, request, upload_id):
        data = UploadCompleteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.upload_complete(upload_id=upload_id, owner=request.user, parts=data.validated_data["parts"])
        return Response(
            UploadStateSerializer(services.upload_status(upload_id=upload_id, owner=request.user)).data
        )


def _content_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) or None
    except ValueError:
        return None


@csrf_exempt
@allow_methods("PUT")
def upload_part_data(request: HttpRequest, upload_id, part_number: int) -> HttpResponse:
    """The local storage's part target: the signature in the URL is the credential; the body is
    streamed to the part's file, never read whole into memory. Answers the part's ETag."""
    token = request.GET.get("signature", "")
    if not storage.verify_part_token(token, upload_id, part_number):
        return JsonResponse(
            error_body("invalid_signature", "This upload URL is invalid or has expired."), status=403
        )
    try:
        part = services.upload_part_receive(
            upload_id=upload_id,
            part_number=part_number,
            stream=request,
            content_length=_content_length(request),
        )
    except ServiceError as exc:
        return JsonResponse(error_body(exc.code, exc.detail, **exc.extra), status=exc.status_code)
    response = JsonResponse(part, status=200)
    response["ETag"] = f'"{part["etag"]}"'
    return response


@csrf_exempt
@allow_methods("PUT", "POST")
def upload_data(request: HttpRequest, upload_id) -> HttpResponse:
    """The local storage's upload target. The signature in the URL is the credential; the body is
    streamed to storage and never read whole into memory."""
    token = request.GET.get("signature", "")
    if not storage.verify_upload_token(token, upload_id):
        return JsonResponse(
            error_body("invalid_signature", "This upload URL is invalid or has expired."), status=403
        )
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0) or None
    except ValueError:
        length = None
    try:
        upload = services.upload_receive(upload_id=upload_id, stream=request, content_length=length)
    except ServiceError as exc:
        return JsonResponse(error_body(exc.code, exc.detail, **exc.extra), status=exc.status_code)
    return JsonResponse(UploadStatusSerializer(upload).data, status=200)


class _SizeLimitedUpload(FileUploadHandler):
    """Stops a multipart body as soon as it is larger than any media may be: the rest is never
    written to disk. (The per-kind limit is checked once the bytes say what kind it is.)"""

    def __init__(self, limit: int, request=None):
        super().__init__(request)
        self.limit, self.seen = limit, 0

    def receive_data_chunk(self, raw_data, start):
        self.seen += len(raw_data)
        if self.seen > self.limit:
            raise FileTooLarge(
                f"The file is larger than the largest allowed media ({self.limit // (1024 * 1024)} MB)."
            )
        return raw_data

    def file_complete(self, file_size):
        return None


def _largest_media() -> int:
    return max(settings.MEDIA_MAX_BYTES.values())


class AttachView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, JSONParser]
    throttle_classes = [UploadsPerHour, UploadsPerDay]

    @extend_schema(
        request={"multipart/form-data": AttachSerializer, "application/json": AttachSerializer},
        responses={201: MediaSerializer, **error_responses(400, 401, 403, 404, 409, 413, 415, 429, 451)},
        tags=["media"],
        summary="Attach media to a draft",
    )
    def post(self, request, post_id):
        limit = _largest_media()
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit + 1024 * 1024:  # multipart framing aside, refuse before reading the body
            raise FileTooLarge(
                f"The file is larger than the largest allowed media ({limit // (1024 * 1024)} MB)."
            )
        request._request.upload_handlers.insert(0, _SizeLimitedUpload(limit, request._request))
        data = AttachSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        if v.get("upload_id"):
            media = services.media_attach_upload(
                post_id=post_id,
                actor=request.user,
                upload_id=v["upload_id"],
                is_primary=v["is_primary"],
                description=v["description"],
                focus=v["focus"],
            )
        else:
            f = v["file"]
            media = services.media_attach_file(
                post_id=post_id,
                actor=request.user,
                file=f,
                filename=f.name or "upload",
                size=f.size,
                is_primary=v["is_primary"],
                description=v["description"],
                focus=v["focus"],
            )
        media = Media.objects.select_related("post").get(pk=media.pk)
        return Response(MediaSerializer(media, context={"request": request}).data, status=201)


class DetachView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={204: None, **error_responses(401, 403, 404, 409)},
        tags=["media"],
        summary="Detach media from a draft",
    )
    def delete(self, request, post_id, media_id):
        services.media_detach(post_id=post_id, media_id=media_id, actor=request.user)
        return Response(status=204)


def _visible_media(request, media_id) -> Media:
    media = Media.objects.attached().select_related("post").filter(pk=media_id).first()
    if media is None or not can_view_media(media, request.user):
        raise NotFound("Media not found.")
    return media


class MediaDetailView(APIView):
    @extend_schema(
        responses={200: MediaSerializer, **error_responses(401, 404)},
        tags=["media"],
        summary="Media with status, metadata and signed variant URLs",
    )
    def get(self, request, media_id):
        return Response(MediaSerializer(_visible_media(request, media_id), context={"request": request}).data)

    @extend_schema(
        request=MediaUpdateSerializer,
        responses={
            200: MediaSerializer,
            202: OpenApiResponse(
                MediaSerializer,
                description="Published post, `ai_prescreen`: the new alt text is a revision of the post "
                "waiting for the prescreen (see the post's `pending_revision.media[].description`); "
                "this JSON still shows the public alt text.",
            ),
            **error_responses(400, 401, 403, 404, 409),
        },
        tags=["media"],
        summary="Set alt text and focal point (owner)",
        description="Draft or processing post: both change in place. Published post: the alt text "
        "becomes a new revision of the post (public at once in `reactive_only`; in `ai_prescreen` the "
        "public keeps the old alt text until the revision clears: 202); the focal point changes in "
        "place (it is not content the prescreen judges). Other statuses: 409.",
    )
    def patch(self, request, media_id):
        data = MediaUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.media_update(media_id=media_id, actor=request.user, **data.validated_data)
        media = Media.objects.select_related("post", "post__pending_revision").get(pk=media_id)
        pending = media.post.pending_revision
        waiting = (
            "description" in data.validated_data
            and pending is not None
            and pending.items.filter(media=media).exclude(description=media.description).exists()
        )
        body = MediaSerializer(media, context={"request": request}).data
        return Response(body, status=202 if waiting else 200)


class QuotaView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={200: QuotaSerializer, **error_responses(401)},
        tags=["media"],
        summary="The caller's storage quota",
        description="`used_bytes` counts stored media not yet purged plus direct uploads reserved but "
        "not attached: the same sum an upload or attach is refused by (413 `quota_exceeded`).",
    )
    def get(self, request):
        return Response(services.user_quota(request.user))


def _cue_rows(segments: list | None) -> list[dict]:
    """Stored transcript segments ([start, end, text, confidence]) as the API's cues {start, end, text}."""
    return [{"start": c[0], "end": c[1], "text": c[2]} for c in segments or []]


def _transcript_data(request, transcript: Media, post) -> dict:
    cues = _cue_rows(transcript.metadata.get("segments"))
    transcript.post = post
    return {
        "id": transcript.pk,
        "media_id": transcript.parent_id,
        "processing_status": transcript.processing_status,
        "language": transcript.metadata.get("language") or "",
        "text": "\n".join(c["text"] for c in cues),
        "cues": cues,
        "captions": MediaSerializer(context={"request": request}).get_captions(transcript),
        "skipped": transcript.metadata.get("skipped") or "",
        "edited_at": transcript.metadata.get("edited_at"),
        "pending_edit": _pending_edit(request, transcript),
    }


def _pending_edit(request, transcript: Media) -> dict | None:
    """The owner's edit held for the prescreen (``media.services.transcript_edit``), or None. Only the
    owner sees it: until it is cleared the public gets the previous captions."""
    pending = transcript.metadata.get("pending_edit")
    if not pending or not request.user.is_authenticated or request.user.pk != transcript.owner_id:
        return None
    cues = _cue_rows(pending.get("segments"))
    return {
        "text": "\n".join(c["text"] for c in cues),
        "cues": cues,
        "submitted_at": pending.get("submitted_at"),
    }


class TranscriptView(APIView):
    """``GET``/``PATCH content/media/{id}/transcript`` (issue 17): ``id`` is the audio or video (or
    the transcript itself). Reading follows the post's visibility; only the owner edits."""

    def get_permissions(self):
        return [IsAuthenticated()] if self.request.method != "GET" else []

    @extend_schema(
        responses={200: TranscriptSerializer, **error_responses(401, 404)},
        tags=["media"],
        summary="The transcript of an audio or video: text, cues and captions URL",
    )
    def get(self, request, media_id):
        media = _visible_media(request, media_id)
        transcript = (
            media
            if media.kind == "transcript"
            else Media.objects.attached()
            .filter(parent=media, kind="transcript")
            .order_by("-created_at")
            .first()
        )
        if transcript is None:
            raise NotFound("This medium has no transcript.", code="transcript_not_found")
        return Response(TranscriptSerializer(_transcript_data(request, transcript, media.post)).data)

    @extend_schema(
        request=TranscriptEditSerializer,
        responses={
            200: TranscriptSerializer,
            202: OpenApiResponse(
                TranscriptSerializer,
                description="Held for the prescreen: `pending_edit` is the new text; the public keeps "
                "the previous captions until it is cleared.",
            ),
            **error_responses(400, 401, 404, 409),
        },
        tags=["media"],
        summary="Correct a transcript (owner); a published post's edit waits for the prescreen",
    )
    def patch(self, request, media_id):
        body = TranscriptEditSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        transcript = services.transcript_edit(
            media_id=media_id, actor=request.user, text=body.validated_data["text"]
        )
        data = TranscriptSerializer(_transcript_data(request, transcript, transcript.post)).data
        return Response(data, status=202 if transcript.pending_edit_held else 200)


class MediaRetryView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={202: MediaSerializer, **error_responses(401, 404, 409)},
        tags=["media"],
        summary="Re-queue failed media",
    )
    def post(self, request, media_id):
        _visible_media(request, media_id)
        media = services.media_retry(media_id=media_id, actor=request.user)
        media = Media.objects.select_related("post").get(pk=media.pk)
        return Response(MediaSerializer(media, context={"request": request}).data, status=202)


def _media_keys(media: Media) -> set[str]:
    keys = {media.original_key}
    keys |= {v["key"] for v in (media.variants or {}).values() if isinstance(v, dict) and v.get("key")}
    return keys


def _publicly_served(media: Media, *, private_object: bool) -> bool:
    """Bytes anyone may read: media of a published post that belong to its public revision (media of
    an edit still waiting for the prescreen are as private as a draft's, DESIGN.md §9), never an
    original (it may carry EXIF/GPS). A suspended account's media stop working at request time, even
    under a URL issued before (DESIGN.md §11)."""
    return (
        media.post.status == "published"
        and not private_object
        and media_in_public_revision(media)
        and not is_suspended(media.owner_id)
    )


def _viewer_may_read(request: HttpRequest, media: Media, *, private_object: bool) -> bool:
    """Publicly served media is for everyone; anything else only for the owner and staff,
    authenticated by session or token on this request."""
    if _publicly_served(media, private_object=private_object):
        return True
    return is_owner_or_staff(request_user(request), media.owner_id)


def _served_media(media_id) -> Media:
    media = Media.objects.attached().select_related("post").filter(pk=media_id).first()
    if media is None or media.post is None or media.post.deleted_at is not None or media.purged_at:
        raise Http404
    return media


@csrf_exempt  # GET and HEAD only: any other method is a JSON 405, not a CSRF page
@extend_schema(exclude=True)
@allow_methods("GET", "HEAD")
def media_file(request: HttpRequest, token: str) -> HttpResponse:
    """Serve stored bytes behind a signed, expiring URL. What the URL says is checked against the
    row now: the key must be canonical and one of the medium's current keys; media of a post that is
    not published, and every original (it may carry EXIF/GPS; a key that is also a named variant is
    that variant: ``Media.is_private_original``), are served only to the owner and staff,
    authenticated by session or token on this request. Ranges and validators: ``serve_object``."""
    signed = storage.verify_url_token(token)
    if signed is None:
        return JsonResponse(
            error_body("invalid_signature", "This media URL is invalid or has expired."), status=403
        )
    media = _served_media(signed.media_id)
    if not storage.key_belongs_to(signed.key, user_id=media.owner_id, media_id=media.pk):
        raise Http404
    if signed.key not in _media_keys(media):
        raise Http404  # a key of an older generation (rotated since) or of nothing at all
    is_original = media.is_private_original(signed.key)
    if not _viewer_may_read(request, media, private_object=is_original):
        raise Http404
    sha = media.sha256 if is_original else (media.variant_with_key(signed.key) or {}).get("sha256", "")
    return serve_object(
        request,
        key=signed.key,
        mime_type=signed.mime_type,
        filename=signed.filename,
        public=_publicly_served(media, private_object=is_original),
        expires=signed.expires,
        sha256=sha,
    )


def hls_folder(media: Media) -> str | None:
    """The folder of a medium's HLS tree (``dirname`` of ``variants.hls.key``), or None."""
    hls = (media.variants or {}).get("hls")
    if not isinstance(hls, dict) or not hls.get("key"):
        return None
    return posixpath.dirname(hls["key"])


@csrf_exempt  # GET and HEAD only: any other method is a JSON 405, not a CSRF page
@extend_schema(exclude=True)
@allow_methods("GET", "HEAD")
def media_tree(request: HttpRequest, token: str, path: str) -> HttpResponse:
    """Serve one object of a signed folder (an HLS master playlist, its variant playlists, init
    segments and fMP4 segments) under ``/m/h/<token>/<path>``. The token grants the folder that is
    the medium's current HLS folder; visibility is checked now as for ``media_file``; the MIME type
    comes from the extension; ranges and validators as ``serve_object``."""
    signed = storage.verify_prefix_token(token)
    if signed is None:
        return JsonResponse(
            error_body("invalid_signature", "This media URL is invalid or has expired."), status=403
        )
    try:
        key = storage.clean_key(f"{signed.folder}/{path}")
    except storage.InvalidKey:
        raise Http404 from None
    media = _served_media(signed.media_id)
    folder = hls_folder(media)
    if folder is None or folder != signed.folder:
        raise Http404  # rotated since, or a folder that is not this medium's HLS tree
    if not storage.key_belongs_to(key, user_id=media.owner_id, media_id=media.pk):
        raise Http404
    if not _viewer_may_read(request, media, private_object=False):
        raise Http404
    mime = HLS_TYPES.get(posixpath.splitext(key)[1].lower())
    if mime is None:
        raise Http404
    return serve_object(
        request,
        key=key,
        mime_type=mime,
        filename=posixpath.basename(key),
        public=_publicly_served(media, private_object=False),
        expires=signed.expires,
        sha256=_hls_file_sha256(media, key[len(folder) + 1 :]),
        # Playlists change in place (the transcript's subtitle rendition joins the master, a corrected
        # transcript rewrites the subtitles): caches must revalidate them (ETag = the recorded sha256).
        revalidate=mime == HLS_MIME or key.endswith(".vtt"),
    )


def _hls_file_sha256(media: Media, name: str) -> str:
    """The sha256 the video runner recorded for one file of the HLS tree (``variants.hls.files``
    {name: {size_bytes, sha256}}, the master in ``variants.hls.sha256``), so a segment's ETag never
    costs a read of the whole object; "" when not recorded (``serve_object`` then hashes once)."""
    hls = media.variants.get("hls") or {}
    if name == posixpath.basename(hls.get("key", "")):
        return hls.get("sha256", "")
    entry = (hls.get("files") or {}).get(name)
    return entry.get("sha256", "") if isinstance(entry, dict) else ""
