"""Hostile findings against transcripts and captions (issue 17): each test failed before its fix.

Modelled on tests/media/test_speech_api.py; the stub AI scores the text it is given, so a
``[ai:0.99]`` marker in the machine transcript stands for abusive speech."""

from __future__ import annotations

import io
import json
from urllib.parse import urlsplit

import pytest

from content import services as content_services
from content.models import Post
from media import storage
from media.models import Media
from media.speech import captions
from moderation.models import AiReview
from moderation.services import waiting_for_ai
from tests.conftest import client_for
from tests.factories import PostFactory, UserFactory
from tests.media.test_speech_api import _body, _ready_transcript

ABUSIVE = [(0.5, 2.0, "you are so dumb and stupid [ai:0.99]", 0.4), (3.0, 5.5, "shut up you idiot", 0.7)]


@pytest.mark.django_db(transaction=True)
def test_draft_transcript_edit_cannot_launder_abusive_speech(broker, worker, stub_ai, platform):
    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="")
    parent, _ = _ready_transcript(post, cues=ABUSIVE)
    r = client_for(owner).patch(
        f"/api/v1/content/media/{parent.pk}/transcript", {"text": "hello friends\nnice garden"}, format="json"
    )
    assert r.status_code == 200, r.content
    r = client_for(owner).post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code in (200, 202), r.content
    broker.join("moderation", fail_fast=False)
    worker.join()
    post.refresh_from_db()
    assert post.status != "published"  # the speech said something the AI would have flagged
    # The review page shows the creator's text and, beside it, what was heard, its abusive cue flagged.
    from django.urls import reverse

    from tests.moderation.test_admin import login, make_moderator

    html = login(make_moderator()).get(reverse("admin:moderation_reviewqueue_change", args=[post.pk]))
    html = html.content.decode()
    heard = html.split("What the recogniser heard")[1]
    assert "hello friends" in html and "dumb and stupid" in heard


@pytest.mark.django_db
def test_transcript_edit_updates_the_hls_subtitles(user, platform, django_capture_on_commit_callbacks):
    # An author not prescreened: the edit applies at once (a held one waits: test_speech_api).
    platform(moderation_mode="reactive_only", trust_min_account_age_days=0, trust_min_approved_posts=0)
    post = PostFactory(author=user, type="video", body="", published=True)
    parent, transcript = _ready_transcript(post, cues=ABUSIVE)
    folder = f"media/{user.pk}/{parent.pk}/hls"
    master = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360\n360p/index.m3u8\n"
    master = captions.with_subtitles(master, uri="subs/en.m3u8", language="en", name="English")
    storage.save(f"{folder}/master.m3u8", io.BytesIO(master.encode()), "application/vnd.apple.mpegurl")
    old = captions.render_webvtt([captions.Segment(*c) for c in ABUSIVE], language="en")
    storage.save(f"{folder}/subs/en.vtt", io.BytesIO(old.encode()), "text/vtt")
    Media.objects.filter(pk=parent.pk).update(
        kind="video",
        variants={"hls": {"key": f"{folder}/master.m3u8", "mime_type": "application/vnd.apple.mpegurl"}},
    )
    transcript.metadata = {
        **transcript.metadata,
        "hls_subtitles": {"vtt_key": f"{folder}/subs/en.vtt", "master_key": f"{folder}/master.m3u8"},
    }
    transcript.save(update_fields=["metadata"])
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).patch(
            f"/api/v1/content/media/{parent.pk}/transcript",
            {"text": "hello friends\nnice garden"},
            format="json",
        )
    assert r.status_code == 200, r.content
    hls_url = urlsplit(
        client_for(user).get(f"/api/v1/content/media/{parent.pk}").json()["variants"]["hls"]["url"]
    )
    vtt = _body(client_for(user).get(hls_url.path.replace("master.m3u8", "subs/en.vtt"))).decode()
    assert "hello friends" in vtt and "stupid" not in vtt


@pytest.mark.django_db
def test_edit_during_review_keeps_what_the_ai_scored(user, django_capture_on_commit_callbacks):
    post = PostFactory(author=user, type="audio", body="")
    parent, transcript = _ready_transcript(post, cues=ABUSIVE)
    Post.objects.filter(pk=post.pk).update(status="pending_review", moderation_state="under_review")
    old_key = transcript.variants["captions"]["key"]
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).patch(
            f"/api/v1/content/media/{parent.pk}/transcript",
            {"text": "hello friends\nnice garden"},
            format="json",
        )
    transcript.refresh_from_db()
    kept = json.dumps({k: v for k, v in transcript.metadata.items() if k != "segments"})
    assert r.status_code == 409 or ("you are so dumb" in kept and storage.exists(old_key))


