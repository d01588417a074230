"""Captions for everyone who watches (issue 17): a clean video through the real video and speech
pipelines, published, then played by hls.js in headless Chromium through the public signed folder
URL, with the transcript's subtitle rendition listed in the master playlist and its cues loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from media.models import Media
from tests.conftest import client_for
from tests.factories import PostFactory, UserFactory
from tests.media.helpers import upload_file
from tests.media.speech_audio import CLEAN, have_espeak, speech_file
from tests.media.test_delivery import CHROMIUM, _path, _play_and_seek, _variant_url

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
    pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng and ffmpeg"),
]


@pytest.mark.django_db(transaction=True)
def test_hls_js_shows_the_transcripts_captions_of_a_published_video(live_server, broker, tmp_path):
    from django.utils import timezone
    from playwright.sync_api import sync_playwright

    from content.models import Post
    from media import pipeline
    from tests.moderation.test_admin_browser import CHROMIUM_ARGS

    owner = UserFactory()
    post = PostFactory(author=owner, type="video", body="")
    clip = tmp_path / "walk.mp4"
    spoken = speech_file(CLEAN[:2], clip, video=True, gap=1.5)
    r = client_for(owner).post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"file": upload_file("walk.mp4", clip.read_bytes())},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    broker.flush_all()
    pipeline.run(r.json()["id"], kind="video")
    transcript = Media.objects.get(parent_id=r.json()["id"], kind="transcript")
    pipeline.run(str(transcript.pk), kind="transcript")
    video = Media.objects.get(pk=r.json()["id"])
    transcript.refresh_from_db()
    assert video.processing_status == transcript.processing_status == "ready", transcript.processing_error
    Post.objects.filter(pk=post.pk).update(status="published", published_at=timezone.now())

    hls_url = f"{live_server.url}{_path(_variant_url(video, None, 'hls'))}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = _play_and_seek(browser, live_server.url, hls_url, seek_to=1)
            tracks = page.evaluate("() => window.hls.subtitleTracks.map(t => [t.lang, t.name])")
            page.evaluate("() => { window.hls.subtitleTrack = 0; window.hls.subtitleDisplay = true; }")
            page.wait_for_function(
                "() => [...document.getElementById('v').textTracks].some(t => t.cues && t.cues.length > 0)"
            )
            cues = page.evaluate(
                "() => [...document.getElementById('v').textTracks].filter(t => t.cues && t.cues.length)"
                ".flatMap(t => [...t.cues].map(c => [c.startTime, c.endTime, c.text]))"
            )
            errors = page.evaluate("() => window.pfErrors")
        finally:
            browser.close()
    assert errors == [] and tracks == [["en", "English"]]
    heard = [s[2] for s in transcript.metadata["segments"]]
    assert [c[2] for c in cues] == heard and len(heard) >= 2
    for start, end, _ in cues:  # each cue lies within ±1 s of a sentence that was said
        assert any(s.start - 1 <= start and end <= s.end + 1 for s in spoken), (start, end, spoken)
