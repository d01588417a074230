"""Livestream providers by name (``settings.LIVESTREAM_PROVIDER``): ``local`` (the embedded RTMP
ingest) and ``mux``. A stream keeps the provider that provisioned it (``LiveStream.provider``)."""

from __future__ import annotations

from django.conf import settings

from .base import LiveProvider, LiveProviderError, Provisioned

__all__ = ["LiveProvider", "LiveProviderError", "Provisioned", "get_live_provider"]


def get_live_provider(name: str | None = None) -> LiveProvider:
    """The provider called ``name`` (default ``settings.LIVESTREAM_PROVIDER``)."""
    name = (name or settings.LIVESTREAM_PROVIDER).lower()
    if name == "mux":
        from .mux import MuxProvider

        return MuxProvider()
    if name == "local":
        from .local import LocalProvider

        return LocalProvider()
    raise ValueError(f"unknown livestream provider {name!r}")
