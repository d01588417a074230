"""Link preview cards (DESIGN §9): parsed with lxml, fetched through the guarded client on queue
``links``, the image a thumbnail processed and prescreened with the post."""

from urllib.parse import urlsplit

import dramatiq
import pytest

from content.linkpreview import parse_card
from content.models import Post
from media.models import Media
from tests.conftest import client_for, queued
from tests.factories import UserFactory
from tests.httpserver import LocalServer
from tests.media.helpers import jpeg_bytes

ARTICLE = b"""<!doctype html><html><head>
<meta charset="utf-8"><title>Fallback title</title>
<meta property="og:title" content="  The   Real Title ">
<meta property="og:description" content="What the page is about.">
<meta property="og:site_name" content="Example News">
<meta property="og:image" content="/img/cover.jpg">
<meta name="twitter:title" content="Twitter title">
</head><body><p>Hello</p></body></html>"""


# --- parsing -----------------------------------------------------------------------------------------
def test_parse_opengraph_first_and_resolve_the_image():
    card = parse_card(ARTICLE, "https://news.example/a/b.html")
    assert (card.title, card.description, card.site_name) == (
        "The Real Title",
        "What the page is about.",
        "Example News",
    )
    assert card.image_url == "https://news.example/img/cover.jpg"


def test_parse_falls_back_to_twitter_then_title():
    twitter = b'<html><head><meta name="twitter:title" content="TT"><meta name="twitter:image" content="https://cdn.example/i.png"><title>T</title></head></html>'
    card = parse_card(twitter, "https://x.example/")
    assert (card.title, card.image_url, card.site_name) == ("TT", "https://cdn.example/i.png", "x.example")
    plain = b"<html><head><title>\n Just a title </title><meta name=description content=Desc></head></html>"
    card = parse_card(plain, "https://y.example/p")
    assert (card.title, card.description, card.image_url) == ("Just a title", "Desc", "")


@pytest.mark.parametrize(
    "html", [b"", b"\x00\xff\xfe", b"<meta property='og:image' content='javascript:alert(1)'>"]
)
def test_parse_never_raises_and_drops_non_http_images(html):
    card = parse_card(html, "https://z.example/")
    assert card.image_url == ""


def test_parse_caps_lengths():
    long = b'<meta property="og:title" content="' + b"t" * 5000 + b'">'
    assert len(parse_card(long, "https://z.example/").title) == 300


# --- the worker --------------------------------------------------------------------------------------
@pytest.fixture
def site():
    with LocalServer() as s:
        s.route("/article", body=ARTICLE)
        s.route("/img/cover.jpg", body=jpeg_bytes(400, 300), content_type="image/jpeg")
        s.route("/data.json", body=b"{}", content_type="application/json")
        yield s


def _run_links(broker, worker):
    broker.join("links", timeout=30_000)
    broker.join("media.image", timeout=60_000)
    worker.join()


@pytest.mark.django_db(transaction=True)
def test_link_post_gets_a_card_with_a_processed_image(site, broker, worker, settings, platform):
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    platform(moderation_mode="reactive_only")
    user = UserFactory()
    c = client_for(user)
    r = c.post("/api/v1/content/posts", {"type": "link", "link_url": site.url("/article")}, format="json")
    assert r.status_code == 201
    post_id = r.json()["id"]
    _run_links(broker, worker)
    data = c.get(f"/api/v1/content/posts/{post_id}").json()
    preview = data["metadata"]["link_preview"]
    assert (preview["url"], preview["title"], preview["site_name"]) == (
        site.url("/article"),
        "The Real Title",
        "Example News",
    )
    assert preview["description"] == "What the page is about."
    image = preview["image"]
    assert image["kind"] == "thumbnail" and image["processing_status"] == "ready"
    assert image["variants"] and image["width"] == 400
    assert data["media"] == [] and data["metadata"]["media_count"] == 0
    thumb = Media.objects.get(pk=image["id"])
    assert (thumb.kind, thumb.is_primary, thumb.post_id) == ("thumbnail", False, Post.objects.get().pk)
    # Hidden while the post is a draft: nobody else gets the card's image or its bytes.
    variant_url = urlsplit(next(iter(image["variants"].values()))["url"]).path
    assert client_for().get(f"/api/v1/content/media/{thumb.pk}").status_code == 404
    assert client_for(UserFactory()).get(variant_url).status_code == 404
    # Published: everyone sees the card and its image.
    assert c.post(f"/api/v1/content/posts/{post_id}/publish").status_code == 200
    public = client_for().get(f"/api/v1/content/posts/{post_id}").json()
    assert public["metadata"]["link_preview"]["image"]["id"] == str(thumb.pk)
    assert (
        client_for()
        .get(
            urlsplit(next(iter(public["metadata"]["link_preview"]["image"]["variants"].values()))["url"]).path
        )
        .status_code
        == 200
    )


