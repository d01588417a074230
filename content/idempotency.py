"""``Idempotency-Key`` on every authenticated API POST (DESIGN §9), implemented once as middleware.

A mobile client that retries a POST whose answer it never got must not create a second post. With
``Idempotency-Key: <≤255 chars>`` on a POST to any DRF view:

- first time for this user and key: the request runs; its response (any status below 500 except 429)
  is stored for 24 h (``IDEMPOTENCY_TTL_HOURS``). A 5xx, a 429 or an exception frees the key again;
- same user, key and request (method, path, body) again: the stored response, with
  ``Idempotent-Replayed: true``, and nothing runs;
- same key with another request: 422 ``idempotency_key_reused``;
- while the first is still running: 409 ``idempotency_key_in_use`` (retry later). The claim is an
  INSERT under a unique (user, key) constraint committed before the view runs, so of two identical
  requests at once exactly one runs. A claim left by a crashed process is taken over after
  ``IDEMPOTENCY_LOCK_SECONDS``.

Anonymous POSTs (``auth/register``, ``auth/token``, the signed upload endpoint) ignore the header:
there is no user to scope the key to, and storing a response that carries an API token would keep a
credential in the database; a retried register answers 400 "username taken", and ``auth/token`` is
naturally idempotent. Stripe's idempotency design (keys per account, 24 h, fingerprint of the
parameters, 409 while in flight) is the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from content.models import IdempotencyKey, IdempotencyState

logger = logging.getLogger("postflow.idempotency")

HEADER = "HTTP_IDEMPOTENCY_KEY"
MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"
# Response headers worth replaying besides the body.
KEPT_HEADERS = ("Content-Type", "Location", "Retry-After")
_CHUNK = 1 << 16


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


def _authenticated_user(request: HttpRequest):
    """The user DRF would authenticate (token, or session with its CSRF check), or None."""
    drf_request = Request(request)
    for authenticator in (cls() for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES):
        try:
            result = authenticator.authenticate(drf_request)
        except APIException:
            return None  # the view will answer 401/403 itself
        if result is not None:
            return result[0]
    return None


class _HashingStream:
    """Wraps the request body stream: hashes what the view reads (multipart bodies are never read
    into memory just to fingerprint them)."""

    def __init__(self, stream, digest):
        self._stream = stream
        self._digest = digest

    def read(self, *args, **kwargs):
        data = self._stream.read(*args, **kwargs)
        self._digest.update(data)
        return data

    def readline(self, *args, **kwargs):
        data = self._stream.readline(*args, **kwargs)
        self._digest.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _is_multipart(request: HttpRequest) -> bool:
    return request.content_type.startswith("multipart/") if request.content_type else False


def _prefix(request: HttpRequest):
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.get_full_path()}\n".encode())
    return digest


def _json_fingerprint(request: HttpRequest) -> str:
    """Method, path and body; a JSON body is compared by value (key order and spacing aside)."""
    digest = _prefix(request)
    body = request.body
    if (request.content_type or "").endswith("json"):
        with contextlib.suppress(ValueError):
            body = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    digest.update(body)
    return digest.hexdigest()


class IdempotencyMiddleware:
    """Put after AuthenticationMiddleware. Applies to POSTs routed to a DRF ``APIView``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.get_response(request)
        except BaseException:
            claim = getattr(request, "_idempotency_claim", None)
            if claim is not None:
                IdempotencyKey.objects.filter(pk=claim[0].pk).delete()
            raise
        claim = getattr(request, "_idempotency_claim", None)
        if claim is not None:
            self._finish(request, response, *claim)
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        if request.method != "POST" or HEADER not in request.META:
            return None
        view_class = getattr(view_func, "cls", None)
        if not (isinstance(view_class, type) and issubclass(view_class, APIView)):
            return None
        key = request.META[HEADER].strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            return _error(
                400, "invalid_idempotency_key", f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} characters."
            )
        user = _authenticated_user(request)
        if user is None:
            return None  # anonymous: the header is ignored (module docstring)
        multipart = _is_multipart(request)
        fingerprint = "" if multipart else _json_fingerprint(request)
        row, existing = self._claim(user, key, fingerprint)
        if row is not None:
            digest = None
            if multipart:
                digest = _prefix(request)
                request._stream = _HashingStream(request._stream, digest)
            request._idempotency_claim = (row, digest)
            return None
        if existing.state == IdempotencyState.IN_PROGRESS:
            return _error(
                409,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being processed; retry in a moment.",
            )
        if multipart:
            digest = _prefix(request)
            _HashingStream(request._stream, digest).drain()
            fingerprint = digest.hexdigest()
        if fingerprint != existing.fingerprint:
            return _error(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request; use a new key.",
            )
        return self._replay(existing)

    # --- claim / finish / replay -----------------------------------------------------------------
    def _claim(self, user, key: str, fingerprint: str):
        """(new in-progress row, None) if this request runs; (None, the existing row) otherwise."""
        now = timezone.now()
        for _ in range(3):
            IdempotencyKey.objects.filter(user=user, key=key, expires_at__lte=now).delete()
            IdempotencyKey.objects.filter(
                user=user, key=key, state=IdempotencyState.IN_PROGRESS, locked_until__lte=now
            ).delete()
            try:
                with transaction.atomic():
                    row = IdempotencyKey.objects.create(
                        user=user,
                        key=key,
                        fingerprint=fingerprint,
                        state=IdempotencyState.IN_PROGRESS,
                        locked_until=now + timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS),
                        expires_at=now + timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS),
                    )
                return row, None
            except IntegrityError:
                existing = IdempotencyKey.objects.filter(user=user, key=key).first()
                if existing is not None:
                    return None, existing
        raise RuntimeError("could not claim or read the idempotency key")  # pragma: no cover

    def _finish(self, request: HttpRequest, response: HttpResponse, row: IdempotencyKey, digest) -> None:
        status = response.status_code
        if status >= 500 or status == 429 or response.streaming:
            IdempotencyKey.objects.filter(pk=row.pk).delete()
            return
        if digest is not None:
            stream = request._stream
            if isinstance(stream, _HashingStream):
                stream.drain()  # what the view did not read is part of the request too
            row.fingerprint = digest.hexdigest()
        row.state = IdempotencyState.DONE
        row.response_status = status
        row.response_headers = {h: response[h] for h in KEPT_HEADERS if response.has_header(h)}
        row.response_body = bytes(response.content)
        row.save(
            update_fields=["fingerprint", "state", "response_status", "response_headers", "response_body"]
        )

    def _replay(self, row: IdempotencyKey) -> HttpResponse:
        response = HttpResponse(bytes(row.response_body), status=row.response_status)
        for name, value in (row.response_headers or {}).items():
            response[name] = value
        response[REPLAYED_HEADER] = "true"
        logger.info("replayed idempotency key of user %s (status %s)", row.user_id, row.response_status)
        return response


