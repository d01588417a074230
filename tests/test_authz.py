"""Authorization probes over every API endpoint (DESIGN.md §3-§4; issue "Production mode and proof
under faults", item 9).

Posts a caller may not see, and their media, are 404 for them, never 403 or 200, whatever the method:
another creator gets 404; anonymous callers get 401 for writes and 404 for reads; the owner and staff
read everything. Endpoints are listed from the URL conf and the OpenAPI schema, so a new endpoint (or a
new method on one) without a probe here fails ``test_every_endpoint_has_a_probe``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from content.models import PollVote, Post, PostStatus, PostType, Report
from media import services as media_services
from media import storage
from media.models import Media, ProcessingStatus, Upload, UploadState
from tests.conftest import client_for
from tests.factories import MediaFactory, PollFactory, PostFactory, UserFactory
from tests.media.helpers import jpeg_bytes

pytestmark = pytest.mark.django_db

HIDDEN = [
    PostStatus.DRAFT,
    PostStatus.PROCESSING,
    PostStatus.PENDING_REVIEW,
    PostStatus.QUARANTINED,
    PostStatus.REJECTED,
]
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory


# --- the world: one owner's post (with media and a poll) in some status --------------------------------


def received_upload(owner) -> Upload:
    """An upload whose bytes (a real JPEG) are in storage, ready to attach."""
    data = jpeg_bytes()
    upload, _ = media_services.upload_create(
        owner=owner, filename="a.jpg", content_type="image/jpeg", size=len(data)
    )
    return media_services.upload_receive(
        upload_id=upload.pk, stream=io.BytesIO(data), content_length=len(data)
    )


@dataclass
class Scene:
    owner: object
    post: Post  # an image post
    media: Media  # failed, so that retrying it would work for anyone the check let through
    poll: Post
    option_id: int
    intruder_upload: Upload  # the intruder's own, ready to attach
    file_url: str = ""  # the signed URL of the media's bytes, as issued to the owner
    hls_url: str = ""  # the signed HLS master playlist URL, as issued to the owner
    segment_url: str = ""  # a segment under the same signed prefix
    live: Post | None = None  # a livestream post, live, in the same status
    live_url: str = (
        ""  # its signed live HLS playlist (Post JSON livestream.playback_url), as issued to the owner
    )
    live_segment_url: str = ""  # a segment under the same live grant

    transcript: Media | None = None  # the media's transcript (issue 17)
    captions_url: str = ""  # its signed WebVTT captions, as issued to the owner
    subtitles_url: str = ""  # the captions in the HLS folder (the subtitle rendition)


def make_live(owner, status: str) -> tuple[Post, str]:
    """A livestream post in ``status`` whose stream is live, with its live HLS tree in storage; returns
    the post and the playback URL its owner is given."""
    from django.utils import timezone

    from media.live import keys
    from media.live.models import LiveStream

    post = PostFactory(author=owner, type=PostType.LIVESTREAM, title="Live now", body="", status=status)
    stream = LiveStream.objects.create(
        post=post,
        owner=owner,
        provider="local",
        status="live",
        key_hash=keys.hash_key(f"key-{post.pk}"),
        key_encrypted=keys.encrypt(f"key-{post.pk}"),
        started_at=timezone.now(),
        last_segment_at=timezone.now(),
    )
    stream.hls_folder = storage.live_folder(owner.pk, stream.pk)
    stream.save(update_fields=["hls_folder"])
    storage.save(
        f"{stream.hls_folder}/index.m3u8", io.BytesIO(b"#EXTM3U\n#EXTINF:2.0,\nseg_00000.ts\n"), None
    )
    storage.save(f"{stream.hls_folder}/seg_00000.ts", io.BytesIO(b"G" * 188), None)
    r = client_for(owner).get(f"/api/v1/content/posts/{post.pk}")
    assert r.status_code == 200, r.content
    url = urlsplit(r.json()["livestream"]["playback_url"]).path
    assert url.startswith("/m/l/") and url.endswith("/index.m3u8")
    return post, url


def make_scene(owner, intruder, status: str) -> Scene:
    post = PostFactory(author=owner, type=PostType.IMAGE, body="", status=status)
    media = MediaFactory(post=post, processing_status=ProcessingStatus.FAILED)
    media.original_key = f"media/{owner.pk}/{media.pk}/original.jpg"
    media.save(update_fields=["original_key"])
    storage.save(media.original_key, io.BytesIO(jpeg_bytes()), "image/jpeg")
    # An HLS tree as the video processor lays it out (variants.hls.key = …/hls/master.m3u8).
    hls_key = f"media/{owner.pk}/{media.pk}/hls/master.m3u8"
    storage.save(hls_key, io.BytesIO(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n360p/index.m3u8\n"), None)
    storage.save(f"media/{owner.pk}/{media.pk}/hls/360p/seg_001.m4s", io.BytesIO(b"\0" * 64), None)
    media.variants = {"hls": {"key": hls_key, "mime_type": "application/vnd.apple.mpegurl"}}
    media.save(update_fields=["variants"])
    # Its transcript (issue 17): captions as a variant, and a subtitle rendition in the HLS folder.
    transcript = MediaFactory(post=post, parent=media, kind="transcript", is_primary=False)
    vtt = b"WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.000\nhello\n"
    captions_key = f"media/{owner.pk}/{transcript.pk}/captions.vtt"
    storage.save(captions_key, io.BytesIO(vtt), "text/vtt")
    storage.save(f"media/{owner.pk}/{media.pk}/hls/subs/en.vtt", io.BytesIO(vtt), None)
    transcript.variants = {"captions": {"key": captions_key, "mime_type": "text/vtt"}}
    transcript.metadata = {"speech": True, "language": "en", "segments": [[0.0, 1.0, "hello", 0.9]]}
    transcript.save(update_fields=["variants", "metadata"])
    poll = PollFactory(post__author=owner, post__status=status)
    scene = Scene(
        owner=owner,
        post=post,
        media=media,
        poll=poll.post,
        option_id=poll.options.first().pk,
        intruder_upload=received_upload(intruder),
    )
    r = client_for(owner).get(f"/api/v1/content/media/{media.pk}")
    assert r.status_code == 200, r.content
    parts = urlsplit(r.json()["original_url"])
    scene.file_url = parts.path
    scene.hls_url = urlsplit(r.json()["variants"]["hls"]["url"]).path
    assert scene.hls_url.startswith("/m/h/") and scene.hls_url.endswith("/master.m3u8")
    scene.segment_url = scene.hls_url.replace("/master.m3u8", "/360p/seg_001.m4s")
    scene.live, scene.live_url = make_live(owner, status)
    scene.live_segment_url = scene.live_url.replace("/index.m3u8", "/seg_00000.ts")
    scene.subtitles_url = scene.hls_url.replace("/master.m3u8", "/subs/en.vtt")
    scene.transcript = transcript
    r = client_for(owner).get(f"/api/v1/content/media/{transcript.pk}")
    scene.captions_url = urlsplit(r.json()["captions"]).path
    return scene


# --- probes: for each URL name, the requests that touch one post or its media -------------------------


@dataclass(frozen=True)
class Probe:
    method: str
    path: Callable[[Scene], str]
    body: Callable[[Scene], dict] | None = None
    read: bool = False

    def send(self, client, scene: Scene):
        data = self.body(scene) if self.body else None
        return getattr(client, self.method.lower())(self.path(scene), data, format="json")


def _post(s: Scene) -> str:
    return f"/api/v1/content/posts/{s.post.pk}"


OBJECT_PROBES: dict[str, list[Probe]] = {
    "post-detail": [
        Probe("GET", _post, read=True),
        Probe("PATCH", _post, lambda s: {"title": "Hijacked"}),
        Probe("DELETE", _post),
    ],
    "post-publish": [Probe("POST", lambda s: f"{_post(s)}/publish")],
    "post-unpublish": [Probe("POST", lambda s: f"{_post(s)}/unpublish")],
    "poll-vote": [
        Probe(
            "POST",
            lambda s: f"/api/v1/content/posts/{s.poll.pk}/poll/vote",
            lambda s: {"option_ids": [s.option_id]},
        )
    ],
    "post-report": [Probe("POST", lambda s: f"{_post(s)}/report", lambda s: {"reason": "spam"})],
    "media-attach": [
        Probe("POST", lambda s: f"{_post(s)}/media", lambda s: {"upload_id": str(s.intruder_upload.pk)})
    ],
    "media-detach": [Probe("DELETE", lambda s: f"{_post(s)}/media/{s.media.pk}")],
    "media-detail": [
        Probe("GET", lambda s: f"/api/v1/content/media/{s.media.pk}", read=True),
        Probe(
            "PATCH", lambda s: f"/api/v1/content/media/{s.media.pk}", lambda s: {"description": "Hijacked"}
        ),
    ],
    "media-retry": [Probe("POST", lambda s: f"/api/v1/content/media/{s.media.pk}/retry")],
    "media-file": [
        Probe("GET", lambda s: s.file_url, read=True),
        Probe("GET", lambda s: s.captions_url, read=True),
    ],
    "live-tree": [
        Probe("GET", lambda s: s.live_url, read=True),
        Probe("GET", lambda s: s.live_segment_url, read=True),
    ],
    "livestream-end": [
        Probe("POST", lambda s: f"/api/v1/content/posts/{s.live.pk}/livestream/end", lambda s: {})
    ],
    "livestream-key": [Probe("POST", lambda s: f"/api/v1/content/posts/{s.live.pk}/livestream/key")],
    "media-tree": [
        Probe("GET", lambda s: s.hls_url, read=True),
        Probe("GET", lambda s: s.segment_url, read=True),
        Probe("GET", lambda s: s.subtitles_url, read=True),
    ],
    "media-transcript": [
        Probe("GET", lambda s: f"/api/v1/content/media/{s.media.pk}/transcript", read=True),
        Probe("GET", lambda s: f"/api/v1/content/media/{s.transcript.pk}/transcript", read=True),
        Probe(
            "PATCH",
            lambda s: f"/api/v1/content/media/{s.transcript.pk}/transcript",
            lambda s: {"text": "Hijacked"},
        ),
    ],
    "post-revisions": [Probe("GET", lambda s: f"{_post(s)}/revisions", read=True)],
    # Only the author appeals or reads an appeal (a 401 for anonymous callers: it is never public).
    "post-appeal": [
        Probe("POST", lambda s: f"{_post(s)}/appeal", lambda s: {"text": "Please look again."}),
        Probe("GET", lambda s: f"{_post(s)}/appeal"),
    ],
}

# Endpoints that take no post or media id; each has its own test here, named below.
OTHER_PROBES: dict[str, str] = {
    "auth-register": "test_auth_endpoints_are_open_and_reveal_no_posts",
    "auth-token": "test_auth_endpoints_are_open_and_reveal_no_posts",
    "post-list": "test_lists_never_show_hidden_posts_of_others",
    "my-posts": "test_lists_never_show_hidden_posts_of_others",
    "upload-create": "test_uploads_need_a_user_and_the_upload_target_needs_its_signature",
    "upload-data": "test_uploads_need_a_user_and_the_upload_target_needs_its_signature",
    "upload-detail": "test_resumable_uploads_are_their_owners_and_parts_need_their_signature",
    "upload-parts": "test_resumable_uploads_are_their_owners_and_parts_need_their_signature",
    "upload-part-data": "test_resumable_uploads_are_their_owners_and_parts_need_their_signature",
    "upload-complete": "test_resumable_uploads_are_their_owners_and_parts_need_their_signature",
    "my-quota": "test_quota_is_the_callers_own",
    "schema": "test_schema_and_docs_are_public",
    "docs": "test_schema_and_docs_are_public",
    "livestream-mux-webhook": "test_mux_webhook_needs_its_signature",
    "notification-list": "test_notifications_webhooks_and_events_are_the_callers_own",
    "notification-read": "test_notifications_webhooks_and_events_are_the_callers_own",
    "notification-prefs": "test_notifications_webhooks_and_events_are_the_callers_own",
    "webhook-list": "test_notifications_webhooks_and_events_are_the_callers_own",
    "webhook-detail": "test_notifications_webhooks_and_events_are_the_callers_own",
    "webhook-deliveries": "test_notifications_webhooks_and_events_are_the_callers_own",
    "events": "test_notifications_webhooks_and_events_are_the_callers_own",
    "events-ticket": "test_notifications_webhooks_and_events_are_the_callers_own",
}


def _api_url_names() -> dict[str, str]:
    """URL name -> route for every pattern under /api/v1/ and the signed media URL /m/."""
    found: dict[str, str] = {}

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern) and route.startswith(("api/v1/", "m/")):
                found[p.name or route] = route

    walk(get_resolver().url_patterns, "")
    return found


def test_every_endpoint_has_a_probe():
    names = _api_url_names()
    missing = set(names) - set(OBJECT_PROBES) - set(OTHER_PROBES)
    assert not missing, f"endpoints without an authorization probe: {sorted(missing)}"
    assert not (set(OBJECT_PROBES) | set(OTHER_PROBES)) - set(names), "probes for endpoints that are gone"
    for test_name in OTHER_PROBES.values():
        assert callable(globals().get(test_name)), test_name

    # Every documented method of an object endpoint is probed.
    schema = SchemaGenerator().get_schema(request=None, public=True)
    uuid = "00000000-0000-0000-0000-000000000000"
    for path, operations in schema["paths"].items():
        concrete = path
        for param in ("{post_id}", "{media_id}", "{upload_id}", "{webhook_id}"):
            concrete = concrete.replace(param, uuid)
        name = resolve(concrete).url_name
        assert name in names
        if name in OBJECT_PROBES:
            probed = {p.method for p in OBJECT_PROBES[name]}
            documented = {m.upper() for m in operations}
            assert documented <= probed, f"{path}: no probe for {sorted(documented - probed)}"


@pytest.fixture
def moderator(db):
    """Staff in the Moderators group, which may view media (moderation/migrations/0003)."""
    group, _ = Group.objects.get_or_create(name="Moderators")
    group.permissions.add(Permission.objects.get(content_type__app_label="media", codename="view_media"))
    user = UserFactory(is_staff=True)
    user.groups.add(group)
    return user


@pytest.fixture
def scene_for(user, other_user):
    return lambda status: make_scene(user, other_user, status)


def _probe_ids():
    return [(name, i) for name, probes in OBJECT_PROBES.items() for i in range(len(probes))]


def _snapshot(scene: Scene) -> tuple:
    post = Post.objects.get(pk=scene.post.pk)
    media = Media.objects.get(pk=scene.media.pk)
    return (
        post.status,
        post.title,
        post.deleted_at,
        post.revision,
        media.detached_at,
        media.processing_status,
        Media.objects.filter(post=scene.post).count(),
        PollVote.objects.filter(poll__post=scene.poll).count(),
        Report.objects.filter(post=scene.post).count(),
        Upload.objects.get(pk=scene.intruder_upload.pk).state,
        scene.live.livestream.__class__.objects.filter(post=scene.live)
        .values_list("status", "key_hash")
        .get(),
        Media.objects.get(pk=scene.transcript.pk).metadata,
    )


@pytest.fixture
def bare_staff(db):
    """``is_staff`` and nothing else: may use the admin's login, may not read what is not public."""
    return UserFactory(is_staff=True)


