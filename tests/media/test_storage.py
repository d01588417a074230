"""The storage seam: canonical keys, who may fetch which bytes, and revoking URLs of hidden posts on
S3 (issue 9 rows 2, 9 and 11) — the S3 cases against moto's S3 server, in this process."""

from __future__ import annotations

import io
import time
from urllib.parse import urlsplit

import pytest
import requests
from django.core import signing

from content import services as content_services
from content.models import PostStatus, PostType
from media import revocation, storage
from media.models import Media
from media.tasks.urls import media_revoke_post_urls as revoke_actor
from moderation import services as moderation_services
from tests.conftest import client_for, queued
from tests.factories import MediaFactory, PostFactory, UserFactory
from tests.media.helpers import jpeg_bytes, png_bytes

pytestmark = pytest.mark.django_db


# --- canonical keys (row 11) ------------------------------------------------------------------------------

TRAVERSALS = [
    "media/1/{m}/../../2/victim/original.jpg",
    "media/1/{m}/./original.jpg",
    "media/1/{m}//original.jpg",
    "media/1/{m}/",
    "/media/1/{m}/original.jpg",
    "media\\1\\{m}\\original.jpg",
    "media/1/{m}/..\\..\\2/original.jpg",
    "media/1/{m}/%2e%2e/%2e%2e/2/victim/original.jpg",
    "media/1/{m}/%2E%2E%2F2/original.jpg",
    "media/1/{m}/original.jpg\x00.png",
    "media/1/{m}/orig inal.jpg",
    "",
]


@pytest.mark.parametrize("key", TRAVERSALS)
def test_clean_key_refuses_anything_not_canonical(key):
    key = key.format(m="abc")
    with pytest.raises(storage.InvalidKey):
        storage.clean_key(key)
    assert not storage.key_belongs_to(key, user_id=1, media_id="abc")


def test_clean_key_accepts_what_the_seam_makes():
    for key in (
        storage.media_key(7, "0b7a-ff", "original", "jpg"),
        storage.upload_key(7, "0b7a-ff"),
        storage.rotated_key(storage.media_key(7, "m", "thumb", ".webp"), user_id=7, media_id="m"),
    ):
        assert storage.clean_key(key) == key
    assert storage.key_belongs_to("media/7/m/abc123/thumb.webp", user_id=7, media_id="m")
    assert not storage.key_belongs_to("media/7/m2/thumb.webp", user_id=7, media_id="m")
    assert not storage.key_belongs_to("media/77/m/thumb.webp", user_id=7, media_id="m")


def _token(key: str, media_id) -> str:
    """A URL token as the server signs it (what a leaked SECRET_KEY or a bug could produce)."""
    return signing.Signer(salt="postflow.media-url").sign_object(
        {"k": key, "m": str(media_id), "t": "image/jpeg", "f": "x.jpg", "e": int(time.time()) + 600},
        compress=True,
    )


@pytest.mark.parametrize("template", [t for t in TRAVERSALS if t.startswith("media/1/{m}/")])
def test_signed_key_is_normalised_before_it_is_compared(template, other_user):
    """A token whose key starts with the medium's folder but walks out of it serves nothing, even
    when the signature is good: before the fix the first case served the victim's private original."""
    owner = UserFactory()
    post = PostFactory(author=owner, type=PostType.IMAGE, body="", published=True)
    media = MediaFactory(post=post, owner=owner)
    victim = MediaFactory(post=PostFactory(author=other_user, type=PostType.IMAGE, body=""))
    victim.original_key = storage.media_key(other_user.pk, victim.pk, "original", "jpg")
    victim.save(update_fields=["original_key"])
    secret = jpeg_bytes(color=(1, 2, 3))
    storage.save(victim.original_key, io.BytesIO(secret), "image/jpeg")
    prefix = storage.media_prefix(owner.pk, media.pk)
    key = template.replace("media/1/{m}/", prefix).replace("2/victim", f"{other_user.pk}/{victim.pk}")
    r = client_for().get(f"/m/{_token(key, media.pk)}")
    assert r.status_code in (403, 404)
    assert secret not in b"".join(getattr(r, "streaming_content", [r.content]))


def test_a_key_of_the_medium_that_is_not_one_of_its_current_keys_is_not_served(user):
    post = PostFactory(author=user, type=PostType.IMAGE, body="", published=True)
    media = MediaFactory(post=post)
    stray = storage.media_key(user.pk, media.pk, "leftover", "jpg")
    storage.save(stray, io.BytesIO(jpeg_bytes()), "image/jpeg")
    assert client_for(user).get(f"/m/{_token(stray, media.pk)}").status_code == 404


