"""Health: ``/healthz`` (DESIGN.md §4) and its alias ``/readyz`` check the database, the broker and
storage and answer 503 naming the one that failed (only its name: the exception goes to the log, not
to an anonymous caller); ``/livez`` only says the process answers (for
an orchestrator's liveness probe, which must not restart web processes when the database is down)."""

from __future__ import annotations

import logging
import time

import dramatiq
from django.db import connection
from django.http import JsonResponse

from media import storage

logger = logging.getLogger("postflow.health")


def livez(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    broker = dramatiq.get_broker()
    client = getattr(broker, "client", None)
    if client is not None:
        client.ping()


def _check_storage() -> None:
    storage.exists("healthz/probe")


def healthz(request):
    checks, ok = {}, True
    for name, check in (
        ("database", _check_database),
        ("broker", _check_broker),
        ("storage", _check_storage),
    ):
        started = time.perf_counter()
        try:
            check()
            checks[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
        except Exception:
            ok = False
            checks[name] = {"ok": False}
            logger.warning("health check %s failed", name, exc_info=True, extra={"check": name})
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


readyz = healthz
