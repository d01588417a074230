"""Uploads, attaching, media status, retries, and the signed file endpoint."""

from __future__ import annotations

import logging
from functools import wraps

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from config.api import error_body, error_responses
from config.errors import FileTooLarge, NotFound, ServiceError
from config.parsers import JSONParser
from content.services import can_view_post, is_owner_or_staff
from media import services, storage
from media.api.serializers import (
    AttachSerializer,
    MediaSerializer,
    UploadCreateSerializer,
    UploadStatusSerializer,
    UploadTargetSerializer,
)
from media.models import Media

logger = logging.getLogger(__name__)


def _allow_methods(*methods: str):
    """``require_http_methods``, but the 405 is JSON with a ``code`` like every other API error."""

    def decorator(view):
        @wraps(view)
        def inner(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = JsonResponse(
                    error_body("method_not_allowed", f'Method "{request.method}" not allowed.'), status=405
                )
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        return inner

    return decorator


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
        "multipart) or a signed, single-use PUT URL on this server. Then attach with `{upload_id}`.",
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


@csrf_exempt
@_allow_methods("PUT", "POST")
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
                post_id=post_id, actor=request.user, upload_id=v["upload_id"], is_primary=v["is_primary"]
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
    if media is None or media.post is None or not can_view_post(media.post, request.user):
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


def _request_user(request: HttpRequest):
    """Session user, or the user of an ``Authorization: Token`` header."""
    if request.user.is_authenticated:
        return request.user
    try:
        result = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    return result[0] if result else None


def _media_keys(media: Media) -> set[str]:
    keys = {media.original_key}
    keys |= {v["key"] for v in (media.variants or {}).values() if isinstance(v, dict) and v.get("key")}
    return keys


@csrf_exempt  # GET and HEAD only: any other method is a JSON 405, not a CSRF page
@extend_schema(exclude=True)
@_allow_methods("GET", "HEAD")
def media_file(request: HttpRequest, token: str) -> HttpResponse:
    """Serve stored bytes behind a signed, expiring URL. What the URL says is checked against the
    row now: the key must be canonical and one of the medium's current keys; media of a post that is
    not published, and every original (it may carry EXIF/GPS), are served only to the owner and
    staff, authenticated by session or token on this request."""
    signed = storage.verify_url_token(token)
    if signed is None:
        return JsonResponse(
            error_body("invalid_signature", "This media URL is invalid or has expired."), status=403
        )
    media = Media.objects.attached().select_related("post").filter(pk=signed.media_id).first()
    if media is None or media.post is None or media.post.deleted_at is not None or media.purged_at:
        raise Http404
    if not storage.key_belongs_to(signed.key, user_id=media.owner_id, media_id=media.pk):
        raise Http404
    if signed.key not in _media_keys(media):
        raise Http404  # a key of an older generation (rotated since) or of nothing at all
    is_original = signed.key == media.original_key
    if media.post.status != "published" or is_original:
        user = _request_user(request)
        if not is_owner_or_staff(user, media.owner_id):
            raise Http404
    try:
        body = storage.open_for_response(signed.key)
    except FileNotFoundError:
        raise Http404 from None
    except (OSError, BotoCoreError, ClientError):
        # The storage is down or refusing (S3 unreachable, a 5xx, a disk error): the client may retry.
        logger.exception("media_file: storage read failed for media %s", media.pk)
        response = JsonResponse(
            error_body("storage_unavailable", "Media storage is unavailable; try again shortly."), status=503
        )
        response["Retry-After"] = "30"
        return response
    if hasattr(body, "read"):
        response = FileResponse(body, content_type=signed.mime_type)
    else:
        response = StreamingHttpResponse(body, content_type=signed.mime_type)
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=False, filename=signed.filename
    )
    response["X-Content-Type-Options"] = "nosniff"
    public = media.post.status == "published" and not is_original
    # Short public caching: a post quarantined later stops being served within minutes.
    response["Cache-Control"] = "public, max-age=300" if public else "private, no-store"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