@pytest.mark.parametrize("status", HIDDEN)
@pytest.mark.parametrize("name, index", _probe_ids(), ids=lambda v: str(v))
def test_hidden_posts_and_media_are_404_for_others(
    name, index, status, scene_for, other_user, staff, moderator, bare_staff
):
    probe = OBJECT_PROBES[name][index]
    scene = scene_for(status)
    before = _snapshot(scene)

    for intruder in (other_user, bare_staff):
        r = probe.send(client_for(intruder), scene)
        assert r.status_code == 404, (intruder, r.status_code, r.content)
        assert r.json()["code"] == "not_found"

    r = probe.send(client_for(), scene)
    expected = 404 if probe.read else 401
    assert r.status_code == expected, (r.status_code, r.content)
    assert r.json()["code"] == ("not_found" if probe.read else "not_authenticated")

    assert _snapshot(scene) == before, "a refused request changed something"

    if probe.read:
        # Hidden posts and their bytes are for the owner and staff with media.view_media (DESIGN.md §3).
        for reader in (scene.owner, moderator, staff):
            r = probe.send(client_for(reader), scene)
            assert r.status_code == 200, (reader, r.status_code, r.content)


@pytest.mark.parametrize("status", HIDDEN)
def test_staff_and_owner_read_hidden_posts_in_full(status, scene_for, staff):
    scene = scene_for(status)
    for reader in (staff, scene.owner):
        data = client_for(reader).get(_post(scene)).json()
        assert (data["id"], data["status"]) == (str(scene.post.pk), status)
        assert [m["id"] for m in data["media"] if m["kind"] != "transcript"] == [str(scene.media.pk)]
        assert data["media"][0]["original_url"], "owner and staff get the original"
        assert client_for(reader).get(f"/api/v1/content/posts/{scene.poll.pk}").json()["poll"]


