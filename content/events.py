"""The per-user event log behind ``GET /api/v1/events`` (SSE) and the webhooks (DESIGN.md §10).

One log, two backends, the same ids:

- ``REDIS_URL`` set: a Redis Stream per user (``<EVENTS_REDIS_PREFIX><user_id>``), written with
  ``XADD … MAXLEN ~ EVENTS_STREAM_MAXLEN`` and kept ``EVENTS_RETENTION_SECONDS`` (24 h) after its last
  event, so any web process serves any user and ``Last-Event-ID`` resumes across processes.
- embedded (no Redis): an in-process, thread-safe, bounded log (the embedded worker runs in the web
  process, so the events it writes are the ones the web process streams).

Ids are Redis stream ids (``<ms>-<seq>``) in both backends. Events are appended after the
surrounding transaction commits (``publish``), so a client never sees a state that was rolled back
and every event follows the row it describes. ``read``/``aread`` return the events after an id,
waiting up to a timeout for the first one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from content import webhooks as hooks
from content.models import EVENT_TYPES

logger = logging.getLogger("postflow.events")

_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


@dataclass(frozen=True)
class Event:
    """One logged event: ``id`` (``<ms>-<seq>``), ``type`` (one of ``EVENT_TYPES``), ``data`` (a
    JSON object)."""

    id: str
    type: str
    data: dict[str, Any]

    def sse(self) -> bytes:
        """The event as one SSE frame (``id``, ``event``, one ``data`` line of JSON)."""
        payload = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.type}\ndata: {payload}\n\n".encode()


def valid_id(value: str) -> bool:
    """True for an id of the form ``<ms>-<seq>`` (a ``Last-Event-ID`` a client may send back)."""
    return bool(_ID.match(value or ""))


def _key(value: str) -> tuple[int, int]:
    ms, seq = value.split("-", 1)
    return int(ms), int(seq)


# --- embedded backend ------------------------------------------------------------------------------


class MemoryLog:
    """The in-process log: per user a deque bounded by ``maxlen`` and by ``retention`` seconds.
    Thread-safe; sync readers wait on a condition, async readers on a future of their own loop."""

    def __init__(self, *, maxlen: int, retention: float):
        self.maxlen, self.retention = maxlen, retention
        self._streams: dict[int, deque[tuple[tuple[int, int], float, Event]]] = {}
        self._cond = threading.Condition()
        self._last = (0, 0)
        self._waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}

    def append(self, user_id: int, type: str, data: dict[str, Any]) -> str:
        with self._cond:
            ms = int(time.time() * 1000)
            key = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
            self._last = key
            event = Event(f"{key[0]}-{key[1]}", type, data)
            stream = self._streams.setdefault(user_id, deque(maxlen=self.maxlen))
            now = time.monotonic()
            stream.append((key, now, event))
            while stream and now - stream[0][1] > self.retention:
                stream.popleft()
            self._cond.notify_all()
            waiters = self._waiters.pop(user_id, set())
        for loop, fut in waiters:
            loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))
        return event.id

    def _after(self, user_id: int, after: str) -> list[Event]:
        stream = self._streams.get(user_id)
        if not stream:
            return []
        k = _key(after)
        return [e for key, _, e in stream if key > k]

    def latest_id(self, user_id: int) -> str:
        with self._cond:
            stream = self._streams.get(user_id)
            return stream[-1][2].id if stream else "0-0"

    def read(self, user_id: int, after: str, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                events = self._after(user_id, after)
                remaining = deadline - time.monotonic()
                if events or remaining <= 0:
                    return events
                self._cond.wait(remaining)

    async def aread(self, user_id: int, after: str, timeout: float) -> list[Event]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            events = self._after(user_id, after)
            if events:
                return events
            self._waiters.setdefault(user_id, set()).add((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                self._waiters.get(user_id, set()).discard((loop, fut))
        with self._cond:
            return self._after(user_id, after)


# --- Redis backend ---------------------------------------------------------------------------------


def _decode(entries) -> list[Event]:
    out = []
    for raw_id, fields in entries:
        fields = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        try:
            data = json.loads(fields.get("data") or "{}")
        except ValueError:
            data = {}
        out.append(
            Event(raw_id.decode() if isinstance(raw_id, bytes) else raw_id, fields.get("type", ""), data)
        )
    return out


class RedisLog:
    """A Redis Stream per user. Writes use a sync client (workers, web requests); ``aread`` uses
    ``redis.asyncio`` with ``XREAD BLOCK`` so a held SSE connection costs a socket, not a thread."""

    def __init__(self, url: str, *, prefix: str, maxlen: int, retention: float):
        import redis

        self.url, self.prefix, self.maxlen, self.retention = url, prefix, maxlen, retention
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Writers run in transitions' commit hooks: fail fast (one retry, 1 s to connect).
        self._sync = redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 1)
        )
        self._async: dict[int, Any] = {}  # one asyncio client per event loop

    def stream(self, user_id: int) -> str:
        return f"{self.prefix}{user_id}"

    def append(self, user_id: int, type: str, data: dict[str, Any]) -> str:
        key = self.stream(user_id)
        payload = json.dumps(data, separators=(",", ":"), default=str)
        with self._sync.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"type": type, "data": payload}, maxlen=self.maxlen, approximate=True)
            pipe.pexpire(key, int(self.retention * 1000))
            event_id, _ = pipe.execute()
        return event_id.decode() if isinstance(event_id, bytes) else event_id

    def latest_id(self, user_id: int) -> str:
        last = self._sync.xrevrange(self.stream(user_id), count=1)
        return _decode(last)[0].id if last else "0-0"

    def read(self, user_id: int, after: str, timeout: float) -> list[Event]:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=timeout + 5)
        try:
            res = client.xread({self.stream(user_id): after}, count=500, block=max(1, int(timeout * 1000)))
        finally:
            client.close()
        return _decode(res[0][1]) if res else []

    def _client(self):
        import redis.asyncio as aredis

        loop = asyncio.get_running_loop()
        client = self._async.get(id(loop))
        if client is None:
            # One connection per held stream (XREAD BLOCK): the pool must not cap them below the web
            # process's connection limit (redis-py's default would refuse the stream past it).
            client = aredis.Redis.from_url(
                self.url, socket_connect_timeout=5, max_connections=settings.EVENTS_REDIS_MAX_CONNECTIONS
            )
            self._async = {id(loop): client}  # one loop per ASGI worker process
        return client

    async def alatest_id(self, user_id: int) -> str:
        last = await self._client().xrevrange(self.stream(user_id), count=1)
        return _decode(last)[0].id if last else "0-0"

    async def aread(self, user_id: int, after: str, timeout: float) -> list[Event]:
        res = await self._client().xread(
            {self.stream(user_id): after}, count=500, block=max(1, int(timeout * 1000))
        )
        return _decode(res[0][1]) if res else []


_log: MemoryLog | RedisLog | None = None
_log_lock = threading.Lock()


def get_log() -> MemoryLog | RedisLog:
    """The process's event log, built from settings on first use (``reset_log`` rebuilds it)."""
    global _log
    with _log_lock:
        if _log is None:
            if settings.EVENTS_REDIS_URL:
                _log = RedisLog(
                    settings.EVENTS_REDIS_URL,
                    prefix=settings.EVENTS_REDIS_PREFIX,
                    maxlen=settings.EVENTS_STREAM_MAXLEN,
                    retention=settings.EVENTS_RETENTION_SECONDS,
                )
            else:
                _log = MemoryLog(
                    maxlen=settings.EVENTS_STREAM_MAXLEN, retention=settings.EVENTS_RETENTION_SECONDS
                )
        return _log