@pytest.mark.django_db(transaction=True)
def test_the_preview_image_is_prescreened_with_the_post(site, broker, worker, settings, stub_ai, tmp_path):
    from moderation.review import build_input

    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    settings.AI_STUB_SCORE = 0.5  # between the thresholds: held for a human
    user = UserFactory()
    c = client_for(user)
    post_id = c.post(
        "/api/v1/content/posts", {"type": "link", "link_url": site.url("/article")}, format="json"
    ).json()["id"]
    _run_links(broker, worker)
    thumb = Media.objects.get(post_id=post_id, kind="thumbnail")
    item = build_input(Post.objects.get(pk=post_id), tmp_path)
    assert [p.name.split("-img")[0] for p in item.image_paths] == [str(thumb.pk)]
    r = c.post(f"/api/v1/content/posts/{post_id}/publish")
    assert r.status_code == 202 and r.json()["status"] == "pending_review"
    image = c.get(f"/api/v1/content/posts/{post_id}").json()["metadata"]["link_preview"]["image"]
    url = urlsplit(next(iter(image["variants"].values()))["url"]).path
    for who in (None, UserFactory()):
        assert client_for(who).get(f"/api/v1/content/posts/{post_id}").status_code == 404
        assert client_for(who).get(f"/api/v1/content/media/{thumb.pk}").status_code == 404
        assert client_for(who).get(url).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_private_addresses_are_refused_without_the_test_setting(site, broker, worker, settings):
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = False
    user = UserFactory()
    c = client_for(user)
    post_id = c.post(
        "/api/v1/content/posts", {"type": "link", "link_url": site.url("/article")}, format="json"
    ).json()["id"]
    _run_links(broker, worker)
    meta = c.get(f"/api/v1/content/posts/{post_id}").json()["metadata"]
    assert "link_preview" not in meta
    assert meta["link_preview_error"]["code"] == "blocked_address"
    assert site.requests == []
    assert not Media.objects.filter(post_id=post_id).exists()


@pytest.mark.django_db(transaction=True)
def test_non_html_is_refused_and_never_blocks_publishing(site, broker, worker, settings, platform):
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    platform(moderation_mode="reactive_only")
    user = UserFactory()
    c = client_for(user)
    post_id = c.post(
        "/api/v1/content/posts", {"type": "link", "link_url": site.url("/data.json")}, format="json"
    ).json()["id"]
    _run_links(broker, worker)
    assert Post.objects.get(pk=post_id).metadata["link_preview_error"]["code"] == "bad_content_type"
    assert c.post(f"/api/v1/content/posts/{post_id}/publish").status_code == 200
    assert "link_preview_error" not in client_for().get(f"/api/v1/content/posts/{post_id}").json()["metadata"]


@pytest.mark.django_db
def test_a_preview_image_still_processing_is_dropped_at_publish(
    user, platform, django_capture_on_commit_callbacks
):
    from media.services import media_attach_link_preview

    platform(moderation_mode="reactive_only")
    c = client_for(user)
    post_id = c.post(
        "/api/v1/content/posts", {"type": "link", "link_url": "https://example.com/"}, format="json"
    ).json()["id"]
    thumb = media_attach_link_preview(
        post_id=post_id, data=jpeg_bytes(), source_url="https://example.com/i.jpg"
    )
    Post.objects.filter(pk=post_id).update(
        metadata={
            "link_preview": {
                "url": "u",
                "title": "t",
                "description": "",
                "site_name": "s",
                "image_media_id": str(thumb.pk),
            }
        }
    )
    assert Post.objects.get(pk=post_id).status == "draft"  # a preview never puts the post in processing
    r = c.post(f"/api/v1/content/posts/{post_id}/publish")
    assert r.status_code == 200 and r.json()["status"] == "published"
    assert r.json()["metadata"]["link_preview"]["image"] is None
    thumb.refresh_from_db()
    assert thumb.detached_at is not None


@pytest.mark.django_db
def test_create_and_link_edit_queue_the_links_actor(user, broker, django_capture_on_commit_callbacks):
    assert "links" in dramatiq.get_broker().get_declared_queues()
    c = client_for(user)
    with django_capture_on_commit_callbacks(execute=True):
        post_id = c.post(
            "/api/v1/content/posts", {"type": "link", "link_url": "https://a.example/"}, format="json"
        ).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        c.patch(f"/api/v1/content/posts/{post_id}", {"title": "no link change"}, format="json")
    with django_capture_on_commit_callbacks(execute=True):
        c.patch(f"/api/v1/content/posts/{post_id}", {"link_url": "https://b.example/"}, format="json")
    assert [m.args for m in queued(broker, "links")] == [
        (post_id, "https://a.example/"),
        (post_id, "https://b.example/"),
    ]