# --- originals are owner/staff only (row 9) ---------------------------------------------------------------


def _published_image(user):
    post = PostFactory(author=user, type=PostType.IMAGE, body="", published=True)
    media = MediaFactory(post=post)
    media.original_key = storage.media_key(user.pk, media.pk, "original", "jpg")
    media.variants = {
        "small": {"key": storage.media_key(user.pk, media.pk, "small", "png"), "mime_type": "image/png"}
    }
    media.save(update_fields=["original_key", "variants"])
    original, small = jpeg_bytes(color=(9, 9, 9)), png_bytes()
    storage.save(media.original_key, io.BytesIO(original), "image/jpeg")
    storage.save(media.variants["small"]["key"], io.BytesIO(small), "image/png")
    return post, media, original, small


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_original_of_a_published_post_is_served_only_to_owner_and_staff(user, other_user, staff):
    post, media, original, small = _published_image(user)
    owner_view = client_for(user).get(f"/api/v1/content/media/{media.pk}").json()
    original_url = urlsplit(owner_view["original_url"]).path
    for who in (None, other_user):
        r = client_for(who).get(original_url)
        assert r.status_code == 404, who
    for who in (user, staff):
        r = client_for(who).get(original_url)
        assert r.status_code == 200 and _body(r) == original
        assert r["Cache-Control"] == "private, no-store"
    session = client_for()
    session.force_login(user)
    assert session.get(original_url).status_code == 200
    # the variants of the published post stay public
    variant = urlsplit(
        client_for().get(f"/api/v1/content/media/{media.pk}").json()["variants"]["small"]["url"]
    )
    r = client_for(other_user).get(variant.path)
    assert r.status_code == 200 and _body(r) == small and r["Cache-Control"].startswith("public")


def test_filesystem_urls_are_never_marked_exposed(user):
    _, media, _, _ = _published_image(user)
    assert client_for().get(f"/api/v1/content/media/{media.pk}").status_code == 200
    media.refresh_from_db()
    assert media.urls_exposed_at is None  # Django checks every request: nothing to rotate
    assert revocation.media_rotate_keys(media_id=media.pk) == 0


# --- S3: revoking presigned URLs by rotating keys (row 2) -------------------------------------------------


def _keys(s3) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket).get("Contents", [])}


def _public_variant_url(media) -> str:
    url = client_for().get(f"/api/v1/content/media/{media.pk}").json()["variants"]["small"]["url"]
    assert "X-Amz-Signature" in url
    return url


def _quarantine(post, staff):
    moderation_services.post_quarantine(post_id=post.pk, moderator=staff, reason="test")


def _reject(post, staff):
    moderation_services.post_reject(post_id=post.pk, moderator=staff, reason="test")


def _unpublish(post, staff):
    content_services.post_unpublish(post_id=post.pk, actor=post.author)


def _delete(post, staff):
    content_services.post_delete(post_id=post.pk, actor=post.author)


def _reported(post, staff):
    for _ in range(3):
        content_services.report_create(post_id=post.pk, reporter=UserFactory(), reason="spam")


@pytest.mark.parametrize("hide", [_quarantine, _reject, _unpublish, _delete, _reported])
def test_hiding_a_post_breaks_presigned_urls_on_s3(
    hide, s3, user, staff, broker, django_capture_on_commit_callbacks
):
    post, media, original, small = _published_image(user)
    url = _public_variant_url(media)
    assert requests.get(url, timeout=10).status_code == 200
    media.refresh_from_db()
    assert media.urls_exposed_at is not None
    old_keys = {media.original_key, media.variants["small"]["key"]}

    with django_capture_on_commit_callbacks(execute=True):
        hide(post, staff)
    post.refresh_from_db()
    assert post.status != PostStatus.PUBLISHED or post.deleted_at is not None
    messages = queued(broker, "media.urls")
    assert [m.args for m in messages] == [(str(post.pk),)]
    revoke_actor(*messages[0].args)  # what the worker runs

    assert requests.get(url, timeout=10).status_code in (403, 404)
    media.refresh_from_db()
    assert media.urls_exposed_at is None and media.keys_rotated_at is not None and media.stale_keys == []
    new_keys = {media.original_key, media.variants["small"]["key"]}
    assert not old_keys & new_keys and _keys(s3) == new_keys
    assert all(storage.key_belongs_to(k, user_id=user.pk, media_id=media.pk) for k in new_keys)
    # the owner and staff get working URLs for the new keys, with the same bytes
    if post.deleted_at is None:
        for who in (user, staff):
            data = client_for(who).get(f"/api/v1/content/media/{media.pk}").json()
            r = client_for(who).get(urlsplit(data["variants"]["small"]["url"]).path)
            assert r.status_code == 200 and _body(r) == small
            r = client_for(who).get(urlsplit(data["original_url"]).path)
            assert r.status_code == 200 and _body(r) == original
        assert client_for().get(f"/api/v1/content/media/{media.pk}").status_code == 404


