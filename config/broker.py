"""The embedded runtime's worker: with no ``REDIS_URL``, messages go to Dramatiq's in-memory broker
and a worker inside the same process consumes them (DESIGN.md §2)."""

from __future__ import annotations

import logging
import threading

import dramatiq
from django.conf import settings

logger = logging.getLogger("postflow.broker")

_worker: dramatiq.Worker | None = None
_lock = threading.Lock()


def is_embedded() -> bool:
    """True when this process must run its own worker: no Redis, and not under tests (where the
    suite drives a worker fixture itself)."""
    return settings.EMBEDDED_WORKER and dramatiq.get_broker().__class__.__name__ == "StubBroker"


def start_embedded_worker(threads: int = 2) -> dramatiq.Worker | None:
    """Start (once per process) a worker over the in-memory broker. No-op with a real broker."""
    global _worker
    if not is_embedded():
        return None
    with _lock:
        if _worker is None:
            import content.tasks  # noqa: F401 - declare every queue before the worker starts
            import media.tasks  # noqa: F401
            import moderation.tasks  # noqa: F401

            _worker = dramatiq.Worker(
                dramatiq.get_broker(),
                worker_threads=threads,
                worker_timeout=settings.DRAMATIQ_WORKER_TIMEOUT_MS,
            )
            _worker.start()
            logger.info("embedded Dramatiq worker started with %s threads", threads)
    return _worker


def drain_embedded(timeout_ms: int = 10 * 60_000) -> None:
    """For management commands in embedded mode: process what they queued before exiting."""
    if not is_embedded():
        return
    start_embedded_worker()
    broker = dramatiq.get_broker()
    for queue in list(broker.queues):
        broker.join(queue, timeout=timeout_ms, fail_fast=False)
    assert _worker is not None
    _worker.join()
