"""DRF throttles keyed on ``config.security.client_key``: the same client address as the login
lockout (trusted-proxy count, junk headers ignored, IPv6 by /64). Use these instead of DRF's own."""

from __future__ import annotations

from rest_framework import throttling

from config.security import client_key


class ClientKeyMixin:
    """Anonymous callers are counted by ``client_key`` (DRF's ``get_ident`` would take the raw
    ``X-Forwarded-For`` entry, whatever it is, and each IPv6 address on its own)."""

    def get_ident(self, request) -> str:
        return client_key(request) or "unknown"


class ScopedRateThrottle(ClientKeyMixin, throttling.ScopedRateThrottle):
    """DRF's ``ScopedRateThrottle`` (the view's ``throttle_scope``), by user or ``client_key``."""


class UserRateThrottle(ClientKeyMixin, throttling.UserRateThrottle):
    """DRF's ``UserRateThrottle`` (the subclass' ``scope``), by user or ``client_key``."""


class AnonRateThrottle(ClientKeyMixin, throttling.AnonRateThrottle):
    """DRF's ``AnonRateThrottle``, by ``client_key``."""
