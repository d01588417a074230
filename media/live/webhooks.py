"""Mux's webhook events applied to streams (the signature is checked by the view first)."""

from __future__ import annotations

import json

from media.live import services
from media.live.models import LiveStatus, LiveStream


def mux_event(body: bytes) -> str:
    """Apply one Mux event: ``video.live_stream.active`` → live; ``video.live_stream.idle`` after
    being live, or ``video.live_stream.disabled`` → ended; ``video.asset.live_stream_completed``
    records the recording's asset id. Unknown events and unknown streams are ignored. Returns what
    was done ("ignored", "live", "ended", "asset"). ValueError for a body that is not an event."""
    try:
        event = json.loads(body)
        kind, data = event["type"], event.get("data") or {}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("Not a Mux event.") from exc
    stream_id = data.get("live_stream_id") if kind.startswith("video.asset.") else data.get("id")
    stream = LiveStream.objects.filter(provider="mux", provider_stream_id=stream_id or "").first()
    if stream is None:
        return "ignored"
    if kind == "video.live_stream.active":
        return "live" if services.livestream_went_live(stream_id=stream.pk, hls_folder="") else "ignored"
    if kind in ("video.live_stream.idle", "video.live_stream.disabled") and stream.status == LiveStatus.LIVE:
        services.livestream_finished(stream_id=stream.pk, reason="the encoder stopped", recording=None)
        return "ended"
    if kind == "video.asset.live_stream_completed":
        LiveStream.objects.filter(pk=stream.pk).update(
            provider_data={**stream.provider_data, "asset_id": data.get("id", "")}
        )
        return "asset"
    return "ignored"
