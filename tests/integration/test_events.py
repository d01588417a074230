"""Live events end to end (DESIGN.md §10, issue 14): the production web (gunicorn's ASGI worker) and
Redis Streams, with real workers. A creator watching ``/api/v1/events`` sees a video's real progress,
``ready``, the prescreen's verdict and the notification; when the web process serving the stream is
killed, the client resumes on another with ``Last-Event-ID`` and misses nothing."""

from __future__ import annotations

import signal
import sys
import threading

import pytest
import requests

from tests.integration.sse import SSEClient
from tests.integration.stack import Process, free_port, wait_for
from tests.integration.test_system import create_post, make_video

pytestmark = pytest.mark.integration


def start_asgi_web(stack, name: str) -> tuple[Process, str]:
    port = free_port()
    web = Process(
        name,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "config/gunicorn_conf.py",
            "config.asgi:application",
            "-k",
            "asgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "1",
            "--graceful-timeout",
            "2",
        ],
        {**stack.env, "EVENTS_HEARTBEAT_SECONDS": "1"},
        stack.workdir,
    ).start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(base + "/livez", timeout=5).status_code == 200, timeout=60, what=name)
    return web, base


@pytest.fixture
def asgi_web(stack):
    web, base = start_asgi_web(stack, "web-asgi")
    yield base
    web.stop()


def _token(s) -> str:
    return s.headers["Authorization"].split()[1]


def test_client_sees_progress_ready_verdict_and_notification(stack, asgi_web, tmp_path):
    stack.set_platform(moderation_mode="ai_prescreen")
    try:
        s = stack.session()
        client = SSEClient(asgi_web, _token(s)).start()
        post_id = create_post(s, "video")
        data = make_video(tmp_path / "clip.mp4", seconds=12, size="640x360")
        r = s.post(
            f"{s.base}/api/v1/content/posts/{post_id}/media", files={"file": ("c.mp4", data, "video/mp4")}
        )
        assert r.status_code == 201, r.text
        media_id = r.json()["id"]
        assert s.post(f"{s.base}/api/v1/content/posts/{post_id}/publish").status_code == 202

        def notified(events):
            return [e for e in events if e.event == "notification" and e.data["type"] == "post_published"]

        [note] = client.wait(notified, timeout=180, what="the post_published notification")
        assert note.data["post_id"] == post_id
        media = [
            e.data for e in client.events if e.event == "media.updated" and e.data["media_id"] == media_id
        ]
        progress = [m["progress"] for m in media if m["processing_status"] == "processing" and m["progress"]]
        assert progress and all(0 < p <= 100 for p in progress), media
        assert progress == sorted(progress), "ffmpeg's progress only grows"
        assert media[-1]["processing_status"] == "ready" and media[-1]["progress"] == 100.0
        posts = [
            (e.data["status"], e.data["moderation_state"]) for e in client.events if e.event == "post.updated"
        ]
        assert posts[-2:] == [("pending_review", "under_review"), ("published", "clean")], posts
        ids = [e.id for e in client.events]
        assert len(set(ids)) == len(ids)
        client.close()
    finally:
        stack.set_platform(moderation_mode="reactive_only")


def test_killed_web_process_client_resumes_without_a_gap(stack):
    web_a, base_a = start_asgi_web(stack, "web-asgi-a")
    web_b = None
    try:
        s = stack.session()
        client = SSEClient(base_a, _token(s)).start()
        post_ids: list[str] = []
        stop = threading.Event()

        def produce():
            # Text posts published in reactive mode: a post.updated and a notification each.
            while not stop.is_set() and len(post_ids) < 40:
                pid = create_post(s, "text", body="hello")
                assert s.post(f"{stack.base}/api/v1/content/posts/{pid}/publish").status_code == 200
                post_ids.append(pid)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        client.wait(lambda ev: len(ev) >= 10, timeout=60, what="the first events")
        web_a.kill(signal.SIGKILL)
        client.wait(lambda ev: client.ended or None, timeout=30, what="the stream to break")
        got_before = len(client.events)
        web_b, base_b = start_asgi_web(stack, "web-asgi-b")
        client.base = base_b
        client.start()  # reconnects with Last-Event-ID: the last id it saw
        producer.join(120)
        stop.set()
        assert len(post_ids) == 40
        published = lambda ev: {e.data["post_id"] for e in ev if e.event == "post.updated"} >= set(post_ids)  # noqa: E731
        client.wait(published, timeout=60, what="every post's event")
        client.close()
        stream = stack.redis.client().xrange(f"pf:events:{s.user_id}")
        all_ids = [i.decode() for i, _ in stream]
        got = [e.id for e in client.events]
        assert got == all_ids[: len(got)] and len(got) == len(all_ids), "no gap, no duplicate, in order"
        assert 0 < got_before < len(got), "the kill happened mid-stream"
    finally:
        web_a.stop()
        if web_b:
            web_b.stop()
