"""API plumbing shared by every app: the one exception handler, pagination and error schemas."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.errors import ServiceError
from config.parsers import JSONParser, JSONTooDeep  # noqa: F401 (the API's parser, re-exported)

logger = logging.getLogger(__name__)


_DRF_CODES = {
    JSONTooDeep: "json_too_deep",
    exceptions.ParseError: "malformed_request",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_request_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "detail": detail, **extra}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error leaves as JSON ``{code, detail[, errors]}`` with a stable snake_case code."""
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.detail, **exc.extra), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("request_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    elif isinstance(exc, SuspiciousOperation):
        return Response(error_body("bad_request", "The request was malformed."), status=400)

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        first = _first_message(errors)
        response.data = error_body("invalid", first or "The request has invalid fields.", errors=errors)
    else:
        detail = response.data.get("detail") if isinstance(response.data, dict) else None
        response.data = error_body(code, str(detail or exc))
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            response.data["retry_after"] = int(exc.wait)
    return response


def _first_message(errors: Any, prefix: str = "") -> str:
    if isinstance(errors, dict):
        for key, value in errors.items():
            message = _first_message(value, f"{key}: " if key != "non_field_errors" else "")
            if message:
                return message
    elif isinstance(errors, list) and errors:
        return _first_message(errors[0], prefix)
    elif errors:
        return f"{prefix}{errors}"
    return ""


class NewestFirstCursorPagination(CursorPagination):
    page_size = 20
    max_page_size = 100
    page_size_query_param = "page_size"
    ordering = ("-published_at", "-id")

    def decode_cursor(self, request):
        """A cursor the client mangled is bad input (400), not a missing page (DRF says 404) and
        not a server error: its position is a timestamp that would otherwise reach the query."""
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            cursor, valid = None, False
        else:
            valid = cursor is None or cursor.position is None or _is_datetime(cursor.position)
        if not valid:
            raise exceptions.ValidationError(
                {self.cursor_query_param: ["Invalid cursor; use the `next` or `previous` link as given."]}
            )
        return cursor


def _is_datetime(value: str) -> bool:
    try:
        return parse_datetime(value) is not None
    except ValueError:
        return False


ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "code": serializers.CharField(help_text="Stable snake_case error code."),
        "detail": serializers.CharField(help_text="A human sentence."),
        "errors": serializers.DictField(required=False, help_text="Per-field messages (validation)."),
    },
)


def error_responses(*codes: int, **described: str) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for the error statuses an endpoint can return."""
    texts = {
        400: "Invalid input (`invalid`, `malformed_request`, `json_too_deep`).",
        401: "Not authenticated, or a wrong token or session (`not_authenticated`, `authentication_failed`).",
        403: "Not allowed (`permission_denied`).",
        404: "Not found, or not visible to the caller (`not_found`).",
        409: "Not allowed in the current state (`invalid_transition`, `media_failed`, `conflict`).",
        413: "Too large (`file_too_large`, `quota_exceeded`, `request_too_large`).",
        415: "Unsupported media type (`unsupported_media_type`).",
        429: "Too many requests (`throttled`); see `Retry-After`.",
        451: "Blocked by the moderators (`blocked_media`).",
    }
    out = {}
    for code in codes:
        out[code] = OpenApiResponse(
            ErrorSerializer, description=described.get(f"e{code}", texts.get(code, ""))
        )
    return out