def test_signed_url_of_hidden_media_stops_working_for_others_once_unpublished(user, other_user, moderator):
    """A URL issued while the post was public is checked again when used."""
    post = PostFactory(author=user, type=PostType.IMAGE, body="", published=True)
    media = MediaFactory(post=post)
    media.variants = {"large": {"key": f"media/{user.pk}/{media.pk}/large.jpg", "mime_type": "image/jpeg"}}
    media.save(update_fields=["variants"])
    storage.save(media.variants["large"]["key"], io.BytesIO(jpeg_bytes()), "image/jpeg")
    url = urlsplit(
        client_for(user).get(f"/api/v1/content/media/{media.pk}").json()["variants"]["large"]["url"]
    ).path
    assert client_for(other_user).get(url).status_code == 200
    assert client_for(user).post(f"/api/v1/content/posts/{post.pk}/unpublish").status_code == 200
    for who in (other_user, None):
        r = client_for(who).get(url)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    for who in (user, moderator):
        assert client_for(who).get(url).status_code == 200


def test_published_posts_of_others_are_readable_but_not_writable(user, other_user):
    """Visible posts may say 403 to a non-owner (the 404 rule is for posts the caller cannot see),
    except media retries, which are 404 for anyone but the owner and staff."""
    post = PostFactory(author=user, type=PostType.IMAGE, body="", published=True)
    media = MediaFactory(post=post, processing_status=ProcessingStatus.FAILED)
    c = client_for(other_user)
    assert c.get(f"/api/v1/content/posts/{post.pk}").status_code == 200
    assert c.get(f"/api/v1/content/media/{media.pk}").status_code == 200
    assert c.get(f"/api/v1/content/media/{media.pk}").json()["original_url"] is None
    for method, path, body in [
        ("patch", f"/api/v1/content/posts/{post.pk}", {"title": "x"}),
        ("delete", f"/api/v1/content/posts/{post.pk}", None),
        ("post", f"/api/v1/content/posts/{post.pk}/unpublish", None),
        ("delete", f"/api/v1/content/posts/{post.pk}/media/{media.pk}", None),
    ]:
        r = getattr(c, method)(path, body, format="json")
        assert (r.status_code, r.json()["code"]) == (403, "permission_denied"), (path, r.content)
    r = c.post(f"/api/v1/content/media/{media.pk}/retry")
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    media.refresh_from_db()
    assert media.processing_status == ProcessingStatus.FAILED


