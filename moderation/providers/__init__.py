"""AI providers (DESIGN.md §6). ``get_provider()`` returns the one named by ``settings.AI_PROVIDER``;
instances are cached per process so models load once per worker, not once per message."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import Provider, ProviderError, ProviderResult, ReviewInput


def _local() -> Provider:
    from .local import LocalProvider

    return LocalProvider()


def _hive() -> Provider:
    from .hive import HiveProvider

    return HiveProvider()


def _stub() -> Provider:
    from .stub import StubProvider

    return StubProvider()


PROVIDERS: dict[str, Callable[[], Provider]] = {"local": _local, "hive": _hive, "stub": _stub}

_instances: dict[str, Provider] = {}
_lock = threading.Lock()


def _names(value: str | None) -> list[str]:
    names: list[str] = []
    for part in (value or "").split(","):
        name = part.strip().lower()
        if name and name not in names:
            names.append(name)
    if not names:
        raise ImproperlyConfigured("AI_PROVIDER is empty; set it to local, hive or stub (or several, a,b).")
    unknown = [name for name in names if name not in PROVIDERS]
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown AI provider {', '.join(map(repr, unknown))}; "
            f"AI_PROVIDER must name one or more of: {', '.join(PROVIDERS)}."
        )
    if "stub" in names and not settings.DEBUG and not settings.TESTING:
        raise ImproperlyConfigured("The stub AI provider is for tests only; it cannot run with DEBUG off.")
    return names


def get_provider(name: str | None = None) -> Provider:
    """The provider called ``name`` (default ``settings.AI_PROVIDER``); "a,b" combines them and the
    highest score wins."""
    names = _names(settings.AI_PROVIDER if name is None else name)
    key = ",".join(names)
    provider = _instances.get(key)
    if provider is not None:
        return provider
    with _lock:
        for single in names:
            if single not in _instances:
                _instances[single] = PROVIDERS[single]()
        if key not in _instances:
            from .combined import CombinedProvider

            _instances[key] = CombinedProvider([_instances[single] for single in names])
        return _instances[key]


_preload: threading.Thread | None = None


def preload_local_models() -> threading.Thread | None:
    """Start loading the ``local`` provider's models in a background thread of this process, when
    ``settings.AI_PRELOAD_MODELS`` is on and ``settings.AI_PROVIDER`` includes ``local``. Returns the
    thread (join it to wait), or None when there is nothing to load. A failed load is logged; the
    first review then tries again and fails the review itself (a broken install never passes posts)."""
    global _preload
    if not settings.AI_PRELOAD_MODELS or "local" not in _names(settings.AI_PROVIDER):
        return None

    def load() -> None:
        import logging

        try:
            get_provider("local").warm()
        except Exception:
            logging.getLogger("postflow.moderation").exception("preloading the local AI models failed")

    _preload = threading.Thread(target=load, name="postflow-ai-preload", daemon=True)
    _preload.start()
    return _preload


__all__ = [
    "Provider",
    "ProviderError",
    "ProviderResult",
    "ReviewInput",
    "get_provider",
    "preload_local_models",
]
