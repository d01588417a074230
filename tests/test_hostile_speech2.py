"""Hostile findings against held transcript edits (issue 17, second round): each test failed before
its fix.

Modelled on tests/test_hostile_speech.py and tests/media/test_speech_api.py; the stub AI scores the
text it is given, so a ``[ai:0.99]`` marker stands for abusive speech."""

from __future__ import annotations

import pytest

from content.models import Post
from media.models import Media
from moderation.models import AiReview
from tests.conftest import client_for
from tests.factories import PostFactory, UserFactory
from tests.media.test_speech_api import _ready_transcript

CLEAN = [(0.5, 2.0, "the weather is sunny", 0.4), (3.0, 5.5, "we are going to the park", 0.7)]
HELD = "HELDWORD you are so dumb and stupid [ai:0.99]\nHELDWORD shut up you idiot"


def _hold_an_edit(owner, post, parent, django_capture_on_commit_callbacks) -> None:
    """The owner edits the transcript of the published post: 202, held; its re-score is not run."""
    with django_capture_on_commit_callbacks(execute=False):
        r = client_for(owner).patch(
            f"/api/v1/content/media/{parent.pk}/transcript", {"text": HELD}, format="json"
        )
    assert r.status_code == 202, r.content


@pytest.mark.django_db
def test_a_held_transcript_edit_is_in_no_public_json(platform, django_capture_on_commit_callbacks):
    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="", published=True)
    parent, transcript = _ready_transcript(post, cues=CLEAN)
    _hold_an_edit(owner, post, parent, django_capture_on_commit_callbacks)
    paths = (
        f"/api/v1/content/media/{parent.pk}/transcript",  # passes today: the transcript view is careful
        f"/api/v1/content/posts/{post.pk}",
        "/api/v1/content/posts",
        f"/api/v1/content/media/{transcript.pk}",
    )
    leaks = []
    for viewer in (None, UserFactory()):
        for path in paths:
            r = client_for(viewer).get(path)
            assert r.status_code == 200, (path, r.status_code)
            if "HELDWORD" in r.content.decode():
                leaks.append((viewer and viewer.username, path))
    assert not leaks, leaks


@pytest.mark.django_db(transaction=True)
def test_a_post_edit_after_a_transcript_edit_does_not_orphan_the_held_edit(
    broker, stub_ai, platform, request
):
    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="hello", published=True)
    parent, transcript = _ready_transcript(post, cues=CLEAN)
    Media.objects.filter(pk=parent.pk).update(is_primary=True)
    r = client_for(owner).patch(
        f"/api/v1/content/media/{parent.pk}/transcript", {"text": HELD}, format="json"
    )
    assert r.status_code == 202, r.content
    # The creator fixes a typo in the body before the moderation queue got to the re-score.
    r = client_for(owner).patch(f"/api/v1/content/posts/{post.pk}", {"body": "hello there"}, format="json")
    assert r.status_code in (200, 202), r.content
    worker = request.getfixturevalue("worker")
    broker.join("moderation", fail_fast=False)
    worker.join()
    post.refresh_from_db()
    rescores = list(
        AiReview.objects.filter(post=post, raw__rescore="transcript_edit").values_list("decision")
    )
    # The abusive held text got a verdict: the post went to a human or was quarantined.
    assert post.status in ("pending_review", "quarantined"), (post.status, rescores)


@pytest.mark.django_db(transaction=True)
def test_unpublish_and_republish_does_not_orphan_the_held_edit(broker, stub_ai, platform, request):
    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="hello", published=True)
    parent, transcript = _ready_transcript(post, cues=CLEAN)
    Media.objects.filter(pk=parent.pk).update(is_primary=True)
    r = client_for(owner).patch(
        f"/api/v1/content/media/{parent.pk}/transcript", {"text": HELD}, format="json"
    )
    assert r.status_code == 202, r.content
    assert client_for(owner).post(f"/api/v1/content/posts/{post.pk}/unpublish").status_code == 200
    r = client_for(owner).post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code in (200, 202), r.content
    worker = request.getfixturevalue("worker")
    broker.join("moderation", fail_fast=False)
    worker.join()
    post.refresh_from_db()
    transcript.refresh_from_db()
    # Either the republish's prescreen judged the held text (and held the post), or the edit was dropped.
    assert post.status != "published" or "pending_edit" not in transcript.metadata, post.status


@pytest.mark.django_db
def test_mark_sensitive_decides_the_held_transcript_edit(
    stub_ai, platform, django_capture_on_commit_callbacks
):
    from moderation.review import transcript_rescore
    from moderation.services import post_mark_sensitive
    from tests.moderation.test_admin import make_moderator

    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="hello", published=True)
    parent, transcript = _ready_transcript(post, cues=CLEAN)
    revision = Post.objects.get(pk=post.pk).revision
    _hold_an_edit(owner, post, parent, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        transcript_rescore(
            post_id=str(post.pk), media_id=str(transcript.pk), revision=revision, edit=1, max_retries=0
        )
    post.refresh_from_db()
    assert post.status in ("pending_review", "quarantined")
    with django_capture_on_commit_callbacks(execute=False):
        post_mark_sensitive(post_id=post.pk, moderator=make_moderator(), spoiler_text="Rude words")
    transcript.refresh_from_db()
    assert "pending_edit" not in transcript.metadata
    assert "HELDWORD" in transcript.metadata["segments"][0][2]  # what the moderator published
