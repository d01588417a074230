"""The AI prescreen through the real review actor (StubBroker + worker), and the moderators'
transitions: every verdict band, fail closed, stale reviews, trust, the blocklist."""

import threading

import pytest
from django.db import connection
from django.utils import timezone

from config.errors import InvalidTransition, PermissionDenied
from content import services as content_services
from content.models import Post
from moderation import services
from moderation.models import AiReview, BlockedMedia, ModerationDecision
from moderation.tasks import review_post
from tests.conftest import client_for
from tests.factories import MediaFactory, PostFactory, UserFactory
from tests.media.helpers import jpeg_bytes, sha256, upload_file


def _publish(post):
    return content_services.post_publish(post_id=post.pk, actor=post.author)


def _drain(broker, worker):
    broker.join("moderation", fail_fast=False)
    worker.join()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "score, status, state, decision",
    [
        (0.1, "published", "clean", "publish"),
        (0.3, "pending_review", "under_review", "review"),
        (0.69, "pending_review", "under_review", "review"),
        (0.7, "quarantined", "flagged", "quarantine"),
        (0.95, "quarantined", "flagged", "quarantine"),
    ],
)
def test_verdict_bands(broker, worker, stub_ai, platform, score, status, state, decision):
    platform(moderation_mode="ai_prescreen", ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    post = PostFactory(body=f"hello [ai:{score}]")
    _publish(post)
    _drain(broker, worker)
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == (status, state)
    review = AiReview.objects.get(post=post)
    assert (review.provider, review.decision, review.overall_score) == ("stub", decision, score)
    assert review.duration_ms is not None and review.post_revision == post.revision


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("marker", ["[ai:error]", "[ai:garbage]"])
def test_provider_errors_fail_closed(broker, worker, stub_ai, platform, settings, marker, monkeypatch):
    import moderation.tasks as tasks

    platform(moderation_mode="ai_prescreen")
    monkeypatch.setattr(review_post, "options", {**review_post.options, "min_backoff": 10, "max_backoff": 20})
    post = PostFactory(body=f"hi {marker}")
    _publish(post)
    _drain(broker, worker)
    post.refresh_from_db()
    assert post.status == "pending_review"  # never published
    reviews = AiReview.objects.filter(post=post).order_by("attempt")
    assert [r.decision for r in reviews] == ["error"] * (tasks.AI_MAX_RETRIES + 1)
    assert reviews.last().raw["final"] is True and post.metadata["ai_review_error"]


@pytest.mark.django_db(transaction=True)
def test_local_provider_flags_profane_text(broker, worker, platform, settings):
    settings.AI_PROVIDER = "local"
    platform(moderation_mode="ai_prescreen")
    clean = PostFactory(body="A lovely walk along the river this morning with my dog.")
    rude = PostFactory(body="you are a fucking idiot and a piece of shit")
    _publish(clean)
    _publish(rude)
    _drain(broker, worker)
    clean.refresh_from_db()
    rude.refresh_from_db()
    assert clean.status == "published"
    assert rude.status in ("pending_review", "quarantined")
    assert AiReview.objects.get(post=rude).scores["profanity"] > 0.7


@pytest.mark.django_db
def test_stale_verdict_changes_nothing(platform, staff):
    platform(moderation_mode="ai_prescreen")
    post = PostFactory()
    post = _publish(post)
    old_revision = post.revision
    services.post_approve(post_id=post.pk, moderator=staff)  # a human decided first
    review = services.ai_verdict_apply(
        post_id=post.pk,
        revision=old_revision,
        provider="stub",
        model="",
        scores={"x": 0.99},
        overall=0.99,
        labels=[],
        duration_ms=1,
    )
    post.refresh_from_db()
    assert review.decision == "stale" and post.status == "published"


@pytest.mark.django_db
def test_verdict_for_older_revision_is_stale(platform):
    platform(moderation_mode="ai_prescreen")
    post = _publish(PostFactory())
    review = services.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision - 1,
        provider="stub",
        model="",
        scores={},
        overall=0.0,
        labels=[],
        duration_ms=1,
    )
    post.refresh_from_db()
    assert review.decision == "stale" and post.status == "pending_review"


@pytest.mark.django_db
def test_moderator_transitions_are_audited(staff):
    post = PostFactory(status="pending_review", moderation_state="under_review")
    services.post_quarantine(post_id=post.pk, moderator=staff, reason="looks off")
    services.post_approve(post_id=post.pk, moderator=staff, reason="fine after all")
    services.post_reject(post_id=post.pk, moderator=staff, reason="spam ring")
    post.refresh_from_db()
    assert (post.status, post.moderation_state, post.rejection_reason) == (
        "rejected",
        "rejected",
        "spam ring",
    )
    rows = list(
        ModerationDecision.objects.filter(post=post)
        .order_by("created_at")
        .values_list("action", "from_status", "to_status", "moderator_id", "reason")
    )
    assert rows == [
        ("quarantine", "pending_review", "quarantined", staff.pk, "looks off"),
        ("approve", "quarantined", "published", staff.pk, "fine after all"),
        ("reject", "published", "rejected", staff.pk, "spam ring"),
    ]
    with pytest.raises(InvalidTransition):
        services.post_approve(post_id=post.pk, moderator=staff)