OTHER = ARTICLE.replace(b"The   Real Title", b"The Other Page").replace(b"/img/cover.jpg", b"/img/other.png")


@pytest.mark.django_db(transaction=True)
def test_a_link_edit_waits_for_its_own_card_which_goes_public_only_when_cleared(
    site, broker, worker, settings, stub_ai, tmp_path, platform
):
    from content.models import PostRevision
    from moderation.review import build_input
    from moderation.services import post_revision_approve
    from tests.media.helpers import png_bytes

    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    site.route("/other", body=OTHER)
    site.route("/img/other.png", body=png_bytes(320, 200), content_type="image/png")
    settings.AI_STUB_SCORE = 0.01
    user = UserFactory()
    c = client_for(user)
    post_id = c.post(
        "/api/v1/content/posts", {"type": "link", "link_url": site.url("/article")}, format="json"
    ).json()["id"]
    _run_links(broker, worker)
    assert c.post(f"/api/v1/content/posts/{post_id}/publish").status_code == 202
    broker.join("moderation", timeout=60_000)
    worker.join()
    old_card = client_for().get(f"/api/v1/content/posts/{post_id}").json()["metadata"]["link_preview"]
    assert old_card["title"] == "The Real Title" and old_card["image"]["width"] == 400

    settings.AI_STUB_SCORE = 0.5  # the edit is held for a human
    r = c.patch(f"/api/v1/content/posts/{post_id}", {"link_url": site.url("/other")}, format="json")
    assert r.status_code == 200 and r.json()["pending_revision"]["link_preview"] == {"status": "fetching"}
    _run_links(broker, worker)
    broker.join("moderation", timeout=60_000)
    worker.join()
    rev = PostRevision.objects.get(post_id=post_id, status="held")
    card = rev.link_preview["card"]
    assert card["title"] == "The Other Page"
    thumb = Media.objects.get(pk=card["image_media_id"])
    assert (thumb.kind, thumb.processing_status, thumb.width) == ("thumbnail", "ready", 320)
    assert rev.items.filter(media=thumb).exists()
    item = build_input(Post.objects.get(pk=post_id), tmp_path, rev.number)
    assert str(thumb.pk) in [p.name.split("-img")[0] for p in item.image_paths], "the AI saw the new image"
    for who in (None, UserFactory()):
        public = client_for(who).get(f"/api/v1/content/posts/{post_id}").json()
        assert public["metadata"]["link_preview"]["title"] == "The Real Title"
        assert public["metadata"]["link_preview"]["image"]["id"] == old_card["image"]["id"]
        assert public["link_url"] == site.url("/article")
        assert client_for(who).get(f"/api/v1/content/media/{thumb.pk}").status_code == 404
    owner = c.get(f"/api/v1/content/posts/{post_id}").json()["pending_revision"]
    assert owner["link_preview"]["card"]["title"] == "The Other Page"

    post_revision_approve(post_id=post_id, revision_id=rev.pk, moderator=UserFactory(is_staff=True))
    public = client_for().get(f"/api/v1/content/posts/{post_id}").json()
    assert public["link_url"] == site.url("/other")
    assert public["metadata"]["link_preview"]["title"] == "The Other Page"
    assert public["metadata"]["link_preview"]["image"]["id"] == str(thumb.pk)
    assert Media.objects.get(pk=old_card["image"]["id"]).detached_at is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["ai_prescreen", "reactive_only"])
def test_a_card_image_that_arrives_after_publish_joins_through_a_revision(
    mode, site, broker, worker, settings, stub_ai, platform
):
    from content.linkpreview import link_preview_build

    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    settings.AI_STUB_SCORE = 0.5  # ai_prescreen: held for a human
    platform(moderation_mode=mode)
    from tests.factories import PostFactory

    # Published straight away, before the links worker ran: its message is handled now.
    post_id = str(PostFactory(type="link", link_url=site.url("/article"), published=True).pk)
    link_preview_build(post_id=post_id, link_url=site.url("/article"))
    broker.join("media.image", timeout=60_000)
    worker.join()
    post = Post.objects.get(pk=post_id)
    thumb = Media.objects.get(post_id=post_id, kind="thumbnail", detached_at__isnull=True)
    public = client_for().get(f"/api/v1/content/posts/{post_id}").json()["metadata"]["link_preview"]
    assert public["title"] == "The Real Title"
    if mode == "ai_prescreen":
        assert post.pending_revision.items.filter(media=thumb).exists()
        assert public["image"] is None
        assert client_for().get(f"/api/v1/content/media/{thumb.pk}").status_code == 404
    else:
        assert post.pending_revision_id is None
        assert public["image"]["id"] == str(thumb.pk)
