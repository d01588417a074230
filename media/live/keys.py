"""Stream keys: random, found by their sha256, kept encrypted for their owner.

An encoder presents the key in the RTMP path (``rtmp://host:1935/live/<key>``); the ingest hashes it
and looks the hash up (``LiveStream.key_hash`` is unique). The owner reads the key again from the
Post JSON, so it is also stored encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package) under a key derived from ``SECRET_KEY``: a copy of the database alone
reveals no key. Rotating ``SECRET_KEY`` makes the stored keys unreadable (they still work): rotate the
stream keys afterwards (``POST content/posts/{id}/livestream/key``)."""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

KEY_PREFIX = "pf_"


def new_key() -> str:
    """A new stream key: ``pf_`` + 32 URL-safe characters (192 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    """The hex sha256 of a key, as stored in ``LiveStream.key_hash``."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def _fernet() -> Fernet:
    raw = hashlib.sha256(f"postflow.livestream-key:{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(raw))


def encrypt(key: str) -> str:
    """The Fernet token of ``key`` (text)."""
    return _fernet().encrypt(key.encode()).decode()


def decrypt(token: str) -> str | None:
    """The key in a Fernet token, or None when it cannot be read (``SECRET_KEY`` changed)."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        return None
