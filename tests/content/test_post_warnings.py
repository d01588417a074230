"""Post ``sensitive`` and ``spoiler_text`` (content warnings, DESIGN §9) on create and draft edits."""

import pytest

from content.models import Post
from tests.conftest import client_for
from tests.factories import PostFactory

pytestmark = pytest.mark.django_db


def test_create_with_content_warning_and_read_back(user, platform):
    platform(moderation_mode="reactive_only")
    c = client_for(user)
    r = c.post(
        "/api/v1/content/posts",
        {"type": "text", "body": "Spoilers ahead", "sensitive": True, "spoiler_text": "Ending of the film"},
        format="json",
    )
    assert r.status_code == 201, r.json()
    assert (r.json()["sensitive"], r.json()["spoiler_text"]) == (True, "Ending of the film")
    row = Post.objects.get(pk=r.json()["id"])
    assert (row.sensitive, row.spoiler_text) == (True, "Ending of the film")
    assert c.post(f"/api/v1/content/posts/{row.pk}/publish").status_code == 200
    public = client_for().get(f"/api/v1/content/posts/{row.pk}").json()
    assert (public["sensitive"], public["spoiler_text"]) == (True, "Ending of the film")


def test_defaults_and_draft_edit(user):
    c = client_for(user)
    r = c.post("/api/v1/content/posts", {"type": "text", "body": "x"}, format="json")
    assert (r.json()["sensitive"], r.json()["spoiler_text"]) == (False, "")
    pid = r.json()["id"]
    r = c.patch(
        f"/api/v1/content/posts/{pid}", {"sensitive": True, "spoiler_text": "CW: food"}, format="json"
    )
    assert r.status_code == 200 and (r.json()["sensitive"], r.json()["spoiler_text"]) == (True, "CW: food")
    r = c.patch(f"/api/v1/content/posts/{pid}", {"spoiler_text": ""}, format="json")
    assert r.status_code == 200 and (r.json()["sensitive"], r.json()["spoiler_text"]) == (True, "")


def test_spoiler_text_longer_than_500_is_400(user):
    c = client_for(user)
    r = c.post(
        "/api/v1/content/posts", {"type": "text", "body": "x", "spoiler_text": "w" * 501}, format="json"
    )
    assert r.status_code == 400 and "spoiler_text" in r.json()["errors"]
    post = PostFactory(author=user)
    r = c.patch(f"/api/v1/content/posts/{post.pk}", {"spoiler_text": "w" * 501}, format="json")
    assert r.status_code == 400 and "spoiler_text" in r.json()["errors"]
    r = c.patch(f"/api/v1/content/posts/{post.pk}", {"sensitive": "perhaps"}, format="json")
    assert r.status_code == 400 and "sensitive" in r.json()["errors"]