def test_another_users_media_cannot_be_detached_through_ones_own_post(user, other_user):
    theirs = MediaFactory(post=PostFactory(author=other_user, type=PostType.IMAGE, body=""))
    mine = PostFactory(author=user, type=PostType.IMAGE, body="")
    r = client_for(user).delete(f"/api/v1/content/posts/{mine.pk}/media/{theirs.pk}")
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    theirs.refresh_from_db()
    assert theirs.detached_at is None


def test_another_users_upload_cannot_be_attached(user, other_user):
    theirs = received_upload(other_user)
    mine = PostFactory(author=user, type=PostType.IMAGE, body="")
    r = client_for(user).post(
        f"/api/v1/content/posts/{mine.pk}/media", {"upload_id": str(theirs.pk)}, format="json"
    )
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    assert Upload.objects.get(pk=theirs.pk).state == UploadState.RECEIVED
    assert not Media.objects.filter(post=mine).exists()
    # ...while the owner can.
    r = client_for(other_user).post(
        f"/api/v1/content/posts/{PostFactory(author=other_user, type='image', body='').pk}/media",
        {"upload_id": str(theirs.pk)},
        format="json",
    )
    assert r.status_code == 201, r.content


def test_deleted_posts_are_404_even_for_the_owner(user, staff):
    post = PostFactory(author=user, published=True)
    assert client_for(user).delete(f"/api/v1/content/posts/{post.pk}").status_code == 204
    for who in (user, staff, None):
        assert client_for(who).get(f"/api/v1/content/posts/{post.pk}").status_code == 404


# --- endpoints without a post or media id -----------------------------------------------------------------


