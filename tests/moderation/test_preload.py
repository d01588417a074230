"""Issue 11: the local AI models load when a worker process boots, not inside the first review."""

import os

import dramatiq
import pytest

from config import broker as embedded
from moderation import providers
from moderation.providers import local


@pytest.fixture
def unloaded(settings):
    """The process's models unloaded for the test (restored after, so later tests need not reload)."""
    settings.AI_PRELOAD_MODELS = True
    settings.AI_PROVIDER = "local"
    before = local._models
    local._models = None
    providers._preload = None
    yield
    if providers._preload is not None:
        providers._preload.join(120)
    local._models = before or local._models


def _wait_for_preload() -> None:
    assert providers._preload is not None, "no preload was started at worker boot"
    providers._preload.join(120)


def test_worker_boot_loads_the_local_models(broker, unloaded):
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        _wait_for_preload()
        assert local._models is not None and local._models.pid == os.getpid()
        assert local._models.load_ms > 0
    finally:
        worker.stop()


def test_embedded_worker_loads_the_local_models(broker, unloaded, settings, monkeypatch):
    settings.EMBEDDED_WORKER = True
    monkeypatch.setattr(embedded, "_worker", None)
    worker = embedded.start_embedded_worker(threads=1)
    try:
        assert worker is not None
        _wait_for_preload()
        assert local._models is not None and local._models.pid == os.getpid()
    finally:
        worker.stop()


@pytest.mark.parametrize(
    "queues, provider, preload",
    [({"media.video"}, "local", True), (None, "stub", True), (None, "local", False)],
    ids=["video-only-pool", "provider-without-local", "preload-off"],
)
def test_no_preload_where_no_review_runs(broker, unloaded, settings, queues, provider, preload):
    settings.AI_PROVIDER = provider
    settings.AI_PRELOAD_MODELS = preload
    worker = dramatiq.Worker(broker, queues=queues, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        assert providers._preload is None
        assert local._models is None
    finally:
        worker.stop()
