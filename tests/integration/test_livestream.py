"""Livestreams end to end on the local ingest (DESIGN.md §13, issue 16): a real encoder (ffmpeg, ``-re``,
``testsrc2`` + ``sine``) pushes RTMP to nginx-rtmp supervised by ``media.live.ingest``; the API, the
live HLS served under the signed grant, hls.js in headless Chromium, ``end``, the recording through
the video pipeline, and the AI cutting a stream that turns red.

Everything runs in this process (the ingest's threads, Django's live server, a Dramatiq worker over
the StubBroker) except nginx and the ffmpegs, which are real processes on loopback ports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from content.models import Post
from media.live.ingest import Ingest, free_port
from media.live.models import LiveIngest, LiveStream
from media.models import Media
from moderation.models import AiReview
from tests.conftest import client_for
from tests.factories import UserFactory
from tests.moderation.test_animated_prescreen import red_ai  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
CHROMIUM = "/usr/bin/chromium"
HLS_JS = Path(__file__).resolve().parents[2] / "static" / "vendor" / "hls.min.js"
HAVE_INGEST = bool(shutil.which("nginx")) and Path(NGINX_MODULE).exists() and bool(shutil.which("ffmpeg"))


def _require_ingest() -> None:
    if HAVE_INGEST:
        return
    if os.environ.get("CI"):
        pytest.fail("nginx with libnginx-mod-rtmp and ffmpeg are needed (make deps-live installs them)")
    pytest.skip("needs nginx with libnginx-mod-rtmp and ffmpeg")


@pytest.fixture
def ingest(tmp_path, settings):
    _require_ingest()
    settings.LIVESTREAM_SEGMENT_SECONDS = 2.0
    settings.LIVESTREAM_RTMP_PORT = free_port()
    it = Ingest(rtmp_host="127.0.0.1", rtmp_port=settings.LIVESTREAM_RTMP_PORT, workdir=tmp_path / "live")
    assert it.start(), LiveIngest.objects.get(name="local").error
    yield it
    it.stop()


def push(url: str, *, seconds: float, source: list[str] | None = None) -> subprocess.Popen:
    """A real encoder: ``-re`` (real time), H.264 with a keyframe every 2 s, AAC, FLV over RTMP. Its
    ``-progress`` (stdout) says how much media it has sent (``out_time_us``)."""
    source = source or [
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
    ]  # fmt: skip
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", *source, "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "50", "-keyint_min", "50",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-shortest",
        "-progress", "pipe:1", "-f", "flv", url,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sent_seconds(progress: str) -> float:
    """The last ``out_time_us`` an ffmpeg ``-progress`` report gave, in seconds."""
    values = [int(v) for v in re.findall(r"^out_time_us=(\d+)$", progress, re.M)]
    return values[-1] / 1e6 if values else 0.0


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def livestream(client, post_id) -> dict:
    r = client.get(f"/api/v1/content/posts/{post_id}")
    assert r.status_code == 200, r.content
    return r.json()["livestream"]


def create_live_post(user, title: str = "Live from the test") -> dict:
    client = client_for(user)
    r = client.post("/api/v1/content/posts", {"type": "livestream", "title": title}, format="json")
    assert r.status_code == 201, r.content
    post = r.json()
    assert post["livestream"]["status"] == "idle" and post["livestream"]["playback_url"] is None
    assert post["livestream"]["stream_key"] and post["livestream"]["ingest_url"].startswith(
        "rtmp://127.0.0.1:"
    )
    return post


def playlist_segments(base: str, url: str) -> list[str]:
    r = requests.get(base + url, timeout=10)
    assert r.status_code == 200, r.status_code
    assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    return [line for line in r.text.splitlines() if line.endswith(".ts")]


def test_livestream_from_encoder_to_recording(ingest, live_server, worker, platform):
    """Create with the API → refused before it is published → publish → a wrong key is refused → push
    for real → ``live``, the playlist grows, hls.js plays it → ``end`` stops the encoder → the
    recording is a ready ``livestream_recording`` on the post, as long as what was sent (± 1 s)."""
    platform(moderation_mode="reactive_only")
    owner, viewer = UserFactory(), UserFactory()
    post = create_live_post(owner)
    ls = post["livestream"]
    url = f"{ls['ingest_url']}/{ls['stream_key']}"

    # A draft cannot go live (and in ai_prescreen, a post goes live only once its text cleared).
    early = push(url, seconds=3)
    assert early.wait(20) != 0
    assert LiveStream.objects.get(post_id=post["id"]).status == "idle"
    r = client_for(owner).post(f"/api/v1/content/posts/{post['id']}/publish")
    assert r.status_code == 200 and r.json()["status"] == "published", r.content

    wrong = push(f"{ls['ingest_url']}/pf_not-the-key", seconds=3)
    assert wrong.wait(20) != 0, "a wrong key must be refused"

    started = time.monotonic()
    encoder = push(url, seconds=60)
    progress: list[str] = []  # the encoder's -progress lines, read as they come
    reader = threading.Thread(target=lambda: progress.extend(iter(encoder.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        public = wait_for(
            lambda: (d := livestream(client_for(viewer), post["id"]))["playback_url"] and d,
            timeout=20,
            what="the stream to be live with a playback URL",
        )
        assert public["status"] == "live" and "stream_key" not in public and "ingest_url" not in public
        playback = "/" + public["playback_url"].split("/", 3)[3]
        assert playback.startswith("/m/l/")
        first = playlist_segments(live_server.url, playback)
        wait_for(
            lambda: len(playlist_segments(live_server.url, playback)) > len(first) + 1,
            timeout=15,
            what="the live playlist to grow",
        )
        _play_in_chromium(live_server.url + playback)
        _watch_page_plays(live_server.url + f"/watch/{post['id']}")
        # ~20 s of stream, then the owner ends it: the encoder is cut off.
        time.sleep(max(0.0, 20 - (time.monotonic() - started)))
        r = client_for(owner).post(f"/api/v1/content/posts/{post['id']}/livestream/end", {}, format="json")
        assert r.status_code == 200 and r.json()["livestream"]["status"] == "ended", r.content
        # What the encoder had sent when the stream was ended: media it pushes after that (until the
        # ingest drops it) is refused by design and is not in the recording.
        sent_at_end = sent_seconds("".join(progress))
        encoder.wait(timeout=20)
        reader.join(timeout=5)
        out = "".join(progress)
    finally:
        if encoder.poll() is None:
            encoder.kill()
    assert encoder.returncode != 0, "the encoder should have been disconnected"
    sent = sent_seconds(out)
    assert 15 < sent < 40, sent

    stream = wait_for(
        lambda: (s := LiveStream.objects.get(post_id=post["id"])).recording_media_id and s,
        timeout=30,
        what="the recording medium",
    )
    assert stream.status == "ended" and stream.end_reason == "ended by its author"
    recording = wait_for(
        lambda: (m := Media.objects.get(pk=stream.recording_media_id)).processing_status == "ready" and m,
        timeout=120,
        what="the recording to be processed",
    )
    assert recording.kind == "livestream_recording" and recording.post_id == stream.post_id
    # The right duration (±1 s): everything sent until the end, nothing invented after it.
    assert sent_at_end - 1.0 <= recording.duration_seconds <= sent + 1.0, (
        recording.duration_seconds,
        sent_at_end,
        sent,
    )
    assert "hls" in recording.variants and "360p" in recording.variants  # ladder + HLS
    # The viewer finds it on the post; the live tree ends with ENDLIST and stays playable.
    d = client_for(viewer).get(f"/api/v1/content/posts/{post['id']}").json()
    assert d["livestream"]["recording_media_id"] == str(recording.pk)
    assert [m["kind"] for m in d["media"] if m["kind"] != "transcript"] == ["livestream_recording"]
    assert requests.get(live_server.url + playback, timeout=10).text.rstrip().endswith("#EXT-X-ENDLIST")
    # A second broadcast with the same key is refused: one stream per post.
    again = push(url, seconds=2)
    assert again.wait(20) != 0


def _play_in_chromium(src: str) -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is needed for the player check")
        return
    from playwright.sync_api import sync_playwright

    from tests.media.test_delivery import PLAYER
    from tests.moderation.test_admin_browser import CHROMIUM_ARGS

    base = src.split("/m/", 1)[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.route(f"{base}/player", lambda route: route.fulfill(body=PLAYER, content_type="text/html"))
            page.goto(f"{base}/player")
            page.add_script_tag(path=str(HLS_JS))
            page.evaluate(
                """(src) => { const v = document.getElementById('v');
                   const hls = new Hls({liveSyncDurationCount: 2}); window.hls = hls;
                   hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.pfErrors.push(d.details); });
                   hls.loadSource(src); hls.attachMedia(v);
                   hls.on(Hls.Events.MANIFEST_PARSED, () => v.play()); }""",
                src,
            )
            page.wait_for_function("() => document.getElementById('v').currentTime > 2")
            assert page.evaluate("() => window.pfErrors") == []
            assert page.evaluate("() => window.hls.levels.length") >= 1
        finally:
            browser.close()


def _watch_page_plays(url: str) -> None:
    """The minimal player page, opened by an anonymous browser, plays the live stream (hls.js)."""
    if not Path(CHROMIUM).exists():
        return
    from playwright.sync_api import sync_playwright

    from tests.moderation.test_admin_browser import CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(url)
            page.wait_for_function("() => document.getElementById('v').currentTime > 1")
            assert "Stream: live" in page.inner_text("#state")
            assert "send to" not in page.inner_text("#state")  # the ingest is the author's only
        finally:
            browser.close()


def test_ai_cuts_a_stream_that_turns_red(ingest, live_server, worker, platform, settings, red_ai):  # noqa: F811
    """In ai_prescreen the post goes live once its text clears; frames are scored every interval by the
    configured provider (here: red pixels), through the real sampling code; when the picture turns red
    the stream is ended and the post quarantined within one interval (plus the segment being made)."""
    settings.LIVESTREAM_AI_INTERVAL_SECONDS = 3.0
    platform(moderation_mode="ai_prescreen", ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    owner = UserFactory()
    post = create_live_post(owner, "Blue, then trouble")
    r = client_for(owner).post(f"/api/v1/content/posts/{post['id']}/publish")
    assert r.status_code == 202, r.content
    wait_for(
        lambda: Post.objects.get(pk=post["id"]).status == "published", timeout=30, what="the text to clear"
    )
    ls = post["livestream"]
    blue_for = 8
    source = [
        "-f", "lavfi", "-i",
        f"color=c=blue:s=320x240:r=25:d={blue_for}[b];color=c=red:s=320x240:r=25:d=40[r];[b][r]concat=n=2:v=1:a=0",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
    ]  # fmt: skip
    encoder = push(f"{ls['ingest_url']}/{ls['stream_key']}", seconds=40, source=source)
    try:
        wait_for(lambda: LiveStream.objects.get(post_id=post["id"]).status == "live", timeout=20, what="live")
        went_live = time.monotonic()
        # Blue frames are looked at and pass.
        wait_for(
            lambda: LiveStream.objects.get(post_id=post["id"]).ai_frames_checked >= 1,
            timeout=15,
            what="a look",
        )
        assert Post.objects.get(pk=post["id"]).status == "published"
        red_at = went_live + blue_for
        quarantined = wait_for(
            lambda: Post.objects.get(pk=post["id"]).status == "quarantined" and time.monotonic(),
            timeout=blue_for + 20,
            what="the post to be quarantined",
        )
        # Red is in a stored segment at most one segment after it starts; the next look finds it.
        limit = settings.LIVESTREAM_AI_INTERVAL_SECONDS + settings.LIVESTREAM_SEGMENT_SECONDS + 3
        assert quarantined - red_at <= limit, (quarantined - red_at, limit)
        stream = wait_for(
            lambda: (s := LiveStream.objects.get(post_id=post["id"])).status == "ended" and s,
            timeout=5,
            what="the stream to end",
        )
        assert stream.end_reason == "the AI flagged a frame"
        assert encoder.wait(15) != 0, "the encoder should have been disconnected"
    finally:
        if encoder.poll() is None:
            encoder.kill()
    review = AiReview.objects.filter(post_id=post["id"], decision="quarantine").get()
    assert review.overall_score >= 0.7 and review.raw["source"] == "livestream_frame"
    assert Post.objects.get(pk=post["id"]).moderation_state == "flagged"
    # Hidden now: the live playlist is no longer served to the public.
    playback = "/" + livestream(client_for(owner), post["id"])["playback_url"].split("/", 3)[3]
    assert requests.get(live_server.url + playback, timeout=10).status_code == 404
