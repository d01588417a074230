"""The creators' REST API: shapes, visibility, error bodies."""

import pytest
from django.contrib.auth import get_user_model
from django.db.models.signals import pre_save

from content.models import PostStatus
from tests.conftest import client_for
from tests.factories import PollFactory, PostFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_register_then_token():
    c = client_for()
    r = c.post(
        "/api/v1/auth/register", {"username": "newbie", "password": "a-long-pass-phrase"}, format="json"
    )
    assert r.status_code == 201 and set(r.json()) == {"id", "username", "token"}
    r2 = c.post("/api/v1/auth/token", {"username": "newbie", "password": "a-long-pass-phrase"}, format="json")
    assert r2.status_code == 200 and r2.json()["token"] == r.json()["token"]


def test_register_refuses_weak_password_and_taken_name():
    UserFactory(username="taken")
    c = client_for()
    r = c.post("/api/v1/auth/register", {"username": "someone", "password": "123"}, format="json")
    assert r.status_code == 400 and r.json()["code"] == "invalid" and "password" in r.json()["errors"]
    r = c.post(
        "/api/v1/auth/register", {"username": "TAKEN", "password": "a-long-pass-phrase"}, format="json"
    )
    assert r.status_code == 400 and "username" in r.json()["errors"]


REGISTER = "/api/v1/auth/register"
PASS = "a-long-pass-phrase"


def _register(c, username):
    return c.post(REGISTER, {"username": username, "password": PASS}, format="json")


@pytest.mark.parametrize(
    "existing, new",
    [
        ("bob", "ｂｏｂ"),  # full-width letters: NFKC makes them `bob`, and the insert used to be a 500
        ("BOB", "ｂｏｂ"),  # ... and the case of the existing name does not matter
        ("fish", "ﬁsh"),  # the `fi` ligature
        ("fish", "ＦＩＳＨ"),
        ("straße", "STRASSE"),  # an older non-ASCII name: compared by case fold (ß folds to ss)
    ],
)
def test_register_refuses_a_name_that_normalises_to_a_taken_one(existing, new):
    User = get_user_model()
    User.objects.create_user(username=existing, password=PASS)
    r = _register(client_for(), new)
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid" and r.json()["errors"] == {"username": ["This username is taken."]}
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    "name",
    [
        "ǅemal",  # a titlecase digraph (NFKC: Dž)
        "alıce",  # Turkish dotless i
        "ALİCE",  # Turkish dotted capital I
        "\u0430lice",  # Cyrillic a
        "bo\u0431",  # Cyrillic be
        "ａｌｉｃｅ\u200b",  # a zero-width space after full-width letters
        "user@example",
        "ab",
        "a" * 151,
    ],
)
def test_register_accepts_only_ascii_letters_digits_and_few_signs(name):
    r = _register(client_for(), name)
    assert r.status_code == 400 and r.json()["code"] == "invalid", (name, r.content)
    assert "ASCII letters" in r.json()["errors"]["username"][0] or len(name) > 150
    assert not get_user_model().objects.exists()


def test_register_stores_the_normalised_name_and_it_logs_in_either_way():
    c = client_for()
    r = _register(c, "Ｎew.user-name_1")
    assert r.status_code == 201 and r.json()["username"] == "New.user-name_1"
    assert get_user_model().objects.get().username == "New.user-name_1"
    r2 = c.post("/api/v1/auth/token", {"username": "Ｎｅｗ.user-name_1", "password": PASS}, format="json")
    assert r2.status_code == 200 and r2.json()["token"] == r.json()["token"]


def test_a_registration_that_loses_the_race_is_a_400_taken_not_a_500():
    """Two registrations of one name: both pass the check, the second insert hits the unique index."""
    User = get_user_model()

    def other_registration_commits_first(sender, instance, **kwargs):
        if instance.pk is None and instance.username == "racer":
            User.objects.bulk_create([User(username="racer", password="!")])  # no signals: no recursion

    pre_save.connect(other_registration_commits_first, sender=User)
    try:
        r = _register(client_for(), "racer")
    finally:
        pre_save.disconnect(other_registration_commits_first, sender=User)
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid" and r.json()["errors"] == {"username": ["This username is taken."]}
    assert not User.objects.filter(username="racer").exists()  # rolled back whole: no user without a token


