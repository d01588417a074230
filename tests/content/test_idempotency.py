"""Idempotency-Key on every authenticated POST (DESIGN §9; content/idempotency.py)."""

import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from content.models import IdempotencyKey, Post
from media.models import Media
from tests.conftest import client_for
from tests.factories import PostFactory, UserFactory
from tests.media.helpers import jpeg_bytes, png_bytes, upload_file

pytestmark = pytest.mark.django_db

POSTS = "/api/v1/content/posts"


def _create(client, key, body=None, **extra):
    return client.post(
        POSTS, body or {"type": "text", "body": "hello"}, format="json", HTTP_IDEMPOTENCY_KEY=key, **extra
    )


def test_same_key_and_body_replays_the_first_response(user):
    c = client_for(user)
    first = _create(c, "retry-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    again = _create(c, "retry-1")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Post.objects.filter(author=user).count() == 1
    # JSON compared by value: another key order is the same request.
    reordered = c.post(
        POSTS,
        '{"body": "hello", "type": "text"}',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="retry-1",
    )
    assert reordered.status_code == 201 and reordered["Idempotent-Replayed"] == "true"
    assert Post.objects.filter(author=user).count() == 1


def test_same_key_other_body_is_422(user):
    c = client_for(user)
    assert _create(c, "k").status_code == 201
    r = _create(c, "k", {"type": "text", "body": "something else"})
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    r = c.post(f"{POSTS}/{Post.objects.get().pk}/publish", HTTP_IDEMPOTENCY_KEY="k")  # other path
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert Post.objects.filter(author=user).count() == 1


def test_keys_are_per_user(user, other_user):
    assert _create(client_for(user), "shared").status_code == 201
    r = _create(client_for(other_user), "shared")
    assert r.status_code == 201 and "Idempotent-Replayed" not in r
    assert Post.objects.count() == 2


def test_in_flight_key_is_409(user):
    now = timezone.now()
    IdempotencyKey.objects.create(
        user=user, key="busy", locked_until=now + timedelta(minutes=5), expires_at=now + timedelta(hours=24)
    )
    r = _create(client_for(user), "busy")
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_use"
    assert not Post.objects.exists()


def test_abandoned_claim_is_taken_over(user):
    now = timezone.now()
    IdempotencyKey.objects.create(
        user=user,
        key="crashed",
        locked_until=now - timedelta(seconds=1),
        expires_at=now + timedelta(hours=24),
    )
    r = _create(client_for(user), "crashed")
    assert r.status_code == 201
    assert IdempotencyKey.objects.get(user=user, key="crashed").state == "done"


def test_errors_below_500_are_replayed_too(user):
    c = client_for(user)
    bad = _create(c, "v", {"type": "text", "body": ""})
    assert bad.status_code == 400
    again = _create(c, "v", {"type": "text", "body": ""})
    assert again.status_code == 400 and again["Idempotent-Replayed"] == "true"
    assert again.json() == bad.json()


def test_every_post_endpoint_takes_part(user, platform):
    platform(moderation_mode="reactive_only")
    c = client_for(user)
    post = PostFactory(author=user, body="text")
    first = c.post(f"{POSTS}/{post.pk}/publish", HTTP_IDEMPOTENCY_KEY="pub")
    assert first.status_code == 200 and first.json()["status"] == "published"
    # Unpublished meanwhile: a retry of the publish is answered from the store; it does not run again.
    assert c.post(f"{POSTS}/{post.pk}/unpublish").status_code == 200
    again = c.post(f"{POSTS}/{post.pk}/publish", HTTP_IDEMPOTENCY_KEY="pub")
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    post.refresh_from_db()
    assert post.status == "draft"


def test_multipart_attach_is_idempotent_without_reading_the_body_into_memory(user):
    c = client_for(user)
    post = PostFactory(author=user, type="image", body="")
    url = f"{POSTS}/{post.pk}/media"
    data = jpeg_bytes()
    first = c.post(url, {"file": upload_file("a.jpg", data)}, HTTP_IDEMPOTENCY_KEY="up")
    assert first.status_code == 201, first.json()
    again = c.post(url, {"file": upload_file("a.jpg", data)}, HTTP_IDEMPOTENCY_KEY="up")
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = c.post(url, {"file": upload_file("b.png", png_bytes())}, HTTP_IDEMPOTENCY_KEY="up")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Media.objects.filter(post=post).count() == 1


@pytest.mark.parametrize("key", ["", " ", "k" * 256])
def test_bad_keys_are_400(user, key):
    r = _create(client_for(user), key)
    assert r.status_code == 400 and r.json()["code"] == "invalid_idempotency_key"
    assert not Post.objects.exists()


def test_anonymous_posts_ignore_the_key():
    c = client_for()
    body = {"username": "fresh", "password": "a-long-pass-phrase"}
    first = c.post("/api/v1/auth/register", body, format="json", HTTP_IDEMPOTENCY_KEY="reg")
    assert first.status_code == 201
    again = c.post("/api/v1/auth/register", body, format="json", HTTP_IDEMPOTENCY_KEY="reg")
    assert again.status_code == 400 and "Idempotent-Replayed" not in again
    assert not IdempotencyKey.objects.exists()  # no token is ever stored


def test_expired_keys_run_again_and_are_purged(user):
    c = client_for(user)
    assert _create(c, "old").status_code == 201
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    r = _create(c, "old")
    assert r.status_code == 201 and "Idempotent-Replayed" not in r
    assert Post.objects.filter(author=user).count() == 2
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    keep = UserFactory()
    _create(client_for(keep), "fresh")
    call_command("purge_media")
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor == "sqlite", reason="concurrent claims need PostgreSQL")
def test_two_identical_requests_at_once_run_once(monkeypatch):
    """Eight threads send the same POST with one key at once; the view is slowed so they overlap.
    Exactly one post is created; every other answer is 409 in flight or the replayed 201."""
    from content import services

    real = services.post_create

    def slow_create(**kwargs):
        time.sleep(0.3)
        return real(**kwargs)

    monkeypatch.setattr(services, "post_create", slow_create)
    user = UserFactory()
    barrier = threading.Barrier(8)
    answers: list[tuple[int, str | None, str | None]] = []

    def send():
        try:
            barrier.wait()
            r = _create(client_for(user), "race")
            answers.append((r.status_code, r.get("Idempotent-Replayed"), r.json().get("id")))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Post.objects.filter(author=user).count() == 1
    created = [a for a in answers if a[0] == 201 and a[1] is None]
    assert len(created) == 1, answers
    assert all(a[0] == 409 or (a[0] == 201 and a[1] == "true") for a in answers if a not in created), answers
    assert {a[2] for a in answers if a[0] == 201} == {str(Post.objects.get().pk)}
