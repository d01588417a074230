"""Structured logs and Prometheus metrics.

Logs: with ``LOG_FORMAT=json`` (the default when DEBUG is off) every record is one JSON line; each
request logs one ``request`` line with its id, and each processor run one ``processor_run`` line.
Metrics: ``/metrics`` (Prometheus text format) serves request counts and latencies for the web
processes; Dramatiq's own Prometheus middleware serves the workers' queue and actor figures
(``DRAMATIQ_PROMETHEUS=true``, port 9191). See docs/operations.md.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from config.logs import request_id_var
from config.security import client_ip

logger = logging.getLogger("postflow.request")


@functools.cache
def _metrics():
    """Created on first use, in web processes only (see config.logs for why not at import)."""
    from prometheus_client import Counter, Histogram

    requests = Counter("postflow_http_requests_total", "HTTP requests", ["method", "route", "status"])
    latency = Histogram(
        "postflow_http_request_duration_seconds",
        "HTTP request latency",
        ["method", "route"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    return requests, latency


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return match.route if match and match.route else "unmatched"


class RequestObservabilityMiddleware:
    """Request id (``X-Request-ID`` in and out), one structured log line, and the metrics."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
        token = request_id_var.set(rid)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        elapsed = time.perf_counter() - started
        response["X-Request-ID"] = rid
        route = _route(request)
        requests, latency = _metrics()
        requests.labels(request.method, route, response.status_code).inc()
        latency.labels(request.method, route).observe(elapsed)
        user = getattr(request, "user", None)
        logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "event": "request",
                "request_id": rid,
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 1),
                "user_id": user.pk if user is not None and user.is_authenticated else None,
                "client_ip": client_ip(request),
            },
        )
        return response


# Headers a proxy adds when it relays a request: their presence means the caller is not this host.
FORWARDING_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Server",
    "X-Real-IP",
    "X-Client-IP",
    "X-Original-Forwarded-For",
    "True-Client-IP",
    "CF-Connecting-IP",
    "Via",
)


def is_direct_loopback(request: HttpRequest) -> bool:
    """True when the caller connected from this host itself and no proxy relayed the request.

    A reverse proxy on the same host connects from loopback too; it is recognised by any forwarding
    header (``FORWARDING_HEADERS``, e.g. nginx's ``X-Real-IP`` or RFC 7239 ``Forwarded``), and behind
    configured proxies (``TRUSTED_PROXY_COUNT`` > 0) no request counts as local at all.
    """
    if settings.TRUSTED_PROXY_COUNT > 0:
        return False
    if request.META.get("REMOTE_ADDR") not in ("127.0.0.1", "::1"):
        return False
    return not any(header in request.headers for header in FORWARDING_HEADERS)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape endpoint: to callers with ``Authorization: Bearer $METRICS_TOKEN`` when that
    is set; otherwise only to direct loopback scrapes (``is_direct_loopback``), so behind proxies
    (``TRUSTED_PROXY_COUNT`` > 0) it needs the token. Anyone else gets 404."""
    token = settings.METRICS_TOKEN
    if token:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
            return HttpResponse(status=404)
    elif not is_direct_loopback(request):
        return HttpResponse(status=404)
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    _metrics()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
