"""Account standing (DESIGN.md §11): warn, limit, suspend, restore; strikes; audit rows; suspension at
request time everywhere (API 403 ``account_suspended``, logins refused, posts 404 to others, media URLs
refused, S3 URLs revoked)."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import pytest
import requests
from django.test import Client

from content import services as content_services
from content.models import Post, PostStatus, PostType
from media import revocation, storage
from media.models import Media
from media.tasks.urls import media_revoke_post_urls as revoke_actor
from moderation import services
from moderation.models import (
    AccountAction,
    AccountActionKind,
    AccountStanding,
    AccountStatus,
    ModerationDecision,
)
from tests.conftest import client_for, queued
from tests.factories import MediaFactory, PostFactory, UserFactory
from tests.media import conftest as media_fixtures
from tests.media.helpers import jpeg_bytes
from tests.media.test_storage import _published_image
from tests.moderation.test_admin import make_moderator

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's


def act(user, moderator, action, reason="breaking the rules", **kwargs):
    return services.account_act(user_id=user.pk, moderator=moderator, action=action, reason=reason, **kwargs)


def suspend(user, moderator):
    return act(user, moderator, AccountActionKind.SUSPEND)


@pytest.fixture
def moderator(db):
    return make_moderator()


# --- the service: transitions, strikes, audit ----------------------------------------------------------


@pytest.mark.django_db
def test_warn_limit_suspend_restore_write_audit_rows_and_count_strikes(user, moderator):
    post = PostFactory(author=user, published=True)
    standing = act(user, moderator, AccountActionKind.WARN, post_id=post.pk)
    assert (standing.status, standing.strikes) == (AccountStatus.GOOD, 1)
    assert act(user, moderator, AccountActionKind.LIMIT).status == AccountStatus.LIMITED
    assert suspend(user, moderator).status == AccountStatus.SUSPENDED
    restored = act(user, moderator, AccountActionKind.RESTORE, reason="")
    assert (restored.status, restored.strikes) == (AccountStatus.GOOD, 1)  # strikes are kept

    rows = list(AccountAction.objects.filter(user=user).order_by("created_at", "pk"))
    assert [(r.action, r.from_status, r.to_status, r.moderator_id) for r in rows] == [
        ("warn", "good", "good", moderator.pk),
        ("limit", "good", "limited", moderator.pk),
        ("suspend", "limited", "suspended", moderator.pk),
        ("restore", "suspended", "good", moderator.pk),
    ]
    assert rows[0].post_id == post.pk and rows[0].reason == "breaking the rules" and rows[0].strikes == 1


@pytest.mark.django_db
def test_account_actions_check_from_states_reasons_and_who(user, moderator):
    with pytest.raises(services.InvalidTransition):
        act(user, moderator, AccountActionKind.RESTORE, reason="")  # nothing to restore
    with pytest.raises(services.ReasonRequired):
        act(user, moderator, AccountActionKind.SUSPEND, reason=" ")
    suspend(user, moderator)
    with pytest.raises(services.InvalidTransition):
        act(user, moderator, AccountActionKind.LIMIT)
    with pytest.raises(services.AccountActionRefused):
        act(moderator, moderator, AccountActionKind.WARN)
    with pytest.raises(services.AccountActionRefused):
        act(make_moderator(), moderator, AccountActionKind.SUSPEND)  # staff: superusers only
    assert AccountAction.objects.filter(user=user).count() == 1


@pytest.mark.django_db
def test_rejecting_or_quarantining_a_post_is_a_strike_shown_with_the_decision(user, moderator):
    first = PostFactory(author=user, status=PostStatus.PENDING_REVIEW)
    second = PostFactory(author=user, status=PostStatus.PENDING_REVIEW)
    services.post_reject(post_id=first.pk, moderator=moderator, reason="spam")
    services.post_quarantine(post_id=second.pk, moderator=moderator)
    standing = AccountStanding.objects.get(user=user)
    assert (standing.status, standing.strikes) == (AccountStatus.GOOD, 2)
    strikes = AccountAction.objects.filter(user=user, action=AccountActionKind.STRIKE).order_by("pk")
    assert [(s.post_id, s.strikes) for s in strikes] == [(first.pk, 1), (second.pk, 2)]


# --- limited: every publish goes to a human -------------------------------------------------------------


@pytest.mark.django_db
def test_a_limited_account_publishes_to_a_human_in_reactive_mode(user, moderator, platform):
    platform(moderation_mode="reactive_only")
    free = PostFactory(author=UserFactory())
    assert content_services.post_publish(post_id=free.pk, actor=free.author).status == PostStatus.PUBLISHED
    act(user, moderator, AccountActionKind.LIMIT)
    post = PostFactory(author=user)
    assert content_services.post_publish(post_id=post.pk, actor=user).status == PostStatus.PENDING_REVIEW


@pytest.mark.django_db
def test_a_limited_account_waits_for_a_human_even_when_the_ai_says_clean(user, moderator):
    act(user, moderator, AccountActionKind.LIMIT)
    post = content_services.post_publish(post_id=PostFactory(author=user).pk, actor=user)
    assert post.status == PostStatus.PENDING_REVIEW
    review = services.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision,
        provider="stub",
        model="m",
        scores={"x": 0.01},
        overall=0.01,
        labels=[],
        duration_ms=1.0,
    )
    post.refresh_from_db()
    assert review.decision == "publish"  # the AI's word is kept for the accuracy report
    assert (post.status, post.moderation_state) == (PostStatus.PENDING_REVIEW, "under_review")
    assert post.metadata["held_for"] == "account_limited"


# --- suspended: request time, everywhere -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_suspended_token_and_session_get_403_account_suspended(user, moderator):
    token_client = client_for(user)
    session_client = client_for()
    session_client.force_login(user)
    for c in (token_client, session_client):
        assert c.get("/api/v1/content/me/posts").status_code == 200
    suspend(user, moderator)
    for c in (token_client, session_client):
        for method, path in [
            ("get", "/api/v1/content/me/posts"),
            ("get", "/api/v1/content/posts"),
            ("post", "/api/v1/content/posts"),
        ]:
            r = getattr(c, method)(path, {"type": "text", "body": "hi"}, format="json")
            assert r.status_code == 403, (method, path, r.content)
            assert r.json()["code"] == "account_suspended"
    assert not Post.objects.filter(author=user).exists()
    act(user, moderator, AccountActionKind.RESTORE, reason="")
    assert token_client.get("/api/v1/content/me/posts").status_code == 200


@pytest.mark.django_db
def test_a_suspended_account_cannot_log_in(user, moderator):
    suspend(user, moderator)
    r = client_for().post(
        "/api/v1/auth/token", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert r.status_code == 403 and r.json()["code"] == "account_suspended"
    # a wrong password stays the ordinary answer (nothing learnt about the account)
    r = client_for().post(
        "/api/v1/auth/token", {"username": user.username, "password": "nope"}, format="json"
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_credentials"


@pytest.mark.django_db
def test_a_suspended_moderator_is_refused_by_the_admin_login_and_loses_the_session(moderator):
    superuser = UserFactory(is_staff=True, is_superuser=True)
    c = Client()
    r = c.post("/admin/login/", {"username": moderator.username, "password": PASSWORD, "next": "/admin/"})
    assert r.status_code == 302
    assert c.get("/admin/moderation/reviewqueue/").status_code == 200
    suspend(moderator, superuser)
    r = c.get("/admin/moderation/reviewqueue/")
    assert r.status_code == 302 and "/admin/login/" in r["Location"]  # the session ended
    r = Client().post("/admin/login/", {"username": moderator.username, "password": PASSWORD})
    assert r.status_code == 200 and "_auth_user_id" not in Client().session
    assert "Please enter the correct username and password" in r.content.decode()


def _published_with_stored_variant(owner):
    post = PostFactory(author=owner, type=PostType.IMAGE, body="", published=True)
    media = MediaFactory(post=post)
    key = storage.media_key(owner.pk, media.pk, "large", "jpg")
    media.variants = {"large": {"key": key, "mime_type": "image/jpeg"}}
    media.save(update_fields=["variants"])
    storage.save(key, io.BytesIO(jpeg_bytes()), "image/jpeg")
    return post, media


@pytest.mark.django_db
def test_a_suspended_accounts_posts_and_media_are_404_to_others_at_once(user, other_user, moderator, staff):
    post, media = _published_with_stored_variant(user)
    text = PostFactory(author=user, published=True)
    url = urlsplit(
        client_for(other_user).get(f"/api/v1/content/media/{media.pk}").json()["variants"]["large"]["url"]
    )
    url = url.path + (f"?{url.query}" if url.query else "")
    assert client_for().get(url).status_code == 200  # issued and working before the suspension

    suspend(user, moderator)
    for who in (other_user, None):
        c = client_for(who)
        feed = c.get("/api/v1/content/posts").json()["results"]
        assert str(post.pk) not in {p["id"] for p in feed} and str(text.pk) not in {p["id"] for p in feed}
        for by in (user.username, str(user.pk)):
            assert c.get(f"/api/v1/content/posts?author={by}").json()["results"] == []
        for path in (f"/api/v1/content/posts/{post.pk}", f"/api/v1/content/media/{media.pk}", url):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["code"] == "not_found", (who, path)
        r = c.post(f"/api/v1/content/posts/{text.pk}/report", {"reason": "spam"}, format="json")
        assert r.status_code in (401, 404)
    # moderators still see everything
    assert client_for(staff).get(f"/api/v1/content/posts/{post.pk}").status_code == 200
    assert client_for(staff).get(url).status_code == 200

    act(user, moderator, AccountActionKind.RESTORE, reason="")
    assert client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").status_code == 200
    assert client_for().get(url).status_code == 200


@pytest.mark.django_db
def test_suspension_queues_url_revocation_for_each_published_post(
    user, moderator, broker, django_capture_on_commit_callbacks
):
    published = [PostFactory(author=user, published=True) for _ in range(2)]
    PostFactory(author=user, status=PostStatus.PENDING_REVIEW)  # not public: nothing to revoke
    with django_capture_on_commit_callbacks(execute=True):
        suspend(user, moderator)
    assert sorted(m.args for m in queued(broker, "media.urls")) == sorted((str(p.pk),) for p in published)


@pytest.mark.django_db
def test_a_suspended_accounts_exposed_media_are_rotated_by_the_revocation(user, moderator):
    """The revocation treats a suspended account's posts as hidden (it skips public posts)."""
    post, media = _published_with_stored_variant(user)
    Media.objects.filter(pk=media.pk).update(urls_exposed_at=media.created_at)
    assert revocation.media_revoke_post_urls(post_id=post.pk).rotated == []  # still public
    suspend(user, moderator)
    report = revocation.media_revoke_post_urls(post_id=post.pk)
    assert report.rotated == [str(media.pk)]
    media.refresh_from_db()
    assert media.urls_exposed_at is None and media.keys_rotated_at is not None


