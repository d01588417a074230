"""Schemathesis against our own OpenAPI schema (DESIGN.md §4; issue "Production mode and proof under
faults", item 8).

Every operation in ``/api/v1/schema/`` is called in-process through the WSGI app three ways: as a
creator with a real token (positive and negative data) and anonymously (positive data). Every response
must pass ``CHECKS``: no 5xx, a documented status code and content type, a body that matches the
documented schema, and, for errors, a snake_case ``code`` with a ``detail``.

Path parameters are drawn from real rows as well as generated ones (the caller's draft, published,
image and failed-media posts, another creator's published poll and hidden draft), and each operation
first runs a few hand-written requests with meaningful bodies; as a creator, at least one of them must
succeed, so the fuzzing reaches real objects and not only 404s.

Nothing is excluded from generation: the generators do produce multipart ``file`` bodies for
``POST content/posts/{post_id}/media`` (some even real images). The local upload target
(``PUT content/uploads/{id}/data``) and the signed media URL (``/m/<token>``) are not in the schema
(their URL is issued by the API, never built by clients), so explicit tests below cover their bad input.

Bounds, for CI on 2 cores (the file takes about 40 s): ``max_examples=25`` per operation and mode,
a 3 s deadline per example, ``derandomize=True`` and no example database, so every run sends the same
requests.
"""

from __future__ import annotations

import base64
import io
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from content.models import PostType
from media import services as media_services
from media.live import keys
from media.live.models import LiveIngest, LiveStream
from media.models import ProcessingStatus
from tests.conftest import client_for
from tests.factories import MediaFactory, PollFactory, PostFactory
from tests.media.helpers import jpeg_bytes, png_bytes, upload_file

SCHEMA = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


@schemathesis.check
def error_body_has_code(ctx, response, case) -> bool | None:
    """DESIGN.md §4: every 4xx/5xx body is JSON with a stable snake_case ``code`` and a ``detail``."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), f"error body is not a JSON object: {body!r}"
    assert SNAKE_CASE.match(str(body.get("code", ""))), f"error code is not snake_case: {body!r}"
    assert isinstance(body.get("detail"), str) and body["detail"], f"error without a detail: {body!r}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_body_has_code,
]
FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=timedelta(seconds=3),
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
PASSES = {
    "token-positive": (True, GenerationMode.POSITIVE),
    "token-negative": (True, GenerationMode.NEGATIVE),
    "anonymous-positive": (False, GenerationMode.POSITIVE),
}


@pytest.fixture
def in_request_db(db):
    """Django's WSGI handler closes "old" connections around each request, which would end the test's
    transaction; Django's own test client disconnects the same signals."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


# Webhooks a provider signs over the exact body bytes: no hand-written request can succeed here (the
# signed path is tested in tests/media/test_livestream.py and tests/test_authz.py); the fuzzing below
# still checks that nothing it sends is a 500 or breaks the schema.
SIGNED_BY_A_PROVIDER = {"POST /api/v1/live/mux/webhook"}