@pytest.mark.django_db
def test_second_moderator_is_told_it_was_decided(staff):
    other = UserFactory(is_staff=True)
    post = PostFactory(status="pending_review")
    services.post_approve(post_id=post.pk, moderator=staff, expected_status="pending_review")
    with pytest.raises(services.AlreadyDecided):
        services.post_reject(
            post_id=post.pk, moderator=other, reason="spam", expected_status="pending_review"
        )
    assert ModerationDecision.objects.filter(post=post).count() == 1


@pytest.mark.django_db
def test_moderator_cannot_moderate_own_post(staff):
    post = PostFactory(author=staff, status="pending_review")
    with pytest.raises(PermissionDenied):
        services.post_approve(post_id=post.pk, moderator=staff)


@pytest.mark.django_db
def test_claim_blocks_others_until_take_over(staff):
    other = UserFactory(is_staff=True)
    post = PostFactory(status="pending_review")
    services.post_claim(post_id=post.pk, moderator=staff)
    with pytest.raises(services.ClaimedByOther):
        services.post_approve(post_id=post.pk, moderator=other)
    services.post_approve(post_id=post.pk, moderator=other, take_over=True)
    assert Post.objects.get(pk=post.pk).status == "published"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor == "sqlite", reason="row locks need PostgreSQL")
def test_concurrent_decisions_one_wins(staff):
    other = UserFactory(is_staff=True)
    post = PostFactory(status="pending_review")
    results, barrier = [], threading.Barrier(2)

    def act(fn, moderator):
        barrier.wait()
        try:
            fn(post_id=post.pk, moderator=moderator, reason="checked", expected_status="pending_review")
            results.append("ok")
        except services.AlreadyDecided:
            results.append("already")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=act, args=(services.post_approve, staff)),
        threading.Thread(target=act, args=(services.post_reject, other)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["already", "ok"]
    assert ModerationDecision.objects.filter(post=post).count() == 1


@pytest.mark.django_db
def test_reactive_mode_trust_rules(platform):
    platform(moderation_mode="reactive_only", trust_min_account_age_days=7)
    newbie = UserFactory()
    post = _publish(PostFactory(author=newbie))
    assert post.status == "pending_review"
    veteran = UserFactory()
    veteran.date_joined = timezone.now() - timezone.timedelta(days=30)
    veteran.save()
    assert _publish(PostFactory(author=veteran)).status == "published"
    platform(moderation_mode="reactive_only", trust_min_account_age_days=0, trust_min_approved_posts=1)
    first = _publish(PostFactory(author=veteran))
    assert first.status == "published"  # the earlier published post counts
    assert _publish(PostFactory(author=UserFactory())).status == "pending_review"


@pytest.mark.django_db
def test_rejecting_blocklists_media_and_refuses_reupload(staff, platform):
    post = PostFactory(type="image", status="pending_review")
    data = jpeg_bytes(32, 32, (1, 2, 3))
    MediaFactory(post=post, sha256=sha256(data))
    services.post_reject(post_id=post.pk, moderator=staff, reason="abuse")
    assert BlockedMedia.objects.filter(sha256=sha256(data)).exists()
    creator = UserFactory()
    draft = PostFactory(author=creator, type="image")
    r = client_for(creator).post(
        f"/api/v1/content/posts/{draft.pk}/media", {"file": upload_file("a.jpg", data)}, format="multipart"
    )
    assert r.status_code == 451 and r.json()["code"] == "blocked_media"
    r = client_for(creator).post(
        "/api/v1/content/uploads",
        {"filename": "a.jpg", "content_type": "image/jpeg", "size": len(data), "sha256": sha256(data)},
        format="json",
    )
    assert r.status_code == 451


@pytest.mark.django_db
def test_blocklist_quarantine_mode(staff, platform, django_capture_on_commit_callbacks):
    platform(
        blocked_media_action="quarantine", moderation_mode="reactive_only", post_processing_enabled=False
    )
    data = jpeg_bytes(32, 32, (9, 9, 9))
    BlockedMedia.objects.create(sha256=sha256(data))
    creator = UserFactory()
    draft = PostFactory(author=creator, type="image", body="")
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(creator).post(
            f"/api/v1/content/posts/{draft.pk}/media",
            {"file": upload_file("a.jpg", data)},
            format="multipart",
        )
    assert r.status_code == 201
    r = client_for(creator).post(f"/api/v1/content/posts/{draft.pk}/publish")
    assert r.json()["status"] == "quarantined"
    assert "blocked_media" in r.json()["metadata"]