moto_endpoint = media_fixtures.moto_endpoint
s3_storage = media_fixtures.s3


def test_suspension_breaks_presigned_urls_on_s3(
    s3_storage, user, moderator, broker, django_capture_on_commit_callbacks
):
    post, media, _, _ = _published_image(user)
    url = client_for().get(f"/api/v1/content/media/{media.pk}").json()["variants"]["small"]["url"]
    assert "X-Amz-Signature" in url and requests.get(url, timeout=10).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        suspend(user, moderator)
    messages = queued(broker, "media.urls")
    assert [m.args for m in messages] == [(str(post.pk),)]
    revoke_actor(*messages[0].args)  # what the worker runs
    assert requests.get(url, timeout=10).status_code in (403, 404)
    assert client_for().get(f"/api/v1/content/media/{media.pk}").status_code == 404


@pytest.mark.django_db
def test_account_actions_are_not_moderation_decisions_on_posts(user, moderator):
    suspend(user, moderator)
    assert ModerationDecision.objects.count() == 0


def test_account_actions_and_mark_sensitive_notify_the_creator(db, django_capture_on_commit_callbacks):
    """DESIGN.md §10/§11: every account action and the mark-sensitive decision reach the creator as a
    notification carrying the moderator's reason."""
    from content.models import Notification

    moderator = make_moderator()
    troll = UserFactory()
    post = PostFactory(author=troll, status=PostStatus.PENDING_REVIEW, moderation_state="under_review")
    with django_capture_on_commit_callbacks(execute=True):
        services.post_mark_sensitive(post_id=post.pk, moderator=moderator, reason="graphic")
        for action in ("warn", "limit", "suspend", "restore"):
            act(troll, moderator, action, reason=f"because {action}")
    got = list(Notification.objects.filter(user=troll).order_by("created_at").values_list("type", "reason"))
    assert got == [
        ("post_marked_sensitive", "graphic"),
        ("account_warned", "because warn"),
        ("account_limited", "because limit"),
        ("account_suspended", "because suspend"),
        ("account_restored", "because restore"),
    ]