def _world(user, other_user) -> dict:
    """Real rows for path parameters, and meaningful bodies for the hand-written requests."""
    # The local RTMP ingest's heartbeat, as a running one writes it: creating a livestream post works
    # (its deliberate 503 `livestream_unavailable` is tested in tests/media/test_livestream.py).
    from django.utils import timezone

    LiveIngest.objects.create(name="local", running=True, heartbeat_at=timezone.now())
    draft = PostFactory(author=user)
    published = PostFactory(author=user, published=True)
    image_draft = PostFactory(author=user, type=PostType.IMAGE, body="")
    image = MediaFactory(post=image_draft)
    empty_image_draft = PostFactory(author=user, type=PostType.IMAGE, body="")
    failed = MediaFactory(post=PostFactory(author=user, type=PostType.IMAGE, body=""))
    failed.processing_status = ProcessingStatus.FAILED
    failed.processing_error = "Could not decode the image."
    failed.save()
    published_media = MediaFactory(
        post=PostFactory(author=user, type=PostType.IMAGE, body="", published=True)
    )
    poll = PollFactory(post__published=True, post__author=other_user)
    hidden = MediaFactory(post=PostFactory(author=other_user, type=PostType.IMAGE, body=""))
    data = png_bytes()
    upload, _ = media_services.upload_create(
        owner=user, filename="a.png", content_type="image/png", size=len(data)
    )
    media_services.upload_receive(upload_id=upload.pk, stream=io.BytesIO(data), content_length=len(data))
    # Issue 14: a rejected post (appealable), one with an open appeal, the caller's webhook.
    from content import webhooks
    from moderation.models import Appeal
    from tests.factories import ModerationDecisionFactory, UserFactory

    moderator = UserFactory(is_staff=True)
    rejected, appealed = (PostFactory(author=user, status="rejected") for _ in range(2))
    for p in (rejected, appealed):
        ModerationDecisionFactory(post=p, moderator=moderator, action="reject", to_status="rejected")
    Appeal.objects.create(
        post=appealed, author=user, text="Please.", decision=appealed.decisions.get(action="reject")
    )
    hook, _ = webhooks.webhook_create(user=user, url="https://example.com/hook", events=["notification"])
    other_hook, _ = webhooks.webhook_create(
        user=other_user, url="https://example.com/h", events=["notification"]
    )
    live = PostFactory(author=user, type=PostType.LIVESTREAM, title="Live", body="", published=True)
    LiveStream.objects.create(
        post=live, owner=user, provider="local", key_hash=keys.hash_key("k"), key_encrypted=keys.encrypt("k")
    )
    # A published voice note and its transcript (issue 17: GET/PATCH content/media/{id}/transcript).
    spoken = MediaFactory(
        post=PostFactory(author=user, type=PostType.AUDIO, body="", published=True),
        kind="audio",
        mime_type="audio/mp4",
    )
    transcript = MediaFactory(
        post=spoken.post,
        parent=spoken,
        kind="transcript",
        is_primary=False,
        mime_type="text/plain",
        metadata={"speech": True, "language": "en", "segments": [[0.0, 1.0, "hello there", 0.9]]},
    )
    posts = [
        draft,
        published,
        image_draft,
        empty_image_draft,
        poll.post,
        hidden.post,
        live,
        rejected,
        appealed,
    ]
    media = [image, failed, published_media, hidden, spoken, transcript]
    # Resumable uploads (DESIGN.md §8): the caller's open one, another user's, and a finished single one.
    resumable = [
        media_services.upload_create(
            owner=who, filename="v.mp4", content_type="video/mp4", size=3000, resumable=True
        )[0]
        for who in (user, other_user)
    ]
    part_data = b"\0" * 3000
    part = media_services.upload_part_receive(
        upload_id=resumable[0].pk, part_number=1, stream=io.BytesIO(part_data), content_length=3000
    )
    return {
        "upload_id": [str(u.pk) for u in [*resumable, upload]],
        "post_id": [str(p.pk) for p in posts],
        "media_id": [str(m.pk) for m in media],
        "webhook_id": [str(hook.pk), str(other_hook.pk)],
        # DELETE .../media/{media_id}: the right pair, another post's media, and a hidden pair.
        "pairs": [(image_draft.pk, image.pk), (draft.pk, published_media.pk), (hidden.post_id, hidden.pk)],
        "bodies": {
            "POST /api/v1/auth/register": {"username": "fuzz.creator", "password": "A-long-pass-phrase-42"},
            "POST /api/v1/auth/token": {"username": user.username, "password": PASSWORD},
            "POST /api/v1/content/posts": {
                "type": "poll",
                "poll": {"question": "Which?", "options": ["This", "That"]},
            },
            "PATCH /api/v1/content/posts/{post_id}": {"title": "Edited", "body": "New body."},
            "POST /api/v1/content/posts/{post_id}/poll/vote": {"option_ids": [poll.options.first().pk]},
            "POST /api/v1/content/posts/{post_id}/report": {"reason": "spam", "detail": "Ads."},
            "POST /api/v1/content/posts/{post_id}/media": {"upload_id": str(upload.pk)},
            "POST /api/v1/content/uploads": {"filename": "a.jpg", "content_type": "image/jpeg", "size": 999},
            "POST /api/v1/content/uploads/{upload_id}/parts": {"part_numbers": [1]},
            "PATCH /api/v1/content/media/{media_id}/transcript": {"text": "Hello there."},
            "POST /api/v1/content/uploads/{upload_id}/complete": {
                "parts": [{"part_number": 1, "etag": part["etag"]}]
            },
            "POST /api/v1/content/posts/{post_id}/appeal": {"text": "It is my own photo."},
            "POST /api/v1/content/notifications/read": {"up_to": 10},
            "PATCH /api/v1/content/notifications/preferences": {"email_notifications": False},
            "POST /api/v1/content/webhooks": {"url": "https://example.com/in", "events": ["post.updated"]},
        },
    }


