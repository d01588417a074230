"""Suspension takes effect at request time (DESIGN.md §11): the API answers 403 ``account_suspended``
to a suspended account's token or session, its logins are refused (admin form and ``auth/token``),
and its admin session ends at its next request. One indexed query per authenticated request
(``moderation.policy.is_suspended``); nothing is cached, so lifting or imposing a suspension counts
from the next request."""

from __future__ import annotations

from django.contrib.auth import logout
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest, HttpResponse
from drf_spectacular.authentication import SessionScheme
from rest_framework import authentication

from config.errors import AccountSuspended
from moderation.policy import is_suspended


def _refuse_suspended(result):
    if result is not None and is_suspended(result[0].pk):
        raise AccountSuspended(
            "This account is suspended; it cannot use the API.", extra={"account_status": "suspended"}
        )
    return result


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication; a suspended account's token is 403 ``account_suspended``."""

    def authenticate(self, request):
        return _refuse_suspended(super().authenticate(request))


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication; a suspended account's session is 403 ``account_suspended``."""

    def authenticate(self, request):
        return _refuse_suspended(super().authenticate(request))


class SuspendableSessionScheme(SessionScheme):
    """The OpenAPI description of our session authentication (DRF's cookie session)."""

    target_class = "config.authentication.SessionAuthentication"


class StandingBackend(ModelBackend):
    """Django's ``ModelBackend`` that refuses to log a suspended account in. A right password for a
    suspended account marks the request (``request.account_suspended``) so ``auth/token`` can answer
    403 ``account_suspended`` instead of "wrong password"; the admin form shows its usual refusal."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and is_suspended(user.pk):
            if request is not None:
                request.account_suspended = True
            return None
        return user


class SuspendedAccountMiddleware:
    """Ends a suspended account's session outside the API (the admin, ``/m/``) at its next request;
    under ``/api/`` the session is left to DRF, which answers 403 ``account_suspended``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            user is not None
            and not request.path.startswith("/api/")
            and user.is_authenticated
            and is_suspended(user.pk)
        ):
            logout(request)
        return self.get_response(request)