def test_rotation_is_idempotent_and_skips_public_posts(s3, user, staff):
    post, media, _, small = _published_image(user)
    url = _public_variant_url(media)
    # still public: a stray message changes nothing
    assert revocation.media_revoke_post_urls(post_id=post.pk).rotated == []
    assert requests.get(url, timeout=10).status_code == 200
    _quarantine(post, staff)
    first = revocation.media_revoke_post_urls(post_id=post.pk)
    assert first.rotated == [str(media.pk)] and first.objects == 2
    media.refresh_from_db()
    keys = (media.original_key, dict(media.variants))
    second = revocation.media_revoke_post_urls(post_id=post.pk)
    media.refresh_from_db()
    assert second.rotated == [] and (media.original_key, media.variants) == keys
    assert storage.read_head(media.variants["small"]["key"], len(small)) == small


def test_interrupted_rotation_deletes_the_old_objects_next_time(s3, user, staff):
    """A run that committed new keys but died before deleting the old objects leaves them in
    ``stale_keys`` with the mark still set: the next run deletes them."""
    post, media, _, _ = _published_image(user)
    url = _public_variant_url(media)
    _quarantine(post, staff)
    media.refresh_from_db()
    old = media.variants["small"]["key"]
    new = storage.rotated_key(old, user_id=user.pk, media_id=media.pk)
    storage.copy(old, new)
    Media.objects.filter(pk=media.pk).update(
        variants={"small": {**media.variants["small"], "key": new}}, stale_keys=[old]
    )
    assert requests.get(url, timeout=10).status_code == 200  # the crash window
    revocation.media_revoke_overdue(grace=revocation.timedelta(0))
    assert requests.get(url, timeout=10).status_code in (403, 404)
    assert old not in _keys(s3)
    assert Media.objects.get(pk=media.pk).urls_exposed_at is None


def test_lost_message_is_caught_by_the_safety_net(s3, user, staff, broker):
    """Broker down at commit: nothing was queued, the mark says URLs are out there."""
    post, media, _, _ = _published_image(user)
    url = _public_variant_url(media)
    _quarantine(post, staff)  # on-commit callbacks never run here: the message is lost
    assert queued(broker, "media.urls") == []
    assert revocation.media_revoke_overdue().rotated == []  # within the grace the message has the job
    assert requests.get(url, timeout=10).status_code == 200
    report = revocation.media_revoke_overdue(grace=revocation.timedelta(0))
    assert report.rotated == [str(media.pk)]
    assert requests.get(url, timeout=10).status_code in (403, 404)


def test_no_public_url_is_issued_for_keys_of_a_post_hidden_meanwhile(s3, user, staff):
    """The mark and the check that the post is still public are one statement: a serializer that read
    the post as published before it was hidden issues a Django URL, not a bearer one."""
    post, media, _, _ = _published_image(user)
    stale = Media.objects.select_related("post").get(pk=media.pk)  # read while published
    _quarantine(post, staff)
    assert revocation.media_mark_urls_exposed(stale) is False
    assert Media.objects.get(pk=media.pk).urls_exposed_at is None


def test_s3_seam_uses_public_api_round_trip(s3, tmp_path):
    key = storage.media_key(1, "m", "clip", "mp4")
    storage.save(key, io.BytesIO(b"x" * 10), "video/mp4")
    assert storage.exists(key) and storage.size(key) == 10
    assert s3.head_object(Bucket=s3.bucket, Key=key)["ContentType"] == "video/mp4"
    assert storage.read_head(key, 4) == b"xxxx"
    assert storage.download_to(key, tmp_path / "c.mp4").read_bytes() == b"x" * 10
    copy = storage.rotated_key(key, user_id=1, media_id="m")
    storage.copy(key, copy)
    assert s3.head_object(Bucket=s3.bucket, Key=copy)["ContentType"] == "video/mp4"
    assert b"".join(storage.open_for_response(copy)) == b"x" * 10
    assert storage.delete_media_objects(1, "m") == 2 and _keys(s3) == set()
    with pytest.raises(FileNotFoundError):
        storage.open_for_response(key)
    with pytest.raises(storage.InvalidKey):
        storage.save("media/1/m/../../etc/passwd", io.BytesIO(b"x"))