def _path_choices(operation, world) -> list[dict]:
    names = {p.name for p in operation.path_parameters}
    if names == {"post_id", "media_id"}:
        return [{"post_id": str(p), "media_id": str(m)} for p, m in world["pairs"]]
    if names == {"post_id"}:
        return [{"post_id": p} for p in world["post_id"]]
    if names == {"media_id"}:
        return [{"media_id": m} for m in world["media_id"]]
    if names == {"upload_id"}:
        return [{"upload_id": u} for u in world["upload_id"]]
    if names == {"webhook_id"}:
        return [{"webhook_id": w} for w in world["webhook_id"]]
    assert not names, f"{operation.label}: add real values for path parameters {names}"
    return [{}]


@pytest.mark.parametrize("pass_name", list(PASSES))
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: o.label)
def test_operation_conforms_to_schema(operation, pass_name, user, other_user, in_request_db):
    authenticated, mode = PASSES[pass_name]
    world = _world(user, other_user)
    headers = {"Authorization": f"Token {user.auth_token.key}"} if authenticated else {}
    body = world["bodies"].get(operation.label)
    paths = _path_choices(operation, world)

    statuses = []
    for path_parameters in paths:
        kwargs = {"path_parameters": path_parameters, "headers": headers}
        if body is not None:
            kwargs.update(body=body, media_type="application/json")
        statuses.append(operation.Case(**kwargs).call_and_validate(checks=CHECKS).status_code)
    if authenticated and operation.label not in SIGNED_BY_A_PROVIDER:
        assert any(code < 300 for code in statuses), f"no hand-written request succeeded: {statuses}"

    if mode == GenerationMode.NEGATIVE and not any(paths) and body is None and not operation.query:
        return  # nothing a negative case could break (no parameter, no body): hand-written only
    strategies = [operation.as_strategy(generation_mode=mode, headers=headers)]
    if any(paths):
        strategies += [
            operation.as_strategy(generation_mode=mode, headers=headers, path_parameters=p) for p in paths
        ]

    @FUZZ_SETTINGS
    @given(case=st.one_of(strategies))
    def fuzz(case):
        case.call_and_validate(checks=CHECKS)

    if mode == GenerationMode.NEGATIVE and not _has_inputs(operation):
        return  # nothing to make invalid (GET content/me/quota takes no input at all)
    fuzz()


