import pytest


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
