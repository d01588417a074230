import dramatiq
import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from moderation.platform import get_platform_settings, invalidate_platform_settings
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    """Every test writes files to its own folder, never to var/storage."""
    settings.STORAGE_ROOT = tmp_path / "storage"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "storage", "base_url": None},
        },
    }
    yield


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Platform settings and throttles are cached: each test starts clean."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def broker():
    """Dramatiq's StubBroker (settings choose it under pytest), emptied for each test."""
    b = dramatiq.get_broker()
    b.flush_all()
    b.dead_letters_by_queue.clear()
    yield b
    b.flush_all()


@pytest.fixture
def worker(broker, transactional_db):
    """A real Dramatiq worker over the StubBroker, in this process (needs committed rows)."""
    import media.tasks  # noqa: F401
    import moderation.tasks  # noqa: F401

    w = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    w.start()
    yield w
    w.stop()


def queued(broker, queue: str) -> list:
    """Messages waiting on a queue (decoded)."""
    if queue not in broker.queues:
        return []
    return [dramatiq.Message.decode(m) if isinstance(m, bytes) else m for m in broker.queues[queue].queue]


@pytest.fixture
def platform(db):
    """Change platform settings in a test: ``platform(moderation_mode="reactive_only")``."""

    def _set(**values):
        ps = get_platform_settings(fresh=True)
        for k, v in values.items():
            setattr(ps, k, v)
        ps.save()
        invalidate_platform_settings()
        return ps

    return _set


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    """Staff who may see what is not public: ``is_staff`` with ``media.view_media``, as the Moderators
    group grants (content.services.is_staff_viewer). A bare ``is_staff`` user sees only what is public."""
    from django.contrib.auth.models import Permission

    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="media", codename="view_media"))
    return user


def client_for(user=None) -> APIClient:
    c = APIClient()
    if user is not None:
        c.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    return c


@pytest.fixture
def api():
    return client_for


@pytest.fixture
def stub_ai(settings):
    """Use the stub AI provider; set ``settings.AI_STUB_SCORE`` or text markers for verdicts."""
    from moderation import providers

    settings.AI_PROVIDER = "stub"
    if hasattr(providers, "reset_providers"):
        providers.reset_providers()
    yield settings
    if hasattr(providers, "reset_providers"):
        providers.reset_providers()
