"""Who the client is, and what a locked-out login sees.

``client_ip`` is the one rule for the client's address (the request log), and ``client_key`` the
same address as rate limits count it (DRF's throttles and the login lockout): an IPv6 client is
counted by its /64, the block one subscriber or one host usually holds. Both follow DRF's rule,
driven by ``TRUSTED_PROXY_COUNT`` (``REST_FRAMEWORK["NUM_PROXIES"]``). Failed logins are counted by
django-axes (``config.logins``); ``login_locked_response`` is its lockout answer: JSON 429
``login_locked`` on the API, an HTML page on the admin, both with ``Retry-After``.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from django.conf import settings
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from rest_framework.throttling import BaseThrottle

LOGIN_LOCKED_CODE = "login_locked"


def client_ip(request: HttpRequest) -> str | None:
    """The client's address (a string such as ``"203.0.113.7"``), or None when unknown.

    DRF's rule (``BaseThrottle.get_ident``): with ``TRUSTED_PROXY_COUNT`` = 0, ``REMOTE_ADDR``,
    whatever ``X-Forwarded-For`` says; with N > 0, the N-th address from the right of
    ``X-Forwarded-For`` (the one our outermost proxy saw). A value that is not an IP address (a
    proxy that is not really there) falls back to ``REMOTE_ADDR``, so the lockout never stores junk.
    """
    ident = BaseThrottle().get_ident(request)
    for candidate in (ident, request.META.get("REMOTE_ADDR")):
        try:
            return str(ipaddress.ip_address((candidate or "").strip()))
        except ValueError:
            continue
    return None


IPV6_BUCKET_PREFIX = 64


def client_key(request: HttpRequest) -> str | None:
    """The client's address as throttles and the login lockout count it, or None when unknown.

    IPv4: the address (``"203.0.113.7"``). IPv6: the first address of its /64
    (``"2001:db8:1:2::"``), because one host or subscriber is normally given a whole /64 (RFC 6177)
    and could otherwise take a new address, and a new allowance, for every request. An IPv4-mapped
    IPv6 address (``::ffff:203.0.113.7``) counts as its IPv4 address.
    """
    address = client_ip(request)
    if address is None:
        return None
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_BUCKET_PREFIX}", strict=False).network_address)
    return address


def lockout_seconds_left(request: HttpRequest, credentials: dict[str, Any] | None) -> int:
    """Seconds until the lockout of this login ends (whole seconds, at least 1).

    django-axes keeps one row per (username, address, user agent) with the time of its last failure;
    a lockout ends ``AXES_COOLOFF_TIME`` after the last failure counted in a group (pair, address,
    account) that is over its limit.
    """
    from axes.handlers.proxy import AxesProxyHandler

    from config.logins import LoginAttemptsHandler

    cool_off = settings.AXES_COOLOFF_TIME
    AxesProxyHandler.update_request(request)
    latest = None
    for attempts in LoginAttemptsHandler().attempts_over_limit(request, credentials):
        last = attempts.aggregate(last=Max("attempt_time"))["last"]
        if last is not None and (latest is None or last > latest):
            latest = last
    if latest is None:
        return max(1, int(cool_off.total_seconds()))
    return max(1, math.ceil((latest + cool_off - timezone.now()).total_seconds()))


def _lockout_detail(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (
        f"Too many failed logins for this account or from this address. Try again in {minutes} "
        f"minute{'s' if minutes != 1 else ''}, or ask an operator to unlock it."
    )


def login_locked_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """django-axes' ``AXES_LOCKOUT_CALLABLE``: 429 with ``Retry-After`` (seconds).

    API paths get JSON ``{code: "login_locked", detail, retry_after}``; the admin and other pages get
    the ``login_locked.html`` page.
    """
    seconds = lockout_seconds_left(request, credentials)
    detail = _lockout_detail(seconds)
    if request.path.startswith("/api/"):
        response = JsonResponse(
            {"code": LOGIN_LOCKED_CODE, "detail": detail, "retry_after": seconds}, status=429
        )
    else:
        response = render(
            request, "login_locked.html", {"detail": detail, "retry_after": seconds}, status=429
        )
    response["Retry-After"] = str(seconds)
    return response


def login_is_locked(request: HttpRequest) -> bool:
    """True when django-axes refused the login just attempted with this request."""
    return bool(getattr(request, "axes_locked_out", False))
