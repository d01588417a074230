"""The event log and ``GET /api/v1/events`` (DESIGN.md §10): ids, resume with Last-Event-ID,
heartbeats, the three ways to authenticate, and nobody else's events. The in-process log is tested
here; the Redis Stream backend against a private redis-server when one is installed."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time

import pytest

from content import events
from content.api import live
from tests.conftest import client_for
from tests.factories import PostFactory


@pytest.fixture(autouse=True)
def _fresh_log(settings):
    settings.EVENTS_REDIS_URL = None
    settings.EVENTS_HEARTBEAT_SECONDS = 0.2
    events.reset_log()
    yield
    events.reset_log()


def _frames(chunks) -> list[dict]:
    """Parse SSE bytes into [{id, event, data}] (comments dropped)."""
    out = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            out.append({"id": fields["id"], "event": fields["event"], "data": json.loads(fields["data"])})
    return out


def _close(response) -> None:
    """End a stream early, as a client hanging up. Closing the test client's wrapper of the stream
    (not the response) keeps its request_finished from closing the test database's connection."""
    response._iterator.close()


def _take(response, n_chunks: int) -> list[bytes]:
    it = iter(response.streaming_content)
    return [next(it) for _ in range(n_chunks)]


# --- the in-process log ------------------------------------------------------------------------------


def test_memory_log_ids_order_bounds_and_waiting():
    log = events.MemoryLog(maxlen=3, retention=3600)
    ids = [log.append(1, "post.updated", {"n": i}) for i in range(5)]
    assert all(events.valid_id(i) for i in ids)
    assert ids == sorted(ids, key=events._key) and len(set(ids)) == 5
    assert [e.data["n"] for e in log.read(1, "0-0", 0)] == [2, 3, 4], "bounded to maxlen"
    assert [e.data["n"] for e in log.read(1, ids[3], 0)] == [4]
    assert log.read(2, "0-0", 0) == [] and log.latest_id(1) == ids[-1]
    # A reader waiting for the next event wakes when it is appended.
    threading.Timer(0.1, lambda: log.append(1, "post.updated", {"n": 5})).start()
    started = time.monotonic()
    got = log.read(1, ids[-1], 5)
    assert [e.data["n"] for e in got] == [5] and time.monotonic() - started < 2


def test_memory_log_async_reader_wakes_without_a_thread():
    log = events.MemoryLog(maxlen=10, retention=3600)

    async def main():
        waiter = asyncio.create_task(log.aread(7, "0-0", 5))
        await asyncio.sleep(0.05)
        threading.Thread(target=log.append, args=(7, "notification", {"id": 1})).start()
        started = time.monotonic()
        got = await waiter
        return got, time.monotonic() - started

    got, waited = asyncio.run(main())
    assert [e.type for e in got] == ["notification"] and waited < 1


def test_async_stream_resumes_and_heartbeats(settings):
    settings.EVENTS_HEARTBEAT_SECONDS = 0.05
    log = events.MemoryLog(maxlen=100, retention=3600)
    first = log.append(3, "post.updated", {"post_id": "a"})
    log.append(3, "post.updated", {"post_id": "b"})

    async def main():
        stream = live._astream(log, 3, first)
        chunks = [await stream.__anext__() for _ in range(3)]
        await stream.aclose()
        return chunks

    chunks = asyncio.run(main())
    assert chunks[0] == live.PREAMBLE
    assert [f["data"]["post_id"] for f in _frames(chunks)] == ["b"], "only what came after Last-Event-ID"
    assert chunks[2] == live.HEARTBEAT


# --- the endpoint (WSGI path through the test client) --------------------------------------------------


@pytest.mark.django_db
def test_stream_sends_own_events_and_resumes_with_last_event_id(user, other_user, staff):
    post = PostFactory(author=user)
    ids = [events.append_now(user.pk, "post.updated", events.post_data(post)) for _ in range(3)]
    events.append_now(other_user.pk, "notification", {"id": 99, "secret": "theirs"})

    r = client_for(user).get("/api/v1/events", HTTP_LAST_EVENT_ID=ids[0])
    assert r.status_code == 200 and r["Content-Type"] == "text/event-stream"
    assert r["Cache-Control"].startswith("no-cache")
    frames = _frames(_take(r, 2))
    assert [f["id"] for f in frames] == ids[1:]
    assert frames[0] == {"id": ids[1], "event": "post.updated", "data": events.post_data(post)}
    _close(r)

    # Without Last-Event-ID: only what happens from now on; idle means heartbeats.
    r = client_for(user).get("/api/v1/events")
    it = iter(r.streaming_content)
    assert next(it) == live.PREAMBLE
    assert next(it) == live.HEARTBEAT
    new = events.append_now(user.pk, "notification", {"id": 1})
    assert [f["id"] for f in _frames([next(it)])] == [new]
    _close(r)

    # Nobody else's events, staff included.
    for who in (other_user, staff):
        r = client_for(who).get("/api/v1/events", HTTP_LAST_EVENT_ID="0-0")
        frames = _frames(_take(r, 2))
        assert all(f["data"].get("secret") != "theirs" or who == other_user for f in frames)
        assert str(post.pk) not in json.dumps(frames)
        _close(r)