def test_wrong_password_is_400_with_code(user):
    r = client_for().post(
        "/api/v1/auth/token", {"username": user.username, "password": "nope"}, format="json"
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_credentials"


def test_create_publish_read_text_post(user, platform):
    platform(moderation_mode="reactive_only")
    c = client_for(user)
    r = c.post("/api/v1/content/posts", {"type": "text", "title": "Hi", "body": "Hello"}, format="json")
    assert r.status_code == 201
    post = r.json()
    assert post["status"] == "draft" and post["author"] == {"id": user.pk, "username": user.username}
    assert set(post) >= {
        "id",
        "type",
        "status",
        "moderation_state",
        "title",
        "body",
        "link_url",
        "author",
        "media",
        "poll",
        "metadata",
        "publish_requested",
        "published_at",
        "created_at",
        "updated_at",
    }
    r = c.post(f"/api/v1/content/posts/{post['id']}/publish")
    assert r.status_code == 200 and r.json()["status"] == "published"
    r = client_for().get(f"/api/v1/content/posts/{post['id']}")
    assert r.status_code == 200 and r.json()["body"] == "Hello"


def test_publish_in_prescreen_mode_is_202(user, platform):
    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user)
    r = client_for(user).post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code == 202 and r.json()["status"] == "pending_review"


@pytest.mark.parametrize("status", ["draft", "processing", "pending_review", "quarantined", "rejected"])
def test_hidden_statuses_are_404_for_others_visible_to_owner_and_staff(status, user, other_user, staff):
    post = PostFactory(author=user, status=status)
    url = f"/api/v1/content/posts/{post.pk}"
    assert client_for().get(url).status_code == 404
    assert client_for(other_user).get(url).status_code == 404
    assert client_for(user).get(url).status_code == 200
    assert client_for(staff).get(url).status_code == 200


def test_published_is_public_and_deleted_is_gone(user):
    post = PostFactory(author=user, published=True)
    url = f"/api/v1/content/posts/{post.pk}"
    assert client_for().get(url).status_code == 200
    assert client_for(user).delete(url).status_code == 204
    assert client_for(user).get(url).status_code == 404
    assert client_for(user).delete(url).status_code == 404


def test_anonymous_writes_are_401(user):
    post = PostFactory(author=user, published=True)
    assert (
        client_for().post("/api/v1/content/posts", {"type": "text", "body": "x"}, format="json").status_code
        == 401
    )
    r = client_for().delete(f"/api/v1/content/posts/{post.pk}")
    assert r.status_code == 401 and r.json()["code"] == "not_authenticated"


def test_feed_newest_first_filters_and_cursor(user, other_user):
    for i in range(5):
        PostFactory(author=user, published=True, title=f"u{i}")
    PostFactory(author=other_user, published=True, type="link", link_url="https://example.com", title="link")
    PostFactory(author=user, status="draft")
    c = client_for()
    r = c.get("/api/v1/content/posts?page_size=4")
    body = r.json()
    assert [p["title"] for p in body["results"]] == ["link", "u4", "u3", "u2"]
    assert body["next"]
    r2 = c.get(body["next"])
    assert [p["title"] for p in r2.json()["results"]] == ["u1", "u0"]
    assert [p["title"] for p in c.get("/api/v1/content/posts?type=link").json()["results"]] == ["link"]
    by_author = c.get(f"/api/v1/content/posts?author={other_user.username}").json()["results"]
    assert [p["title"] for p in by_author] == ["link"]
    assert c.get("/api/v1/content/posts?type=bogus").json()["code"] == "invalid"


def test_me_posts_lists_every_status_with_filter(user, other_user):
    PostFactory(author=user, status="draft", title="d")
    PostFactory(author=user, published=True, title="p")
    PostFactory(author=other_user, status="draft", title="other")
    c = client_for(user)
    assert sorted(p["title"] for p in c.get("/api/v1/content/me/posts").json()["results"]) == ["d", "p"]
    assert [p["title"] for p in c.get("/api/v1/content/me/posts?status=draft").json()["results"]] == ["d"]
    assert client_for().get("/api/v1/content/me/posts").status_code == 401