def reset_log() -> None:
    """Forget the process's log (tests, after changing the settings)."""
    global _log
    with _log_lock:
        _log = None
        _log_down_until[0] = 0.0


# --- writing ---------------------------------------------------------------------------------------

LOG_DOWN_SKIP_SECONDS = 5
_log_down_until = [0.0]


def append_now(user_id: int, type: str, data: dict[str, Any], *, webhooks: bool = True) -> str | None:
    """Append one event to the user's log now and fan it out to the user's webhooks (unless
    ``webhooks`` is False: progress ticks). Returns the id, or None when the log is unreachable (the
    event is lost for live clients; the rows it describes are committed and readable)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    event_id = None
    if time.monotonic() >= _log_down_until[0]:
        try:
            event_id = get_log().append(user_id, type, data)
        except Exception as exc:
            # Don't make every transition wait for an unreachable log: skip it for a few seconds.
            _log_down_until[0] = time.monotonic() + LOG_DOWN_SKIP_SECONDS
            logger.warning(
                "could not log %s event for user %s (skipping for %ss): %s",
                type,
                user_id,
                LOG_DOWN_SKIP_SECONDS,
                exc,
            )
    if webhooks:
        hooks.enqueue(user_id, type, data)
    return event_id


def publish(user_id: int, type: str, data: dict[str, Any], *, webhooks: bool = True) -> None:
    """Append an event to the user's log once the current transaction commits (at once outside
    one). This is the only way events are written."""
    transaction.on_commit(lambda: append_now(user_id, type, data, webhooks=webhooks), robust=True)


def post_data(post) -> dict[str, Any]:
    """``post.updated`` payload."""
    return {"post_id": str(post.pk), "status": post.status, "moderation_state": post.moderation_state}


def media_data(media, progress: float | None = None) -> dict[str, Any]:
    """``media.updated`` payload; ``progress`` in percent (None when unknown)."""
    if progress is None and media.processing_status == "ready":
        progress = 100.0
    return {
        "media_id": str(media.pk),
        "post_id": str(media.post_id) if media.post_id else None,
        "processing_status": media.processing_status,
        "progress": progress,
        "processing_error": media.processing_error,
    }
