"""Dramatiq middleware for moderation: load the local AI models when a worker process starts.

Without it the first AI review after a start waits for the model load (~5.6 s of ONNX and
scikit-learn set-up) inside the first request's message (issue 11). Dramatiq emits ``worker_boot``
from ``Worker.start()``, so this covers both the embedded worker (``config.broker``) and every
``rundramatiq`` worker process. Registered in ``config/settings.py``.
"""

from __future__ import annotations

import logging

import dramatiq

logger = logging.getLogger("postflow.moderation")

MODERATION_QUEUE = "moderation"


class PreloadModels(dramatiq.Middleware):
    """After a worker boots, load the ``local`` provider's models in the background (the worker takes
    messages meanwhile; a review that arrives first waits on the same load instead of starting a
    second one). Skipped when ``AI_PRELOAD_MODELS`` is off, when ``AI_PROVIDER`` does not include
    ``local``, and for workers that do not consume the ``moderation`` queue (a video-only pool)."""

    def after_worker_boot(self, broker, worker) -> None:
        from moderation.providers import preload_local_models

        queues = getattr(worker, "consumer_whitelist", None)
        if queues and MODERATION_QUEUE not in queues:
            return
        try:
            preload_local_models()
        except Exception:  # never keep a worker from starting
            logger.exception("could not start loading the local AI models")