def test_auth_endpoints_are_open_and_reveal_no_posts(user):
    c = client_for()
    r = c.post("/api/v1/auth/register", {"username": "newcomer", "password": "A-long-pass-phrase-42"})
    assert r.status_code == 201 and set(r.json()) == {"id", "username", "token"}
    r = c.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["token"] == user.auth_token.key
    r = c.post("/api/v1/auth/token", {"username": user.username, "password": "wrong"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_credentials")
    # A token cannot be used to reach these as someone else: they ignore credentials entirely.
    r = client_for(user).post("/api/v1/auth/token", {"username": "nobody", "password": "x"})
    assert r.status_code == 400


def test_lists_never_show_hidden_posts_of_others(user, other_user, staff):
    hidden = [PostFactory(author=user, status=s) for s in HIDDEN]
    public = PostFactory(author=user, published=True)
    for who in (other_user, staff, None):
        for query in ({}, {"author": user.username}, {"author": str(user.pk)}):
            ids = [p["id"] for p in client_for(who).get("/api/v1/content/posts", query).json()["results"]]
            assert ids == [str(public.pk)], (who, query)
    assert client_for(other_user).get("/api/v1/content/me/posts").json()["results"] == []
    for status in HIDDEN:
        r = client_for(other_user).get("/api/v1/content/me/posts", {"status": status})
        assert r.json()["results"] == []
    r = client_for().get("/api/v1/content/me/posts")
    assert (r.status_code, r.json()["code"]) == (401, "not_authenticated")
    mine = {p["id"] for p in client_for(user).get("/api/v1/content/me/posts").json()["results"]}
    assert mine == {str(p.pk) for p in [*hidden, public]}
    r = client_for().post("/api/v1/content/posts", {"type": "text", "body": "hi"}, format="json")
    assert (r.status_code, r.json()["code"]) == (401, "not_authenticated")


def test_uploads_need_a_user_and_the_upload_target_needs_its_signature(user, other_user):
    body = {"filename": "a.jpg", "content_type": "image/jpeg", "size": 1000}
    r = client_for().post("/api/v1/content/uploads", body, format="json")
    assert (r.status_code, r.json()["code"]) == (401, "not_authenticated")
    theirs = client_for(other_user).post("/api/v1/content/uploads", body, format="json").json()
    mine = client_for(user).post("/api/v1/content/uploads", body, format="json").json()
    # My signature does not open their upload, and no credential replaces a signature.
    their_path = urlsplit(theirs["url"]).path
    my_query = urlsplit(mine["url"]).query
    for c in (client_for(user), client_for(other_user), client_for()):
        for path in (f"{their_path}?{my_query}", their_path):
            r = c.generic("PUT", path, b"x" * 10, content_type="image/jpeg")
            assert (r.status_code, r.json()["code"]) == (403, "invalid_signature")
    assert Upload.objects.get(pk=theirs["upload_id"]).state == UploadState.PENDING


def test_resumable_uploads_are_their_owners_and_parts_need_their_signature(user, other_user):
    body = {"filename": "a.jpg", "content_type": "image/jpeg", "size": 1000, "resumable": True}
    r = client_for().post("/api/v1/content/uploads", body, format="json")
    assert (r.status_code, r.json()["code"]) == (401, "not_authenticated")
    mine = client_for(user).post("/api/v1/content/uploads", body, format="json").json()
    theirs = client_for(other_user).post("/api/v1/content/uploads", body, format="json").json()
    base = f"/api/v1/content/uploads/{theirs['upload_id']}"
    calls = [
        ("get", base, None),
        ("delete", base, None),
        ("post", f"{base}/parts", {"part_numbers": [1]}),
        ("post", f"{base}/complete", {"parts": [{"part_number": 1, "etag": "x"}]}),
    ]
    for method, path, data in calls:
        r = getattr(client_for(user), method)(path, data, format="json")
        assert (r.status_code, r.json()["code"]) == (404, "not_found"), path
        r = getattr(client_for(), method)(path, data, format="json")
        assert r.status_code == 401, path
    # my part signature does not open their part, and no credential replaces a signature
    url = (
        client_for(user)
        .post(f"/api/v1/content/uploads/{mine['upload_id']}/parts", {"part_numbers": [1]}, format="json")
        .json()["parts"][0]["url"]
    )
    query = urlsplit(url).query
    their_part = f"{base}/parts/1/data"
    for c in (client_for(user), client_for(other_user), client_for()):
        for path in (f"{their_part}?{query}", their_part):
            r = c.generic("PUT", path, b"x" * 10, content_type="")
            assert (r.status_code, r.json()["code"]) == (403, "invalid_signature")
    assert Upload.objects.get(pk=theirs["upload_id"]).parts == {}


@pytest.mark.parametrize("status", HIDDEN)
def test_link_preview_image_of_hidden_posts_is_hidden(status, user, other_user, staff):
    """The card's image (a thumbnail medium of the post): its JSON, the card and its bytes follow the
    post's visibility, like any medium (issue 13's read-path walk)."""
    post = PostFactory(
        author=user, type=PostType.LINK, link_url="https://example.com/", body="", status=status
    )
    thumb = MediaFactory(post=post, kind="thumbnail", is_primary=False, metadata={"link_preview": True})
    key = f"media/{user.pk}/{thumb.pk}/small.jpg"
    thumb.variants = {"small": {"key": key, "mime_type": "image/jpeg", "width": 64, "height": 48}}
    thumb.save(update_fields=["variants"])
    storage.save(key, io.BytesIO(jpeg_bytes()), "image/jpeg")
    Post.objects.filter(pk=post.pk).update(
        metadata={
            "link_preview": {
                "url": "u",
                "title": "t",
                "description": "d",
                "site_name": "s",
                "image_media_id": str(thumb.pk),
            }
        }
    )
    owner_view = client_for(user).get(f"/api/v1/content/posts/{post.pk}").json()
    image = owner_view["metadata"]["link_preview"]["image"]
    assert image["id"] == str(thumb.pk)
    url = urlsplit(image["variants"]["small"]["url"]).path
    for who in (other_user, None):
        c = client_for(who)
        assert c.get(f"/api/v1/content/posts/{post.pk}").status_code == 404
        assert c.get(f"/api/v1/content/media/{thumb.pk}").status_code == 404
        assert c.get(url).status_code == 404
        feed = c.get("/api/v1/content/posts").json()["results"]
        assert str(post.pk) not in {p["id"] for p in feed}
    assert client_for(staff).get(url).status_code == 200


def test_quota_is_the_callers_own(user, other_user):
    MediaFactory(post=PostFactory(author=other_user, type=PostType.IMAGE, body=""), size_bytes=4321)
    assert client_for(user).get("/api/v1/content/me/quota").json()["used_bytes"] == 0
    assert client_for(other_user).get("/api/v1/content/me/quota").json()["used_bytes"] == 4321
    r = client_for().get("/api/v1/content/me/quota")
    assert (r.status_code, r.json()["code"]) == (401, "not_authenticated")


def test_schema_and_docs_are_public():
    assert client_for().get("/api/v1/schema/").status_code == 200
    assert client_for().get("/api/v1/docs/").status_code == 200


@pytest.mark.parametrize("status", HIDDEN)
def test_notifications_webhooks_and_events_are_the_callers_own(status, user, other_user, staff, settings):
    """What is said about a hidden post (its notifications, events and webhook deliveries) reaches its
    owner only: another user, staff and anonymous callers get nothing of it."""
    from content import events, notifications, webhooks
    from content.models import WebhookDelivery

    settings.EVENTS_REDIS_URL = None
    settings.DEBUG = True  # http webhook URLs
    settings.EVENTS_HEARTBEAT_SECONDS = 0.05
    events.reset_log()
    post = PostFactory(author=user, status=status)
    hook, _ = webhooks.webhook_create(user=user, url="http://hooks.example.test/in", events=["notification"])
    notifications.notify(user=user, type="post_held", post=post, reason="secret reason")
    events.append_now(user.pk, "post.updated", events.post_data(post), webhooks=False)
    delivery = WebhookDelivery.objects.create(webhook=hook, event_type="notification", body="{}")
    leaked = str(post.pk)

    for who in (other_user, staff):
        c = client_for(who)
        r = c.get("/api/v1/content/notifications")
        assert r.status_code == 200 and r.json()["results"] == []
        assert c.post("/api/v1/content/notifications/read", {"up_to": 10**9}, format="json").json() == {
            "marked": 0
        }
        assert c.get("/api/v1/content/webhooks").json() == []
        assert c.delete(f"/api/v1/content/webhooks/{hook.pk}").status_code == 404
        assert c.get(f"/api/v1/content/webhooks/{hook.pk}/deliveries").status_code == 404
        r = c.get("/api/v1/events", HTTP_LAST_EVENT_ID="0-0")
        assert r.status_code == 200
        first = b"".join(next(iter(r.streaming_content)) for _ in range(2))
        r._iterator.close()
        assert leaked.encode() not in first and b"secret reason" not in first
        ticket = c.post("/api/v1/events/ticket").json()["ticket"]
        r = client_for().get("/api/v1/events", {"ticket": ticket, "last_event_id": "0-0"})
        chunk = b"".join(next(iter(r.streaming_content)) for _ in range(2))
        r._iterator.close()
        assert leaked.encode() not in chunk

    anon = client_for()
    for method, path in [
        ("get", "/api/v1/content/notifications"),
        ("post", "/api/v1/content/notifications/read"),
        ("get", "/api/v1/content/notifications/preferences"),
        ("patch", "/api/v1/content/notifications/preferences"),
        ("get", "/api/v1/content/webhooks"),
        ("post", "/api/v1/content/webhooks"),
        ("delete", f"/api/v1/content/webhooks/{hook.pk}"),
        ("get", f"/api/v1/content/webhooks/{hook.pk}/deliveries"),
        ("get", "/api/v1/events"),
        ("post", "/api/v1/events/ticket"),
    ]:
        r = getattr(anon, method)(path, {}, format="json") if method != "get" else anon.get(path)
        assert r.status_code == 401, (path, r.status_code)
        assert r.json()["code"] == "not_authenticated", path

    # The owner has all of it.
    c = client_for(user)
    assert [n["post_id"] for n in c.get("/api/v1/content/notifications").json()["results"]] == [leaked]
    ids = [d["id"] for d in c.get(f"/api/v1/content/webhooks/{hook.pk}/deliveries").json()["results"]]
    assert str(delivery.pk) in ids
    events.reset_log()


# --- CSRF: sessions need the token for unsafe requests; API tokens do not ---------------------------------


def _session_client(user) -> APIClient:
    c = APIClient(enforce_csrf_checks=True)
    c.force_login(user)  # Client.login() passes no request, which django-axes requires
    return c


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/api/v1/content/posts", {"type": "text", "body": "Hello"}),
        ("patch", "/api/v1/content/posts/{draft}", {"title": "x"}),
        ("delete", "/api/v1/content/posts/{draft}", None),
        ("post", "/api/v1/content/posts/{draft}/publish", None),
        ("post", "/api/v1/content/uploads", {"filename": "a.jpg", "content_type": "image/jpeg", "size": 9}),
    ],
)
def test_session_writes_without_csrf_token_are_refused(user, method, path, body):
    draft = PostFactory(author=user)
    before = Post.objects.count()
    r = getattr(_session_client(user), method)(path.format(draft=draft.pk), body, format="json")
    assert r.status_code == 403, r.content
    assert r.json()["code"] == "permission_denied" and "CSRF" in r.json()["detail"]
    draft.refresh_from_db()
    assert (Post.objects.count(), draft.status, draft.deleted_at) == (before, "draft", None)


