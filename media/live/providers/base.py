"""The livestream provider interface (DESIGN.md §13): ``provision``, ``status``, ``end``, ``delete``,
plus what the API needs to show (``ingest_url``, ``playback_url``) and whether it can take new
streams at all (``unavailable_reason``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class LiveProviderError(Exception):
    """The provider refused or could not be reached; ``detail`` is safe to show."""

    def __init__(self, detail: str, *, retryable: bool = True):
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


@dataclass
class Provisioned:
    """What ``provision`` hands back: the key the encoder presents and the provider's ids."""

    stream_key: str
    provider_stream_id: str = ""
    playback_id: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class LiveProvider:
    """One way of running streams. Methods take the ``LiveStream`` row (never a request) and raise
    ``LiveProviderError`` when the provider fails."""

    name = ""

    def unavailable_reason(self) -> str | None:
        """None when new streams can be provisioned now, else a sentence saying why not."""
        raise NotImplementedError

    def provision(self, *, stream_id: str) -> Provisioned:
        """Create the stream at the provider: its key, ids and provider data."""
        raise NotImplementedError

    def status(self, stream) -> str:
        """The provider's view of the stream: ``idle``, ``live``, ``ended`` or ``failed``."""
        raise NotImplementedError

    def end(self, stream) -> None:
        """Stop taking the encoder's stream (disconnect it and refuse it from now on)."""
        raise NotImplementedError

    def delete(self, stream) -> None:
        """Remove the stream and whatever the provider holds for it (idempotent)."""
        raise NotImplementedError

    def rotate_key(self, stream) -> str:
        """A new stream key (the old one stops working); returns it."""
        raise NotImplementedError

    def ingest_url(self, stream) -> str:
        """The RTMP(S) URL an encoder (OBS: Settings → Stream → Server) sends to."""
        raise NotImplementedError

    def playback_url(self, stream, *, public: bool, request=None) -> str | None:
        """The HLS playlist of the stream for a viewer allowed to see the post, or None when there is
        nothing to play (not live yet)."""
        raise NotImplementedError