@pytest.mark.django_db
def test_stream_auth_ticket_single_use_session_and_refusals(user):
    c = client_for(user)
    r = c.post("/api/v1/events/ticket")
    assert r.status_code == 201 and r.json()["expires_in"] == 60
    ticket = r.json()["ticket"]
    anon = client_for()
    r = anon.get("/api/v1/events", {"ticket": ticket})
    assert r.status_code == 200 and next(iter(r.streaming_content)) == live.PREAMBLE
    _close(r)
    r = anon.get("/api/v1/events", {"ticket": ticket})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_ticket"), "single use"

    from django.test import Client

    session = Client()
    session.force_login(user)
    r = session.get("/api/v1/events")
    assert r.status_code == 200
    _close(r)

    assert (anon.get("/api/v1/events").status_code, anon.post("/api/v1/events/ticket").status_code) == (
        401,
        401,
    )
    bad = client_for()
    bad.credentials(HTTP_AUTHORIZATION="Token nope")
    r = bad.get("/api/v1/events")
    assert (r.status_code, r.json()["code"]) == (401, "authentication_failed")
    r = c.get("/api/v1/events", HTTP_LAST_EVENT_ID="not-an-id")
    assert (r.status_code, r.json()["code"]) == (400, "invalid_last_event_id")
    r = c.post("/api/v1/events")
    assert (r.status_code, r.json()["code"]) == (405, "method_not_allowed")


@pytest.mark.django_db
def test_expired_ticket_is_refused(user, settings):
    from django.core.cache import cache

    ticket = client_for(user).post("/api/v1/events/ticket").json()["ticket"]
    cache.delete(live.TICKET_PREFIX + ticket)  # what the 60 s expiry does
    r = client_for().get("/api/v1/events", {"ticket": ticket})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_ticket")


# --- the Redis Stream backend ------------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    from tests.integration.stack import Redis

    server = Redis(tmp_path)
    server.start()
    yield server.url
    server.stop()


def test_redis_log_capped_streams_resume_and_async_block(redis_url):
    log = events.RedisLog(redis_url, prefix="t:events:", maxlen=5, retention=60)
    ids = [log.append(9, "post.updated", {"n": i}) for i in range(3)]
    assert all(events.valid_id(i) for i in ids)
    assert [e.data["n"] for e in log.read(9, ids[0], 0.01)] == [1, 2]
    assert log.latest_id(9) == ids[-1] and log.latest_id(10) == "0-0"
    ttl = log._sync.pttl("t:events:9")
    assert 0 < ttl <= 60_000, "kept 24 h (here 60 s) after the last event"
    for i in range(200):
        log.append(9, "post.updated", {"n": i})
    assert log._sync.xlen("t:events:9") < 200, "capped (MAXLEN ~)"

    async def main():
        after = await log.alatest_id(9)
        waiter = asyncio.create_task(log.aread(9, after, 5))
        await asyncio.sleep(0.1)
        new = await asyncio.to_thread(log.append, 9, "notification", {"id": 7})
        got = await waiter
        return new, got

    new, got = asyncio.run(main())
    assert [(e.id, e.type, e.data) for e in got] == [(new, "notification", {"id": 7})]


def test_redis_log_is_shared_between_processes(redis_url):
    """Another process (a worker) appends; this one reads: any web process serves any user."""
    log = events.RedisLog(redis_url, prefix="t:events:", maxlen=100, retention=60)
    code = (
        "import django; django.setup(); from content.events import RedisLog;"
        f"print(RedisLog({redis_url!r}, prefix='t:events:', maxlen=100, retention=60)"
        ".append(4, 'post.updated', {'from': 'worker'}))"
    )
    import os
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert [e.id for e in log.read(4, "0-0", 1)] == [out.stdout.strip()]


@pytest.mark.django_db
def test_unreachable_log_at_connect_is_503(user, settings):
    from tests.integration.stack import free_port

    settings.EVENTS_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    events.reset_log()
    r = client_for(user).get("/api/v1/events")
    assert (r.status_code, r.json()["code"], r["Retry-After"]) == (503, "events_unavailable", "3")
    # Writers never fail a transition for it, nor keep it waiting: the event is dropped and logged,
    # and the log is skipped for a few seconds.
    assert events.append_now(user.pk, "notification", {"id": 1}, webhooks=False) is None
    started = time.monotonic()
    assert events.append_now(user.pk, "notification", {"id": 2}, webhooks=False) is None
    assert time.monotonic() - started < 0.1