def test_session_writes_with_csrf_token_and_token_writes_are_accepted(user):
    c = _session_client(user)
    secret = "a" * 32
    c.cookies["csrftoken"] = secret
    r = c.post(
        "/api/v1/content/posts", {"type": "text", "body": "Hi"}, format="json", HTTP_X_CSRFTOKEN=secret
    )
    assert r.status_code == 201, r.content
    token_client = client_for(user)
    token_client.handler.enforce_csrf_checks = True
    r = token_client.post("/api/v1/content/posts", {"type": "text", "body": "Hi"}, format="json")
    assert r.status_code == 201, r.content


def test_session_reads_need_no_csrf_token(user):
    assert _session_client(user).get("/api/v1/content/me/posts").status_code == 200


def test_admin_login_without_csrf_token_is_refused(staff):
    c = Client(enforce_csrf_checks=True)
    r = c.post("/admin/login/", {"username": staff.username, "password": PASSWORD, "next": "/admin/"})
    assert r.status_code == 403
    assert "_auth_user_id" not in c.session


def test_admin_login_with_csrf_token_works(staff):
    c = Client(enforce_csrf_checks=True)
    c.get("/admin/login/")
    token = c.cookies["csrftoken"].value
    r = c.post(
        "/admin/login/",
        {"username": staff.username, "password": PASSWORD, "next": "/admin/", "csrfmiddlewaretoken": token},
    )
    assert r.status_code == 302, r.status_code


# --- edits after publish: nothing of a waiting revision is public (DESIGN.md §9) --------------------------

SECRET = "zq-secret-edit"


def _stored_image(owner, post, **kw) -> Media:
    """A ready image with a stored original and a stored ``large`` variant."""
    media = MediaFactory(post=post, processing_status=ProcessingStatus.READY, **kw)
    media.original_key = f"media/{owner.pk}/{media.pk}/original.jpg"
    media.variants = {
        "large": {"key": f"media/{owner.pk}/{media.pk}/large.jpg", "mime_type": "image/jpeg", "width": 64}
    }
    media.save(update_fields=["original_key", "variants"])
    for key in (media.original_key, media.variants["large"]["key"]):
        storage.save(key, io.BytesIO(jpeg_bytes()), "image/jpeg")
    return media


def _byte_urls(client, media_id) -> list[str]:
    data = client.get(f"/api/v1/content/media/{media_id}").json()
    urls = [v["url"] for v in data["variants"].values()] + [data["original_url"]]
    return [urlsplit(u).path + ("?" + urlsplit(u).query if urlsplit(u).query else "") for u in urls if u]