def _has_inputs(operation) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody") or operation.path_parameters)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: o.label)
def test_a_wrong_token_is_a_documented_401(operation, user, other_user, in_request_db):
    """Any operation that reads credentials answers a wrong token with 401, public reads included:
    so 401 must be documented there too (it was not for GET post, GET media and the feed)."""
    world = _world(user, other_user)
    body = world["bodies"].get(operation.label)
    kwargs = {
        "path_parameters": _path_choices(operation, world)[0],
        "headers": {"Authorization": "Token nope"},
    }
    if body is not None:
        kwargs.update(body=body, media_type="application/json")
    response = operation.Case(**kwargs).call_and_validate(checks=CHECKS)
    # Open endpoints read no token: auth, and webhooks authenticated by their signature instead.
    if operation.label not in (
        "POST /api/v1/auth/register",
        "POST /api/v1/auth/token",
        *SIGNED_BY_A_PROVIDER,
    ):
        assert response.status_code == 401
        assert response.json()["code"] == "authentication_failed"


# --- regressions found by the fuzzing, and what the schema cannot describe -----------------------------


def test_every_operation_is_fuzzed():
    labels = {o.label for o in OPERATIONS}
    assert "POST /api/v1/content/posts/{post_id}/media" in labels
    assert len(labels) >= 17


@pytest.mark.parametrize("url", ["/api/v1/content/posts", "/api/v1/content/me/posts"])
@pytest.mark.parametrize(
    "cursor",
    [
        "\u00e9t\u00e9",  # not even ASCII: DRF said 404
        base64.b64encode(b"p=garbage").decode(),  # a position that is no timestamp: was a 500
        base64.b64encode(b"p=2024-13-45T00:00:00").decode(),  # a timestamp that does not exist: was a 500
        base64.b64encode(b"p=\x00").decode(),
    ],
)
def test_a_mangled_cursor_is_400(user, url, cursor):
    PostFactory(author=user, published=True)
    r = client_for(user).get(url, {"cursor": cursor})
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid" and "cursor" in r.json()["errors"]


def test_a_real_cursor_still_pages(user):
    for _ in range(3):
        PostFactory(author=user, published=True)
    c = client_for(user)
    first = c.get("/api/v1/content/posts", {"page_size": 2}).json()
    second = c.get(urlsplit(first["next"]).path + "?" + urlsplit(first["next"]).query).json()
    assert len(first["results"]) == 2 and len(second["results"]) == 1


@pytest.mark.parametrize("author", ["²", "9" * 30, "a\x00b"])
def test_feed_author_filter_refuses_or_ignores_odd_values(user, author):
    """Unicode digits (``"²".isdigit()``) and ids beyond a bigint were 500s; NUL is refused before it
    reaches PostgreSQL, which cannot store it."""
    PostFactory(author=user, published=True)
    r = client_for(user).get("/api/v1/content/posts", {"author": author})
    if "\x00" in author:
        assert r.status_code == 400 and r.json()["errors"]["author"]
    else:
        assert r.status_code == 200 and r.json()["results"] == []


def test_feed_author_filter_by_id_and_username(user, other_user):
    mine = PostFactory(author=user, published=True)
    PostFactory(author=other_user, published=True)
    c = client_for()
    for value in (str(user.pk), user.username):
        assert [p["id"] for p in c.get("/api/v1/content/posts", {"author": value}).json()["results"]] == [
            str(mine.pk)
        ]


def test_post_json_has_every_documented_field(user):
    """``rejection_reason`` was left out unless rejected and ``link_url`` was documented as a URI while
    blank on non-link posts: both broke the documented Post schema."""
    post = PostFactory(author=user)
    data = client_for(user).get(f"/api/v1/content/posts/{post.pk}").json()
    assert (data["rejection_reason"], data["link_url"]) == ("", "")
    post.status, post.rejection_reason = "rejected", "Spam."
    post.save()
    assert client_for(user).get(f"/api/v1/content/posts/{post.pk}").json()["rejection_reason"] == "Spam."


def _start_upload(c, data: bytes, content_type: str = "image/jpeg") -> dict:
    body = {"filename": "a.jpg", "content_type": content_type, "size": len(data)}
    r = c.post("/api/v1/content/uploads", body, format="json")
    assert r.status_code == 201, r.content
    return r.json()


