"""The ``mux`` provider: Mux's live-stream API (https://api.mux.com/video/v1/live-streams), over HTTP
Basic auth with ``MUX_TOKEN_ID``/``MUX_TOKEN_SECRET``. Paths and fields follow Mux's API reference:

* create ``POST /video/v1/live-streams`` {playback_policies, new_asset_settings} → data {id,
  stream_key, status, playback_ids [{id, policy}]};
* status ``GET /video/v1/live-streams/{id}`` → data.status ``idle`` | ``active`` | ``disabled``;
* end ``PUT /video/v1/live-streams/{id}/complete`` (ends the broadcast now; the recording asset is
  finalised), then ``PUT …/disable`` (no further broadcasts);
* delete ``DELETE /video/v1/live-streams/{id}``; new key ``POST …/reset-stream-key``.

Status changes arrive as webhooks (``media.live.webhooks``), signed with ``Mux-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" under MUX_WEBHOOK_SECRET>``.
Playback: ``https://stream.mux.com/<playback id>.m3u8`` (a ``public`` playback id: the URL is only
ever put in the JSON of a viewer allowed to see the post)."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import requests
from django.conf import settings

from .base import LiveProvider, LiveProviderError, Provisioned

STATUS = {"idle": "idle", "active": "live", "disabled": "ended"}


def verify_webhook(body: bytes, header: str, *, now: float | None = None) -> bool:
    """True when ``header`` (``Mux-Signature``) signs ``body`` with ``MUX_WEBHOOK_SECRET`` and its
    timestamp is within ``MUX_WEBHOOK_TOLERANCE_SECONDS`` of now (replays are refused)."""
    secret = settings.MUX_WEBHOOK_SECRET
    if not secret or not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        stamp = int(parts.get("t", [""])[0])
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - stamp) > settings.MUX_WEBHOOK_TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


def sign_webhook(body: bytes, *, secret: str, stamp: int | None = None) -> str:
    """A ``Mux-Signature`` value for ``body`` (what Mux sends; used by the tests' fake Mux)."""
    stamp = int(time.time()) if stamp is None else stamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


class MuxProvider(LiveProvider):
    name = "mux"

    def _call(self, method: str, path: str, json: dict | None = None) -> dict[str, Any]:
        url = settings.MUX_API_URL.rstrip("/") + path
        try:
            response = requests.request(
                method,
                url,
                json=json,
                auth=(settings.MUX_TOKEN_ID, settings.MUX_TOKEN_SECRET),
                timeout=settings.MUX_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise LiveProviderError(f"Mux could not be reached ({type(exc).__name__}).") from exc
        if response.status_code == 404 and method == "DELETE":
            return {}
        if response.status_code >= 400:
            try:
                message = response.json().get("error", {}).get("messages", [])
            except ValueError:
                message = []
            raise LiveProviderError(
                f"Mux answered {response.status_code}{': ' + '; '.join(message) if message else ''}",
                retryable=response.status_code >= 500 or response.status_code == 429,
            )
        if not response.content:
            return {}
        try:
            return response.json().get("data") or {}
        except ValueError as exc:
            raise LiveProviderError("Mux answered something that is not JSON.") from exc

    def unavailable_reason(self) -> str | None:
        if not settings.MUX_TOKEN_ID or not settings.MUX_TOKEN_SECRET:
            return "Mux is not configured (set MUX_TOKEN_ID and MUX_TOKEN_SECRET)."
        return None

    def provision(self, *, stream_id: str) -> Provisioned:
        data = self._call(
            "POST",
            "/video/v1/live-streams",
            {
                "playback_policies": ["public"],
                "new_asset_settings": {"playback_policies": ["public"]},
                "passthrough": stream_id,
                "latency_mode": "low",
                "reconnect_window": 30,
            },
        )
        if not data.get("id") or not data.get("stream_key"):
            raise LiveProviderError("Mux's answer has no live stream id or stream key.")
        playback = next((p["id"] for p in data.get("playback_ids") or [] if p.get("id")), "")
        return Provisioned(
            stream_key=data["stream_key"],
            provider_stream_id=data["id"],
            playback_id=playback,
            data={"status": data.get("status", "")},
        )

    def status(self, stream) -> str:
        data = self._call("GET", f"/video/v1/live-streams/{stream.provider_stream_id}")
        return STATUS.get(data.get("status", ""), "failed")

    def end(self, stream) -> None:
        self._call("PUT", f"/video/v1/live-streams/{stream.provider_stream_id}/complete")
        self._call("PUT", f"/video/v1/live-streams/{stream.provider_stream_id}/disable")

    def delete(self, stream) -> None:
        self._call("DELETE", f"/video/v1/live-streams/{stream.provider_stream_id}")

    def rotate_key(self, stream) -> str:
        data = self._call("POST", f"/video/v1/live-streams/{stream.provider_stream_id}/reset-stream-key")
        if not data.get("stream_key"):
            raise LiveProviderError("Mux's answer has no stream key.")
        return data["stream_key"]

    def ingest_url(self, stream) -> str:
        return settings.MUX_INGEST_URL

    def playback_url(self, stream, *, public: bool, request=None) -> str | None:
        if not stream.provider_playback_id or stream.status not in ("live", "ended"):
            return None
        return f"{settings.MUX_STREAM_URL.rstrip('/')}/{stream.provider_playback_id}.m3u8"