def purge_expired_idempotency_keys(*, now=None) -> int:
    """Delete keys past their 24 h; returns how many (``purge_media`` and the scheduler call it)."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


# --- OpenAPI: the header and its answers on every authenticated POST --------------------------------
ANONYMOUS_POSTS = ("/api/v1/auth/register", "/api/v1/auth/token")
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_ANSWERS = {
    "400": "Invalid input (`invalid`), or an Idempotency-Key that is empty or longer than 255 "
    "characters (`invalid_idempotency_key`).",
    "409": "A request with this Idempotency-Key is still running (`idempotency_key_in_use`).",
    "422": "This Idempotency-Key was used with a different request (`idempotency_key_reused`).",
}


def schema_hook(result, generator, request, public):
    """drf-spectacular postprocessing hook: documents ``Idempotency-Key`` on every POST that takes it,
    the 400/409/422 answers it adds, and the ``Idempotent-Replayed`` header on replayed answers."""
    for path, operations in result.get("paths", {}).items():
        op = operations.get("post")
        if op is None or path in ANONYMOUS_POSTS:
            continue
        op.setdefault("parameters", []).append(
            {
                "in": "header",
                "name": "Idempotency-Key",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                "description": "Retry safely: the same key and request within 24 h replays the first "
                "answer (with `Idempotent-Replayed: true`) instead of running again.",
            }
        )
        responses = op.setdefault("responses", {})
        for status, text in _ANSWERS.items():
            if status in responses:
                responses[status]["description"] = (
                    f"{responses[status].get('description', '')} {text}".strip()
                )
            else:
                responses[status] = {"content": _ERROR_REF, "description": text}
        for status, response in responses.items():
            if status.startswith("2"):
                response.setdefault("headers", {})[REPLAYED_HEADER] = {
                    "schema": {"type": "string", "enum": ["true"]},
                    "description": "Present when this is the stored answer to an earlier request with the "
                    "same Idempotency-Key.",
                }
    return result
