"""Serving stored bytes over HTTP, shared by the media and livestream views: the JSON 405, who is
asking (session or token), and ``serve_object`` with ranges, validators and the cache policy (DESIGN.md
§8)."""

from __future__ import annotations

import logging
import re
import time
from functools import wraps

from botocore.exceptions import BotoCoreError, ClientError
from django.core.cache import cache
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    JsonResponse,
    StreamingHttpResponse,
)
from django.utils.http import content_disposition_header, http_date, parse_http_date_safe
from rest_framework.exceptions import AuthenticationFailed

from config.api import error_body
from config.authentication import TokenAuthentication
from config.errors import AccountSuspended
from media import storage
from media.processors.video import HLS_MIME

logger = logging.getLogger(__name__)


def allow_methods(*methods: str):
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


def request_user(request: HttpRequest):
    """Session user, or the user of an ``Authorization: Token`` header."""
    if request.user.is_authenticated:
        return request.user
    try:
        result = TokenAuthentication().authenticate(request)
    except (AuthenticationFailed, AccountSuspended):
        return None
    return result[0] if result else None


# --- serving bytes: ranges, validators, cache policy (DESIGN.md §8) ----------------------------------------

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
HLS_TYPES = {
    ".m3u8": HLS_MIME,
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".ts": "video/mp2t",
    ".vtt": "text/vtt",
}


def _byte_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """The (start, end inclusive) of a single ``Range: bytes=…`` (RFC 9110 §14.1.2), None when the
    header is absent, malformed or asks for several ranges (then the whole object is sent), False
    when it is unsatisfiable (416)."""
    match = _RANGE.match(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored
    if start >= size:
        return False
    return start, min(end, size - 1)


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """Whether an If-None-Match (weak comparison) / If-Range (strong) list names ``etag``."""
    for tag in (t.strip() for t in header.split(",")):
        if tag == "*":
            return True
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def _object_sha256(key: str, info: storage.ObjectInfo, known: str) -> str:
    """The stored bytes' sha256: the one recorded when they were written, else computed once and
    cached (rows older than the recording, HLS segments) under the object's size and mtime."""
    if known:
        return known
    cache_key = f"media-sha256:{key}:{info.size}:{info.modified.timestamp():.0f}"
    sha = cache.get(cache_key)
    if not sha:
        sha = storage.sha256_of(key)
        cache.set(cache_key, sha, 30 * 24 * 3600)
    return sha


def _cache_control(*, public: bool, revalidate: bool, expires: int) -> str:
    if not public:
        return "private, no-store"
    if revalidate:
        return "public, no-cache"
    return f"public, max-age={max(0, expires - int(time.time()))}, immutable"


def serve_object(
    request: HttpRequest,
    *,
    key: str,
    mime_type: str,
    filename: str,
    public: bool,
    expires: int,
    sha256: str = "",
    revalidate: bool = False,
) -> HttpResponse:
    """A GET/HEAD answer for one stored object with everything browsers, players and CDNs use:
    ``Accept-Ranges``, a single ``Range`` → 206 (read at that offset, streamed) or 416 with
    ``Content-Range: bytes */size``; strong ``ETag`` (the bytes' sha256), ``Last-Modified``,
    ``If-None-Match`` / ``If-Modified-Since`` → 304, ``If-Range``; and the cache policy: ``public``
    objects get ``max-age`` = the seconds the URL has left and ``immutable`` (``revalidate``: objects
    rewritten in place, such as HLS playlists, get ``no-cache`` instead, so caches ask again with the
    ETag; RFC 9111 §5.2.2.4), others ``private, no-store``. Raises Http404 when the object is
    missing."""
    try:
        info = storage.stat(key)
    except FileNotFoundError:
        raise Http404 from None
    except (OSError, BotoCoreError, ClientError):
        return _storage_unavailable(key)
    etag = f'"{_object_sha256(key, info, sha256)}"'
    last_modified = http_date(int(info.modified.timestamp()))
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": last_modified,
        "Cache-Control": _cache_control(public=public, revalidate=revalidate, expires=expires),
        "X-Content-Type-Options": "nosniff",
    }

    def finish(response: HttpResponse) -> HttpResponse:
        for name, value in headers.items():
            response[name] = value
        return response

    if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag, weak=True):
            return finish(HttpResponseNotModified())
    else:
        since = parse_http_date_safe(request.META.get("HTTP_IF_MODIFIED_SINCE") or "")
        if since is not None and int(info.modified.timestamp()) <= since:
            return finish(HttpResponseNotModified())

    size = info.size
    wanted = _byte_range(request.META.get("HTTP_RANGE", ""), size) if request.method == "GET" else None
    if_range = request.META.get("HTTP_IF_RANGE")
    if wanted is not None and if_range:
        if if_range.startswith('"') or if_range.startswith("W/"):
            fresh = _etag_matches(if_range, etag, weak=False)
        else:
            fresh = if_range.strip() == last_modified
        if not fresh:
            wanted = None  # the client's copy is stale: send the whole new object
    if wanted is False:
        response = JsonResponse(
            error_body("range_not_satisfiable", f"The range is outside the object ({size} bytes)."),
            status=416,
        )
        response["Content-Range"] = f"bytes */{size}"
        return finish(response)
    start, end = wanted if wanted else (0, size - 1)
    length = end - start + 1 if size else 0
    if request.method == "HEAD":
        response = HttpResponse(content_type=mime_type)
    else:
        try:
            chunks = storage.iter_range(key, start, length)  # S3 sends its ranged GET here
        except FileNotFoundError:
            raise Http404 from None
        except (OSError, BotoCoreError, ClientError):
            return _storage_unavailable(key)
        response = StreamingHttpResponse(chunks, content_type=mime_type)
    response["Content-Length"] = str(length)
    if wanted:
        response.status_code = 206
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Content-Disposition"] = content_disposition_header(as_attachment=False, filename=filename)
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return finish(response)


def _storage_unavailable(key: str) -> JsonResponse:
    """The storage is down or refusing (S3 unreachable, a 5xx, a disk error): 503, the client may retry."""
    logger.exception("media: storage read failed for %s", key)
    response = JsonResponse(
        error_body("storage_unavailable", "Media storage is unavailable; try again shortly."), status=503
    )
    response["Retry-After"] = "30"
    return response
