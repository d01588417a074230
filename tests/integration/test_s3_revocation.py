"""Issue 9 rows 2 and 9 on the production shape (gunicorn, rundramatiq, PostgreSQL, Redis, moto S3):
presigned URLs of a post that leaves ``published`` stop working once the worker rotated the keys,
and originals are never a bearer URL."""

import pytest
import requests

from tests.integration.stack import wait_for
from tests.integration.test_system import create_post, jpeg_with_gps

pytestmark = pytest.mark.integration


def _published_image(stack, s) -> tuple[str, str]:
    post_id = create_post(s, "image")
    r = s.post(
        f"{s.base}/api/v1/content/posts/{post_id}/media",
        files={"file": ("a.jpg", jpeg_with_gps(400, 300), "image/jpeg")},
    )
    assert r.status_code == 201, r.text
    media_id = r.json()["id"]
    assert s.post(f"{s.base}/api/v1/content/posts/{post_id}/publish").status_code in (200, 202)
    stack.wait_media(media_id)
    wait_for(
        lambda: s.get(f"{s.base}/api/v1/content/posts/{post_id}").json()["status"] == "published",
        timeout=30,
        what="published",
    )
    return post_id, media_id


def _quarantine(stack, s, post_id):
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model as g; "
        "from moderation.services import post_quarantine; "
        "u, _ = g().objects.get_or_create(username='it-moderator', defaults={'is_staff': True}); "
        f"post_quarantine(post_id='{post_id}', moderator=u, reason='integration')",
    )


def _unpublish(stack, s, post_id):
    assert s.post(f"{s.base}/api/v1/content/posts/{post_id}/unpublish").status_code == 200


def _delete(stack, s, post_id):
    assert s.delete(f"{s.base}/api/v1/content/posts/{post_id}").status_code == 204


@pytest.mark.parametrize("hide", [_quarantine, _unpublish, _delete])
def test_presigned_urls_stop_working_when_the_post_is_hidden(stack, hide):
    s = stack.session()
    post_id, media_id = _published_image(stack, s)
    media = requests.get(f"{s.base}/api/v1/content/media/{media_id}").json()  # anonymous viewer
    url = media["variants"]["thumb"]["url"]
    assert "X-Amz-Signature" in url
    got = requests.get(url, timeout=10)
    assert got.status_code == 200
    thumb = got.content

    hide(stack, s, post_id)
    wait_for(
        lambda: requests.get(url, timeout=10).status_code in (403, 404),
        timeout=30,
        what="the presigned URL to stop working",
    )
    assert requests.get(f"{s.base}/api/v1/content/posts/{post_id}").status_code == 404
    exposed = stack.sql("SELECT urls_exposed_at, keys_rotated_at FROM media_media WHERE id = %s", media_id)
    assert exposed[0][0] is None and exposed[0][1] is not None
    if hide is _delete:
        return
    # the owner gets working URLs for the new keys; the bytes are intact
    mine = s.get(f"{s.base}/api/v1/content/media/{media_id}").json()
    fresh = mine["variants"]["thumb"]["url"]
    assert fresh != url and "X-Amz-Signature" not in fresh  # hidden: served through Django
    r = s.get(fresh)
    assert r.status_code == 200 and r.content == thumb
    assert requests.get(fresh).status_code == 404
    assert s.get(mine["original_url"]).status_code == 200


def test_original_of_a_published_post_is_owner_only_on_s3(stack):
    s, stranger = stack.session(), stack.session()
    post_id, media_id = _published_image(stack, s)
    original_url = s.get(f"{s.base}/api/v1/content/media/{media_id}").json()["original_url"]
    assert original_url and "X-Amz-Signature" not in original_url
    r = s.get(original_url)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "private, no-store"
    assert r.content[:2] == b"\xff\xd8"
    assert stranger.get(original_url).status_code == 404
    assert requests.get(original_url).status_code == 404
