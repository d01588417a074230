"""Scheduled publishing (DESIGN.md §9): publish_at, the prescreen at once, public at publish_at if
cleared by then (else when cleared), exactly once even with two schedulers, unpublish cancels."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from content import services
from content.models import ModerationState, Post, PostStatus
from moderation import services as moderation
from moderation.models import ModerationDecision
from tests.conftest import client_for
from tests.factories import PostFactory

pytestmark = pytest.mark.django_db


def verdict(post, overall: float):
    post.refresh_from_db()
    return moderation.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision,
        provider="stub",
        model="stub-1",
        scores={"stub": overall},
        overall=overall,
        labels=[],
        duration_ms=1.0,
    )


def schedule(user, post, when):
    return client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/publish", {"publish_at": when.isoformat()}, format="json"
    )


@pytest.mark.parametrize(
    "when",
    ["past", "30s", "366d", "naive", "garbage"],
)
def test_bad_publish_at_is_400_with_a_stable_code(user, when):
    post = PostFactory(author=user)
    now = timezone.now()
    value = {
        "past": (now - timedelta(hours=1)).isoformat(),
        "30s": (now + timedelta(seconds=30)).isoformat(),
        "366d": (now + timedelta(days=366)).isoformat(),
        "naive": (now + timedelta(hours=1)).replace(tzinfo=None).isoformat(),
        "garbage": "tomorrow-ish",
    }[when]
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/publish", {"publish_at": value}, format="json"
    )
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid_publish_at"
    post.refresh_from_db()
    assert (post.status, post.scheduled_at) == (PostStatus.DRAFT, None)


def test_scheduled_post_is_prescreened_at_once_and_public_at_publish_at(user, other_user, broker):
    post = PostFactory(author=user, title="Later")
    when = timezone.now() + timedelta(minutes=2)
    r = schedule(user, post, when)
    assert r.status_code == 202, r.content
    assert (r.json()["status"], r.json()["scheduled_at"] is not None) == ("scheduled", True)
    post.refresh_from_db()
    assert post.moderation_state == ModerationState.UNDER_REVIEW
    assert client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").status_code == 404
    verdict(post, 0.01)  # cleared before publish_at: stays scheduled
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == (PostStatus.SCHEDULED, ModerationState.CLEAN)
    assert services.publish_due_posts(now=when - timedelta(seconds=1)) == []
    assert services.publish_due_posts(now=when) == [str(post.pk)]
    post.refresh_from_db()
    assert (post.status, post.public_revision_id is not None) == (PostStatus.PUBLISHED, True)
    assert services.publish_due_posts(now=when + timedelta(minutes=1)) == []
    assert ModerationDecision.objects.filter(post=post, action="scheduled").count() == 1
    assert client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").json()["title"] == "Later"


def test_cleared_after_publish_at_goes_public_when_cleared(user, staff):
    post = PostFactory(author=user)
    when = timezone.now() + timedelta(minutes=2)
    services.post_publish(post_id=post.pk, actor=user, publish_at=when)
    verdict(post, 0.5)  # held for a human
    post.refresh_from_db()
    assert post.status == PostStatus.SCHEDULED and post.pending_revision.status == "held"
    Post.objects.filter(pk=post.pk).update(scheduled_at=timezone.now() - timedelta(seconds=1))
    assert services.publish_due_posts() == [], "not cleared: not public"
    moderation.post_approve(post_id=post.pk, moderator=staff)
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == (PostStatus.PUBLISHED, ModerationState.APPROVED)


def test_reactive_only_schedule_waits_for_the_time(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user)
    when = timezone.now() + timedelta(minutes=5)
    post = services.post_publish(post_id=post.pk, actor=user, publish_at=when)
    assert (post.status, post.moderation_state) == (PostStatus.SCHEDULED, ModerationState.CLEAN)
    assert services.publish_due_posts(now=when) == [str(post.pk)]


def test_unpublish_cancels_a_scheduled_post(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user)
    when = timezone.now() + timedelta(minutes=5)
    services.post_publish(post_id=post.pk, actor=user, publish_at=when)
    r = client_for(user).post(f"/api/v1/content/posts/{post.pk}/unpublish")
    assert r.status_code == 200 and r.json()["status"] == "draft" and r.json()["scheduled_at"] is None
    assert services.publish_due_posts(now=when + timedelta(minutes=1)) == []
    post.refresh_from_db()
    assert post.status == PostStatus.DRAFT


def test_run_scheduler_once_publishes_due_posts(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user)
    services.post_publish(post_id=post.pk, actor=user, publish_at=timezone.now() + timedelta(minutes=5))
    Post.objects.filter(pk=post.pk).update(scheduled_at=timezone.now() - timedelta(seconds=1))
    call_command("run_scheduler", "--once")
    post.refresh_from_db()
    assert post.status == PostStatus.PUBLISHED


@pytest.mark.skipif(connection.vendor == "sqlite", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_two_schedulers_publish_each_due_post_exactly_once(platform):
    """Two scheduler runs at the same moment over the same due posts: every post goes public once,
    one audit row each (the row lock serialises them; the second finds it no longer scheduled)."""
    platform(moderation_mode="reactive_only")
    from tests.factories import UserFactory

    author = UserFactory()
    posts = [PostFactory(author=author) for _ in range(20)]
    when = timezone.now() + timedelta(minutes=5)
    for p in posts:
        services.post_publish(post_id=p.pk, actor=author, publish_at=when)
    barrier = threading.Barrier(2)
    results: list[list[str]] = []

    def run():
        try:
            barrier.wait(10)
            results.append(services.publish_due_posts(now=when))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    published = [pid for r in results for pid in r]
    assert sorted(published) == sorted(str(p.pk) for p in posts), "each post exactly once"
    assert Post.objects.filter(status=PostStatus.PUBLISHED).count() == 20
    assert ModerationDecision.objects.filter(action="scheduled").count() == 20