def test_a_held_transcript_edit_is_invisible_on_every_read_path(
    user, other_user, bare_staff, platform, django_capture_on_commit_callbacks
):
    """The owner corrects the transcript of a published audio post in ai_prescreen mode: until the AI
    clears the edit (no worker runs here), nobody but the owner sees its text on any read path: post
    detail, feed (all, ?author=), the audio's and the transcript's media JSON, the transcript by either
    id, the revisions, and the bytes of every captions and text URL they are given (issue 17)."""
    from tests.media.test_speech_api import _ready_transcript

    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user, type=PostType.AUDIO, body="", published=True)
    parent, transcript = _ready_transcript(post, cues=[(0.5, 2.0, "hello there", 0.9)])
    owner = client_for(user)
    with django_capture_on_commit_callbacks(execute=True):
        r = owner.patch(
            f"/api/v1/content/media/{parent.pk}/transcript", {"text": f"{SECRET} words"}, format="json"
        )
    assert r.status_code == 202, r.content
    assert SECRET in owner.get(f"/api/v1/content/media/{parent.pk}/transcript").json()["pending_edit"]["text"]
    paths = [
        _post_path(post),
        "/api/v1/content/posts",
        f"/api/v1/content/posts?author={user.username}",
        f"/api/v1/content/media/{parent.pk}",
        f"/api/v1/content/media/{transcript.pk}",
        f"/api/v1/content/media/{parent.pk}/transcript",
        f"/api/v1/content/media/{transcript.pk}/transcript",
        f"{_post_path(post)}/revisions",
    ]
    for who in (other_user, bare_staff, None):
        c = client_for(who)
        for path in paths:
            resp = c.get(path)
            assert resp.status_code == 200, (who, path, resp.status_code)
            assert SECRET not in resp.content.decode(), (who, path)
        captions = c.get(f"/api/v1/content/media/{parent.pk}").json()["captions"]
        urls = [urlsplit(captions).path + "?" + urlsplit(captions).query, *_byte_urls(c, transcript.pk)]
        for url in urls:
            resp = c.get(url)
            body = b"".join(resp.streaming_content) if resp.streaming else resp.content
            assert resp.status_code == 200 and SECRET.encode() not in body, (who, url)


def test_a_pending_revision_is_invisible_on_every_read_path(
    user, other_user, moderator, bare_staff, platform
):
    """The owner edits a published post in ai_prescreen mode: new text, content warning, a new image
    with alt text, the old image detached. Until the edit is cleared, nobody but the owner and staff
    sees any of it on any read path: post detail, feed (all, ?author= by name and id), another user's
    me/posts, media detail, every variant and original URL, the revision history. A link post's edit
    to a new link walks along: its pending card and the card's image (an item of the pending
    revision) stay with the owner and staff; the public keeps the old card."""
    platform(moderation_mode="ai_prescreen")
    link, link_old_thumb, link_new_thumb = _link_post_with_pending_card(user)
    post = PostFactory(
        author=user, type=PostType.IMAGE, title="Public title", body="Public body", published=True
    )
    old = _stored_image(user, post)
    owner = client_for(user)
    assert owner.patch(f"{_post_path(post)}", {"title": "warm-up"}, format="json").status_code == 200
    # The first edit above is pending too; the real one replaces it.
    r = owner.post(f"{_post_path(post)}/media", {"upload_id": str(received_upload(user).pk)}, format="json")
    assert r.status_code == 201, r.content
    new = Media.objects.get(pk=r.json()["id"])
    assert r.json()["original_url"], "the owner gets its URLs"
    # Processing done (as the worker would): a stored variant the owner could be given.
    new.processing_status = ProcessingStatus.READY
    new.variants = {"large": {"key": f"media/{user.pk}/{new.pk}/large.jpg", "mime_type": "image/jpeg"}}
    new.save(update_fields=["processing_status", "variants"])
    storage.save(new.variants["large"]["key"], io.BytesIO(jpeg_bytes()), "image/jpeg")
    r = owner.patch(
        _post_path(post),
        {
            "title": f"{SECRET} title",
            "body": f"{SECRET} body",
            "spoiler_text": f"{SECRET} cw",
            "sensitive": True,
            "media": [{"id": str(new.pk), "description": f"{SECRET} alt"}],
        },
        format="json",
    )
    assert r.status_code == 200, r.content
    assert owner.delete(f"{_post_path(post)}/media/{old.pk}").status_code == 204
    post.refresh_from_db()
    assert post.status == PostStatus.PUBLISHED and post.pending_revision.status == "pending"
    new_urls = _byte_urls(owner, new.pk)
    old_urls = _byte_urls(client_for(other_user), old.pk)
    assert new_urls and old_urls

    def reads(client) -> list:
        return [
            client.get(_post_path(post)),
            client.get("/api/v1/content/posts"),
            client.get("/api/v1/content/posts", {"author": user.username}),
            client.get("/api/v1/content/posts", {"author": str(user.pk)}),
            client.get("/api/v1/content/me/posts"),
            client.get(f"/api/v1/content/media/{old.pk}"),
            client.get(f"{_post_path(post)}/revisions"),
            client.get(_post_path(link)),
            client.get(f"{_post_path(link)}/revisions"),
            client.get(f"/api/v1/content/media/{link_old_thumb.pk}"),
        ]

    link_new_urls = _byte_urls(owner, link_new_thumb.pk)
    link_old_urls = _byte_urls(client_for(other_user), link_old_thumb.pk)
    assert link_new_urls and link_old_urls
    for who in (other_user, bare_staff, None):
        c = client_for(who)
        for resp in reads(c):
            assert resp.status_code in (200, 401), resp.status_code
            text = resp.content.decode()
            assert SECRET not in text, (who, resp.request["PATH_INFO"])
            assert str(new.pk) not in text, (who, resp.request["PATH_INFO"])
            assert str(link_new_thumb.pk) not in text, (who, resp.request["PATH_INFO"])
            assert "new.example" not in text, (who, resp.request["PATH_INFO"])
        card = c.get(_post_path(link)).json()["metadata"]["link_preview"]
        assert (card["title"], card["image"]["id"]) == ("Old card", str(link_old_thumb.pk))
        assert c.get(f"/api/v1/content/media/{link_new_thumb.pk}").status_code == 404
        for url in link_new_urls:
            assert c.get(url).status_code == 404, (who, url)
        for url in link_old_urls:
            assert c.get(url).status_code == 200, (who, url)
        detail = c.get(_post_path(post)).json()
        assert (detail["title"], detail["sensitive"], detail["pending_revision"]) == (
            "Public title",
            False,
            None,
        )
        assert [m["id"] for m in detail["media"]] == [str(old.pk)], (
            "the detached image stays public until then"
        )
        r = c.get(f"/api/v1/content/media/{new.pk}")
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
        for url in new_urls:
            assert c.get(url).status_code == 404, (who, url)
        for url in old_urls:
            assert c.get(url).status_code == 200, (who, url)

    for reader in (user, moderator):
        c = client_for(reader)
        pending = c.get(_post_path(post)).json()["pending_revision"]
        assert pending["title"] == f"{SECRET} title" and pending["spoiler_text"] == f"{SECRET} cw"
        assert [m["id"] for m in pending["media"]] == [str(new.pk)]
        assert pending["media"][0]["description"] == f"{SECRET} alt"
        assert c.get(f"/api/v1/content/media/{new.pk}").status_code == 200
        for url in new_urls:
            assert c.get(url).status_code == 200, (reader, url)
        assert SECRET in c.get(f"{_post_path(post)}/revisions").content.decode()
        link_pending = c.get(_post_path(link)).json()["pending_revision"]
        assert link_pending["link_preview"]["card"]["title"] == f"{SECRET} card"
        assert str(link_new_thumb.pk) in [m["id"] for m in link_pending["media"]]
        assert c.get(f"/api/v1/content/media/{link_new_thumb.pk}").status_code == 200

    # Cleared: the edit replaces the public revision everywhere.
    from moderation.services import ai_verdict_apply

    ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision,
        provider="stub",
        model="stub",
        scores={},
        overall=0.0,
        labels=[],
        duration_ms=1.0,
    )
    detail = client_for(other_user).get(_post_path(post)).json()
    assert detail["title"] == f"{SECRET} title" and detail["edited_at"]
    assert [m["id"] for m in detail["media"]] == [str(new.pk)]
    assert client_for(other_user).get(f"/api/v1/content/media/{new.pk}").status_code == 200
    link.refresh_from_db()
    ai_verdict_apply(
        post_id=link.pk,
        revision=link.revision,
        provider="stub",
        model="stub",
        scores={},
        overall=0.0,
        labels=[],
        duration_ms=1.0,
    )
    card = client_for(other_user).get(_post_path(link)).json()["metadata"]["link_preview"]
    assert (card["title"], card["image"]["id"]) == (f"{SECRET} card", str(link_new_thumb.pk))
    assert client_for(other_user).get(f"/api/v1/content/media/{link_new_thumb.pk}").status_code == 200
    link_old_thumb.refresh_from_db()
    assert link_old_thumb.detached_at is not None