def _target_path(target: dict) -> str:
    parts = urlsplit(target["url"])
    return f"{parts.path}?{parts.query}"


def _json_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.content)
    assert r["Content-Type"].startswith("application/json"), r["Content-Type"]
    body = r.json()
    assert SNAKE_CASE.match(body["code"]) and body["detail"]
    if code:
        assert body["code"] == code, body
    return body


@pytest.mark.parametrize("method", ["get", "delete", "patch"])
def test_upload_target_wrong_method_is_json_405(user, method):
    """``require_http_methods`` answered an empty text/html 405."""
    target = _start_upload(client_for(user), jpeg_bytes())
    r = getattr(client_for(), method)(_target_path(target))
    _json_error(r, 405, "method_not_allowed")
    assert r["Allow"] == "PUT, POST"


def test_media_file_wrong_method_is_json_405():
    _json_error(client_for().post("/m/whatever"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"", 400, "empty_file"),
        (b"x" * 5000, 413, "file_too_large"),
        (bytes(range(256)) * 2, 200, None),  # any bytes are taken here; attaching sniffs them
    ],
)
def test_upload_target_bad_bodies(user, body, status, code):
    target = _start_upload(client_for(user), b"y" * 1000)
    r = client_for().generic("PUT", _target_path(target), body, content_type="image/jpeg")
    if code:
        _json_error(r, status, code)
    else:
        assert r.status_code == 200 and r.json()["state"] == "received"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda path: path.replace("signature=", "signature=x"),
        lambda path: path.split("?")[0],
        lambda path: path.split("?")[0] + "?signature=%00%ff",
        lambda path: re.sub(r"uploads/[0-9a-f-]+/", "uploads/00000000-0000-0000-0000-000000000000/", path),
    ],
    ids=["tampered", "missing", "garbage", "other-upload"],
)
def test_upload_target_bad_signatures_are_403(user, mangle):
    target = _start_upload(client_for(user), jpeg_bytes())
    r = client_for().generic("PUT", mangle(_target_path(target)), b"abc", content_type="image/jpeg")
    _json_error(r, 403, "invalid_signature")


def test_uploaded_garbage_cannot_be_attached(user):
    """The generators never produce an upload that is received but not media: a 415, not a 500."""
    c = client_for(user)
    data = b"\x00garbage, not an image" * 10
    target = _start_upload(c, data)
    assert (
        client_for().generic("PUT", _target_path(target), data, content_type="image/jpeg").status_code == 200
    )
    post = PostFactory(author=user, type=PostType.IMAGE, body="")
    r = c.post(f"/api/v1/content/posts/{post.pk}/media", {"upload_id": target["upload_id"]}, format="json")
    _json_error(r, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "payload",
    [
        {"file": b"not a file, a field"},
        {"is_primary": "maybe"},
        {"upload_id": "not-a-uuid"},
    ],
)
def test_multipart_attach_with_odd_fields_is_400(user, payload):
    post = PostFactory(author=user, type=PostType.IMAGE, body="")
    r = client_for(user).post(f"/api/v1/content/posts/{post.pk}/media", payload, format="multipart")
    _json_error(r, 400, "invalid")


def test_multipart_attach_of_a_real_image(user):
    post = PostFactory(author=user, type=PostType.IMAGE, body="")
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"file": upload_file("x.bin", jpeg_bytes()), "is_primary": "false"},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    assert (r.json()["mime_type"], r.json()["is_primary"]) == ("image/jpeg", False)


@pytest.mark.parametrize("token", ["", "garbage", "a" * 5000, "%00", "..%2F..%2Fetc%2Fpasswd"])
def test_media_file_with_a_bad_token_is_json_error(token):
    r = client_for().get(f"/m/{token}")
    assert r.status_code in (403, 404), r.status_code
    _json_error(r, r.status_code)