def test_patch_draft_in_place_published_as_a_revision_and_refuse_quarantined(user):
    draft = PostFactory(author=user)
    c = client_for(user)
    r = c.patch(f"/api/v1/content/posts/{draft.pk}", {"title": "New"}, format="json")
    assert r.status_code == 200 and r.json()["title"] == "New"
    published = PostFactory(author=user, published=True, title="Old")
    r = c.patch(f"/api/v1/content/posts/{published.pk}", {"title": "New"}, format="json")
    # ai_prescreen (the default): the public keeps the old title; the owner sees the waiting edit.
    assert r.status_code == 200 and r.json()["title"] == "Old", r.content
    assert r.json()["pending_revision"]["title"] == "New"
    quarantined = PostFactory(author=user, status="quarantined")
    r = c.patch(f"/api/v1/content/posts/{quarantined.pk}", {"title": "New"}, format="json")
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"


def test_poll_vote_api_shows_counts_and_my_votes(user):
    poll = PollFactory(post__status=PostStatus.PUBLISHED, multiple_choice=True)
    a, b, _ = poll.options.all()
    c = client_for(user)
    r = c.post(f"/api/v1/content/posts/{poll.post.pk}/poll/vote", {"option_ids": [a.id, b.id]}, format="json")
    assert r.status_code == 200
    assert r.json()["my_votes"] == [a.id, b.id] and r.json()["total_voters"] == 1
    post = c.get(f"/api/v1/content/posts/{poll.post.pk}").json()
    assert post["poll"]["options"][0]["votes"] == 1 and post["poll"]["my_votes"] == [a.id, b.id]


def test_report_api(user):
    post = PostFactory(published=True)
    c = client_for(user)
    r = c.post(f"/api/v1/content/posts/{post.pk}/report", {"reason": "spam", "detail": "ads"}, format="json")
    assert r.status_code == 201
    r = c.post(f"/api/v1/content/posts/{post.pk}/report", {"reason": "spam"}, format="json")
    assert r.status_code == 409 and r.json()["code"] == "already_reported"
    r = c.post(f"/api/v1/content/posts/{post.pk}/report", {"reason": "nonsense"}, format="json")
    assert r.status_code == 400 and "reason" in r.json()["errors"]


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"{not json", "application/json"),
        (b'{"type": 5, "body": []}', "application/json"),
        (b'{"type": "essay", "body": "x"}', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'{"type": "text", "body": "' + b"x" * 50_000 + b'"}', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"type=text", "text/plain"),
    ],
)
def test_bad_input_is_a_clean_4xx(user, body, content_type):
    r = client_for(user).generic("POST", "/api/v1/content/posts", body, content_type=content_type)
    assert 400 <= r.status_code < 500
    data = r.json()
    assert data["code"] and data["detail"]


def test_huge_body_is_413(user):
    body = b'{"type": "text", "body": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = client_for(user).generic("POST", "/api/v1/content/posts", body, content_type="application/json")
    assert r.status_code == 413 and r.json()["code"] == "request_too_large"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/content/posts/not-a-uuid", "/api/v1/content/posts/123/publish", "/api/v1/content/nothing-here"],
)
def test_bad_ids_and_unknown_paths_are_json_404(user, path):
    r = client_for(user).get(path)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_schema_builds_without_warnings_and_docs_are_offline(capsys):
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert not GENERATOR_STATS  # no warnings or errors
    paths = schema["paths"]
    assert "/api/v1/content/posts/{post_id}/publish" in paths
    assert "409" in paths["/api/v1/content/posts/{post_id}/publish"]["post"]["responses"]
    r = client_for().get("/api/v1/docs/")
    assert (
        r.status_code == 200
        and b"cdn" not in r.content.lower()
        and b"/static/drf_spectacular_sidecar" in r.content
    )
    assert client_for().get("/api/v1/schema/").status_code == 200
