"""content/sweep.py: posts whose follow-up message was lost are healed."""

from datetime import timedelta

import pytest
from django.utils import timezone

from content.models import Post
from content.sweep import sweep_stuck_posts
from moderation.models import AiReview
from tests.conftest import client_for, queued
from tests.factories import MediaFactory, PostFactory

pytestmark = pytest.mark.django_db


def test_broker_down_at_publish_still_answers_and_the_sweep_queues_the_review(
    user, platform, broker, monkeypatch, django_capture_on_commit_callbacks
):
    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user)

    def down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(broker, "enqueue", down)
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code == 202 and r.json()["status"] == "pending_review"
    monkeypatch.undo()
    Post.objects.filter(pk=post.pk).update(submitted_at=timezone.now() - timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_stuck_posts()
    assert report.reviews_queued == [str(post.pk)]
    assert [m.args[0] for m in queued(broker, "moderation")] == [str(post.pk)]
    assert sweep_stuck_posts().reviews_queued == [str(post.pk)]  # until the review is recorded...
    AiReview.objects.create(
        post=post,
        post_revision=Post.objects.get(pk=post.pk).revision,
        provider="stub",
        decision="review",
        overall_score=0.4,
    )
    assert sweep_stuck_posts().reviews_queued == []  # ...then never again


def test_sweep_settles_a_post_left_processing(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user, type="image", status="processing", publish_requested=True)
    MediaFactory(post=post, processing_status="ready")
    Post.objects.filter(pk=post.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    assert sweep_stuck_posts().settled == [str(post.pk)]
    assert Post.objects.get(pk=post.pk).status == "published"


@pytest.mark.django_db
def test_an_edit_waiting_for_its_link_card_gets_the_fetch_again_not_a_review(
    user, broker, platform, django_capture_on_commit_callbacks
):
    from content import services

    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user, type="link", link_url="https://old.example/", published=True)
    revision = services.post_edit(post_id=post.pk, actor=user, changes={"link_url": "https://new.example/"})
    assert revision.link_preview == {"status": "fetching"}
    Post.objects.filter(pk=post.pk).update(submitted_at=timezone.now() - timedelta(minutes=30))
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_stuck_posts()
    assert report.reviews_queued == []
    assert [m.args for m in queued(broker, "links")] == [
        (str(post.pk), "https://new.example/", revision.number)
    ]
    assert queued(broker, "moderation") == []
