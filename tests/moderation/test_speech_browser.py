"""Captions in the admin player, in headless Chromium (issue 17): a clean video's transcript, made by
the real speech processor from espeak-ng speech, loads as a text track with cues, and clicking a
cue's time seeks the player."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from media import storage
from media.models import Media
from media.processors.base import StepLog
from media.processors.speech import SpeechProcessor
from tests.factories import PostFactory, UserFactory
from tests.media.speech_audio import CLEAN, have_espeak, speech_file
from tests.moderation.test_admin import make_moderator
from tests.moderation.test_admin_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
    pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng and ffmpeg"),
]


def _clean_video_post(tmp_path: Path):
    creator = UserFactory(username="creator")
    post = PostFactory(
        author=creator,
        type="video",
        title="A walk in the park",
        body="",
        status="pending_review",
        moderation_state="under_review",
        submitted_at=timezone.now() - timedelta(minutes=5),
    )
    clip = tmp_path / "walk.mp4"
    speech_file(CLEAN[:2], clip, video=True)
    video = Media.objects.create(
        post=post,
        owner=creator,
        kind="video",
        processing_status="ready",
        mime_type="video/mp4",
        original_key=storage.media_key(creator.pk, "x", "original", ".mp4"),
        duration_seconds=8.0,
    )
    key = storage.media_key(creator.pk, video.pk, "360p", ".mp4")
    storage.save(key, clip, "video/mp4")
    video.variants = {"360p": {"key": key, "mime_type": "video/mp4", "width": 320, "height": 240}}
    video.save(update_fields=["variants"])
    # The speech step's own processor on the clip; its outputs stored as the pipeline stores them.
    result = SpeechProcessor().process(source=clip, workdir=tmp_path / "speech", steps=StepLog())
    transcript = Media.objects.create(
        post=post,
        owner=creator,
        parent=video,
        kind="transcript",
        is_primary=False,
        processing_status="ready",
        mime_type="text/plain",
        original_key="unused",
        metadata=result.metadata,
    )
    variants = {}
    for v in result.variants:
        vkey = storage.media_key(creator.pk, transcript.pk, v.name, v.path.suffix)
        storage.save(vkey, v.path, v.mime_type)
        variants[v.name] = {"key": vkey, "mime_type": v.mime_type}
    transcript.variants = variants
    transcript.save(update_fields=["variants"])
    return post, result.metadata["segments"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("blurred", [False, True], ids=["clear", "blurred"])
def test_clean_video_captions_play_in_the_admin_player(live_server, tmp_path, blurred):
    """``blurred``: a sensitive post's media is blurred until clicked; a click on a cue's time is a
    request to play from there, so that one click both reveals and seeks."""
    from content.models import Post

    moderator = make_moderator(username="mod")
    post, segments = _clean_video_post(tmp_path)
    assert segments, "the processor heard the clean sentences"
    if blurred:
        Post.objects.filter(pk=post.pk).update(sensitive=True)
    url = f"{live_server.url}/admin/moderation/reviewqueue/{post.pk}/change/"

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(f"{live_server.url}/admin/login/?next={url}")
            page.fill("#id_username", moderator.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector("video.pf-video track", state="attached")
            # The track element loads (readyState 2) and its cues reach the player's text track.
            page.wait_for_function(
                "() => { const t = document.querySelector('video.pf-video track');"
                " return t && t.readyState === 2 && t.track.cues && t.track.cues.length > 0; }"
            )
            track = page.eval_on_selector(
                "video.pf-video",
                "v => ({kind: v.textTracks[0].kind, mode: v.textTracks[0].mode,"
                " cues: [...v.textTracks[0].cues].map(c => [c.startTime, c.endTime, c.text])})",
            )
            rows = page.eval_on_selector_all(".pf-transcript .pf-seek", "bs => bs.map(b => b.dataset.start)")
            page.click(".pf-transcript li:nth-child(2) .pf-seek")
            page.wait_for_function(
                "s => Math.abs(document.querySelector('video.pf-video').currentTime - s) < 0.3",
                arg=float(rows[1]),
            )
            flagged = page.eval_on_selector_all(".pf-transcript .pf-flagged", "els => els.length")
            still_blurred = page.eval_on_selector_all(".pf-media.pf-blur", "els => els.length")
        finally:
            browser.close()
    assert track["kind"] == "captions" and track["mode"] == "showing"
    assert [round(c[0], 2) for c in track["cues"]] == [round(s[0], 2) for s in segments]
    assert [c[2] for c in track["cues"]] == [s[2] for s in segments]
    assert len(rows) == len(segments) >= 2 and flagged == 0 and still_blurred == 0