def _link_post_with_pending_card(owner) -> tuple[Post, Media, Media]:
    """A published link post with a public card and image, then an edit to a new link whose card and
    image the ``links`` worker built (as content.linkpreview does), both waiting for the prescreen."""
    from content import services as content_services

    link = PostFactory(author=owner, type=PostType.LINK, link_url="https://old.example/", published=True)
    old_thumb = _stored_image(
        owner, link, kind="thumbnail", is_primary=False, metadata={"link_preview": True}
    )
    Post.objects.filter(pk=link.pk).update(
        metadata={
            "link_preview": {
                "url": "https://old.example/",
                "title": "Old card",
                "description": "",
                "site_name": "old.example",
                "image_media_id": str(old_thumb.pk),
            }
        }
    )
    revision = content_services.post_edit(
        post_id=link.pk, actor=owner, changes={"link_url": "https://new.example/"}
    )
    assert revision.link_preview == {"status": "fetching"}
    new_thumb = media_services.media_attach_link_preview(
        post_id=link.pk, data=jpeg_bytes(), source_url="https://new.example/i.jpg", revision=revision.number
    )
    key = f"media/{owner.pk}/{new_thumb.pk}/large.jpg"
    storage.save(key, io.BytesIO(jpeg_bytes()), "image/jpeg")
    Media.objects.filter(pk=new_thumb.pk).update(
        processing_status=ProcessingStatus.READY, variants={"large": {"key": key, "mime_type": "image/jpeg"}}
    )
    card = {"url": "https://new.example/", "title": f"{SECRET} card", "description": "", "site_name": "n"}
    assert content_services.revision_link_preview_done(
        post_id=link.pk, revision=revision.number, card=card, image_media_id=new_thumb.pk
    )
    link.refresh_from_db()
    assert link.pending_revision.status == "pending" and link.link_url == "https://old.example/"
    new_thumb.refresh_from_db()
    return link, old_thumb, new_thumb


def _post_path(post) -> str:
    return f"/api/v1/content/posts/{post.pk}"


def test_mux_webhook_needs_its_signature(settings, user):
    """The Mux webhook is open (Mux calls it) but does nothing without a valid ``Mux-Signature``: an
    unsigned, wrongly signed or replayed event is 400 ``invalid_signature`` and changes no stream."""
    import json
    import time

    from media.live.models import LiveStream
    from media.live.providers.mux import sign_webhook

    settings.MUX_WEBHOOK_SECRET = "whsec-test"
    post, _ = make_live(user, PostStatus.PUBLISHED)
    LiveStream.objects.filter(post=post).update(provider="mux", provider_stream_id="mux-1")
    body = json.dumps({"type": "video.live_stream.idle", "data": {"id": "mux-1"}}).encode()
    url = "/api/v1/live/mux/webhook"
    for header in (
        "",
        sign_webhook(body, secret="wrong"),
        sign_webhook(body, secret="whsec-test", stamp=int(time.time()) - 3600),
    ):
        r = Client().post(url, body, content_type="application/json", HTTP_MUX_SIGNATURE=header)
        assert r.status_code == 400 and r.json()["code"] == "invalid_signature", r.content
        assert LiveStream.objects.get(post=post).status == "live"
    r = Client().post(
        url, body, content_type="application/json", HTTP_MUX_SIGNATURE=sign_webhook(body, secret="whsec-test")
    )
    assert r.status_code == 204, r.content
    assert LiveStream.objects.get(post=post).status == "ended"
