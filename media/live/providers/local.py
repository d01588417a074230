"""The ``local`` provider: streams go to the RTMP ingest on this machine (``media.live.ingest``).

The database is the contract between the web and the ingest process: provisioning only makes a key
(the ingest checks every publish against ``LiveStream.key_hash``), ``end`` marks the row and the
ingest drops the encoder within a poll interval, and the live HLS is in storage under
``LiveStream.hls_folder``, served through the signed ``live-tree`` folder grant."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from media import storage
from media.live import keys
from media.live.models import LiveIngest

from .base import LiveProvider, Provisioned

INGEST_NAME = "local"
PLAYLIST = "index.m3u8"


def default_ingest_url() -> str:
    """``LIVESTREAM_INGEST_URL``, or ``rtmp://<LIVESTREAM_RTMP_HOST>:<LIVESTREAM_RTMP_PORT>/live``."""
    if settings.LIVESTREAM_INGEST_URL:
        return settings.LIVESTREAM_INGEST_URL.rstrip("/")
    host = settings.LIVESTREAM_RTMP_HOST
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind: tell encoders loopback
        host = "127.0.0.1"
    return f"rtmp://{host}:{settings.LIVESTREAM_RTMP_PORT}/live"


class LocalProvider(LiveProvider):
    name = "local"

    def unavailable_reason(self) -> str | None:
        row = LiveIngest.objects.filter(name=INGEST_NAME).first()
        stale = timezone.now() - timedelta(seconds=settings.LIVESTREAM_INGEST_STALE_SECONDS)
        if row is not None and row.running and row.heartbeat_at and row.heartbeat_at >= stale:
            return None
        if row is not None and row.error:
            return f"The local RTMP ingest is not running: {row.error}"
        return (
            "The local RTMP ingest is not running (start it with `manage.py run_live_ingest`; "
            "runserver starts it on the embedded default)."
        )

    def provision(self, *, stream_id: str) -> Provisioned:
        return Provisioned(stream_key=keys.new_key())

    def status(self, stream) -> str:
        return stream.status  # the ingest writes it

    def end(self, stream) -> None:
        return None  # the ingest sees the row ended and drops the encoder

    def delete(self, stream) -> None:
        storage.delete_prefix(storage.live_prefix(stream.owner_id, stream.pk))

    def rotate_key(self, stream) -> str:
        return keys.new_key()

    def ingest_url(self, stream) -> str:
        return default_ingest_url()

    def playback_url(self, stream, *, public: bool, request=None) -> str | None:
        if not stream.hls_folder or stream.last_segment_at is None:
            return None  # not live yet, or no segment stored yet: nothing to play
        return storage.signed_prefix_url(
            stream.hls_folder,
            media_id=stream.pk,
            entry=PLAYLIST,
            public=public,
            request=request,
            route="live-tree",
        )