@pytest.mark.django_db
def test_transcript_rescore_does_not_consume_a_pending_revisions_review(
    stub_ai, platform, django_capture_on_commit_callbacks
):
    from moderation.review import transcript_rescore

    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="", published=True)
    first, _ = _ready_transcript(post, cues=[(0.5, 2.0, "hello", 1.0)])
    Media.objects.filter(pk=first.pk).update(is_primary=True)
    added, _ = _ready_transcript(post, cues=ABUSIVE)  # a second audio the creator adds after publish
    Media.objects.filter(pk=added.pk).update(is_primary=False)
    with django_capture_on_commit_callbacks(execute=False):  # the revision's review_post is not run
        revision = content_services.post_edit(post_id=post.pk, actor=owner, attach_media_ids=[added.pk])
    post.refresh_from_db()
    assert post.pending_revision_id == revision.pk and waiting_for_ai(post, post.revision)
    with django_capture_on_commit_callbacks(execute=False):
        r = client_for(owner).patch(
            f"/api/v1/content/media/{added.pk}/transcript",
            {"text": "hello friends\nnice garden"},
            format="json",
        )
    assert r.status_code == 202, r.content  # held for the prescreen
    transcript = Media.objects.get(parent=added, kind="transcript")
    transcript_rescore(
        post_id=str(post.pk), media_id=str(transcript.pk), revision=post.revision, max_retries=0
    )
    assert AiReview.objects.filter(post=post, raw__rescore="transcript_edit").exists()
    post.refresh_from_db()
    assert post.pending_revision is not None and post.pending_revision.status == "pending"
    assert waiting_for_ai(post, post.revision)  # the edit (with its new audio) still needs its prescreen


@pytest.mark.django_db
def test_a_rescore_that_holds_the_post_keeps_the_pending_revision_for_the_human(
    stub_ai, platform, django_capture_on_commit_callbacks
):
    """The counterpart: an abusive edit, held before the post's next edit opened a revision, is still
    scored (not stale) and sends the post to a human; the AI then must not clear the post over them."""
    from moderation.review import review_post_revision, transcript_rescore

    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="", published=True)
    first, transcript = _ready_transcript(post, cues=[(0.5, 2.0, "hello", 1.0)])
    Media.objects.filter(pk=first.pk).update(is_primary=True)
    with django_capture_on_commit_callbacks(execute=False):
        r = client_for(owner).patch(
            f"/api/v1/content/media/{first.pk}/transcript", {"text": "you are dumb [ai:0.99]"}, format="json"
        )
    assert r.status_code == 202, r.content
    sent_at = Post.objects.get(pk=post.pk).revision
    added, _ = _ready_transcript(post, cues=[(0.5, 2.0, "nice garden", 1.0)])
    Media.objects.filter(pk=added.pk).update(is_primary=False)
    with django_capture_on_commit_callbacks(execute=False):
        content_services.post_edit(post_id=post.pk, actor=owner, attach_media_ids=[added.pk])
    transcript_rescore(post_id=str(post.pk), media_id=str(transcript.pk), revision=sent_at, max_retries=0)
    post.refresh_from_db()
    assert post.status in ("pending_review", "quarantined") and post.pending_revision is not None
    assert not waiting_for_ai(post, post.revision)
    review_post_revision(post_id=str(post.pk), revision=post.revision, max_retries=0)
    post.refresh_from_db()
    assert post.status in ("pending_review", "quarantined") and post.pending_revision is not None


@pytest.mark.django_db
def test_public_transcript_text_variant_url_is_served(user, platform, django_capture_on_commit_callbacks):
    # Not prescreened, so the edit applies at once (a prescreened one is held until the AI clears it).
    platform(moderation_mode="reactive_only", trust_min_account_age_days=0, trust_min_approved_posts=0)
    post = PostFactory(author=user, type="audio", body="", published=True)
    parent, transcript = _ready_transcript(post, cues=[(0.5, 2.0, "hello there", 1.0)])
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).patch(
            f"/api/v1/content/media/{parent.pk}/transcript", {"text": "hello friends"}, format="json"
        )
    assert r.status_code == 200, r.content
    body = client_for(None).get(f"/api/v1/content/media/{transcript.pk}").json()
    url = body["variants"]["text"]["url"]
    assert client_for(None).get(urlsplit(url).path).status_code == 200


def test_sqlite_database_url_keeps_the_embedded_lock_options(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO", "DATABASE_URL"))}
    env.update(
        SECRET_KEY="dev", POSTFLOW_VAR_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3"
    )
    code = "from django.conf import settings; print(settings.DATABASES['default'].get('OPTIONS', {}))"
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "'transaction_mode': 'IMMEDIATE'" in out.stdout, out.stdout + out.stderr


@pytest.mark.django_db
def test_transcript_edit_of_a_cleared_scheduled_post_is_screened(
    broker, platform, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from tests.conftest import queued

    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="")
    parent, _ = _ready_transcript(post, cues=[(0.5, 2.0, "hello there", 1.0)])
    Post.objects.filter(pk=post.pk).update(
        status="scheduled", moderation_state="clean", scheduled_at=timezone.now() + timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(owner).patch(
            f"/api/v1/content/media/{parent.pk}/transcript",
            {"text": "you are so dumb and stupid\nshut up you idiot"},
            format="json",
        )
    post.refresh_from_db()
    rescreened = [m.actor_name for m in queued(broker, "moderation")]
    assert r.status_code == 409 or rescreened or post.status != "scheduled", (r.status_code, post.status)
