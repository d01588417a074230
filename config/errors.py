"""Typed domain errors. Services raise them; ``config.api.exception_handler`` turns each into a
stable ``code`` and an HTTP status at the edge."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    code = "error"
    status_code = 400
    default_detail = "The request could not be completed."

    def __init__(
        self, detail: str | None = None, *, code: str | None = None, extra: dict[str, Any] | None = None
    ):
        self.detail = detail or self.default_detail
        if code:
            self.code = code
        self.extra = extra or {}
        super().__init__(self.detail)


class NotFound(ServiceError):
    code = "not_found"
    status_code = 404
    default_detail = "Not found."


class InvalidTransition(ServiceError):
    code = "invalid_transition"
    status_code = 409
    default_detail = "That change is not allowed in the current state."


class ValidationFailed(ServiceError):
    code = "invalid"
    status_code = 400


class PermissionDenied(ServiceError):
    code = "permission_denied"
    status_code = 403
    default_detail = "You do not have permission to do that."


class Conflict(ServiceError):
    code = "conflict"
    status_code = 409


class MediaFailed(Conflict):
    code = "media_failed"
    default_detail = "A media file of this post failed processing; retry or remove it first."


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"
    status_code = 415


class FileTooLarge(ServiceError):
    code = "file_too_large"
    status_code = 413


class QuotaExceeded(ServiceError):
    code = "quota_exceeded"
    status_code = 413


class BlockedMedia(ServiceError):
    code = "blocked_media"
    status_code = 451
    default_detail = "This file has been blocked by the moderators."


class AccountSuspended(ServiceError):
    """The caller's account is suspended (DESIGN.md §11): every API request with its token or session."""

    code = "account_suspended"
    status_code = 403
    default_detail = "This account is suspended."
