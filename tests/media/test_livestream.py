"""Livestreams without an encoder (DESIGN.md §13): provisioning and the 503 when the ingest is down,
who sees the key, key rotation, the ingest's publish check, ending, the recording becoming a medium
the sweep knows, the admin's "Live now" with the player and End, and the Mux client against a fake
Mux. The encoder-to-recording path with real RTMP is tests/integration/test_livestream.py."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from content.models import Post, PostStatus
from media import storage
from media.live import keys, services
from media.live.models import LiveIngest, LiveStream
from media.live.providers import LiveProviderError, get_live_provider
from media.live.providers.mux import sign_webhook, verify_webhook
from media.models import Media
from media.sweep import sweep_pending_media
from tests.conftest import client_for, queued
from tests.moderation.test_admin import QUEUE, decide_url, detail_url, login, make_moderator

from .fake_mux import FakeMux

pytestmark = pytest.mark.django_db


@pytest.fixture
def ingest_up(db):
    """The local ingest's heartbeat, as a running ``run_live_ingest`` writes it."""
    return LiveIngest.objects.create(
        name="local", running=True, heartbeat_at=timezone.now(), rtmp_url="rtmp://127.0.0.1:1935/live"
    )


def create(user, title="Live") -> dict:
    r = client_for(user).post("/api/v1/content/posts", {"type": "livestream", "title": title}, format="json")
    assert r.status_code == 201, r.content
    return r.json()


def published_stream(user, platform) -> tuple[dict, LiveStream]:
    platform(moderation_mode="reactive_only")
    post = create(user)
    r = client_for(user).post(f"/api/v1/content/posts/{post['id']}/publish")
    assert r.json()["status"] == "published"
    return post, LiveStream.objects.get(post_id=post["id"])


def test_creating_a_livestream_answers_503_with_the_reason_when_the_ingest_is_down(user):
    LiveIngest.objects.create(name="local", running=False, error="nginx's RTMP module is not installed")
    r = client_for(user).post("/api/v1/content/posts", {"type": "livestream", "title": "x"}, format="json")
    assert r.status_code == 503
    assert r.json()["code"] == "livestream_unavailable"
    assert "RTMP module is not installed" in r.json()["detail"]
    assert not Post.objects.exists() and not LiveStream.objects.exists()  # rolled back

    # A heartbeat that stopped is "down" too; other posts are unaffected.
    LiveIngest.objects.filter(name="local").update(
        running=True, error="", heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    r = client_for(user).post("/api/v1/content/posts", {"type": "livestream", "title": "x"}, format="json")
    assert r.status_code == 503 and "not running" in r.json()["detail"]
    r = client_for(user).post("/api/v1/content/posts", {"type": "text", "body": "hello"}, format="json")
    assert r.status_code == 201


def test_the_key_is_the_authors_only_and_not_stored_in_clear(user, other_user, ingest_up, platform):
    post, stream = published_stream(user, platform)
    ls = post["livestream"]
    key = ls["stream_key"]
    assert key.startswith("pf_") and len(key) > 30
    assert ls["ingest_url"] == "rtmp://127.0.0.1:1935/live"
    assert ls["obs"]["server"] == ls["ingest_url"] and ls["obs"]["stream_key"] == key
    assert ls["obs"]["keyframe_interval_seconds"] == 2 and key in ls["obs"]["ffmpeg"]
    assert stream.key_hash == keys.hash_key(key) and key not in stream.key_encrypted
    with connection.cursor() as cur:
        cur.execute("SELECT * FROM media_livestream")
        assert key not in json.dumps([list(map(str, row)) for row in cur.fetchall()])
    for viewer in (other_user, None):
        seen = client_for(viewer).get(f"/api/v1/content/posts/{post['id']}").json()["livestream"]
        assert seen["status"] == "idle"
        assert not {"stream_key", "ingest_url", "obs", "error"} & set(seen), seen
        feed = client_for(viewer).get("/api/v1/content/posts").json()["results"]
        assert key not in json.dumps(feed)


def test_rotating_the_key_refuses_the_old_one(user, other_user, ingest_up, platform):
    post, stream = published_stream(user, platform)
    old = post["livestream"]["stream_key"]
    assert services.livestream_publish_check(old).pk == stream.pk
    r = client_for(other_user).post(f"/api/v1/content/posts/{post['id']}/livestream/key")
    assert r.status_code == 403  # visible (published) but not theirs
    r = client_for(user).post(f"/api/v1/content/posts/{post['id']}/livestream/key")
    assert r.status_code == 200, r.content
    new = r.json()["livestream"]["stream_key"]
    assert new != old
    with pytest.raises(services.PublishRefused, match="unknown stream key"):
        services.livestream_publish_check(old)
    assert services.livestream_publish_check(new).pk == stream.pk


def test_the_ingest_refuses_drafts_unknown_keys_and_streams_that_already_ran(user, ingest_up, platform):
    post = create(user)
    key = post["livestream"]["stream_key"]
    with pytest.raises(services.PublishRefused, match="draft"):
        services.livestream_publish_check(key)
    with pytest.raises(services.PublishRefused, match="unknown"):
        services.livestream_publish_check("pf_nope")
    platform(moderation_mode="reactive_only")
    client_for(user).post(f"/api/v1/content/posts/{post['id']}/publish")
    stream = services.livestream_publish_check(key)
    assert services.livestream_went_live(
        stream_id=stream.pk, hls_folder=storage.live_folder(user.pk, stream.pk)
    )
    with pytest.raises(services.PublishRefused, match="is live"):
        services.livestream_publish_check(key)


def test_end_by_author_or_moderator_and_only_once(user, other_user, ingest_up, platform):
    post, stream = published_stream(user, platform)
    url = f"/api/v1/content/posts/{post['id']}/livestream/end"
    assert client_for(other_user).post(url, {}, format="json").status_code == 403
    assert client_for().post(url, {}, format="json").status_code == 401
    r = client_for(user).post(url, {"reason": "that's all folks"}, format="json")
    assert r.status_code == 200 and r.json()["livestream"]["status"] == "ended"
    assert r.json()["livestream"]["end_reason"] == "that's all folks"
    r = client_for(user).post(url, {}, format="json")
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    # A moderator ends another stream.
    post2 = create(user, "second")
    moderator = make_moderator()
    r = client_for(moderator).post(f"/api/v1/content/posts/{post2['id']}/livestream/end", {}, format="json")
    assert r.status_code == 200 and LiveStream.objects.get(post_id=post2["id"]).status == "ended"
    # A post that is not a livestream has none.
    text = client_for(user).post("/api/v1/content/posts", {"type": "text", "body": "b"}, format="json").json()
    r = client_for(user).post(f"/api/v1/content/posts/{text['id']}/livestream/end", {}, format="json")
    assert r.status_code == 404 and r.json()["code"] == "livestream_not_found"


def test_the_recording_becomes_a_queued_medium_that_the_sweep_knows(
    user, ingest_up, platform, broker, django_capture_on_commit_callbacks
):
    post, stream = published_stream(user, platform)
    folder = storage.live_folder(user.pk, stream.pk)
    services.livestream_went_live(stream_id=stream.pk, hls_folder=folder)
    media_id = "0b7f6a53-4a8e-4b7b-9d43-4f0b5ab2a001"
    key = storage.media_key(user.pk, media_id, "original", "ts")
    storage.save(key, io.BytesIO(b"G" * 188 * 10), "video/mp2t")  # in storage before the row exists
    recording = {
        "media_id": media_id,
        "key": key,
        "size_bytes": 1880,
        "sha256": "ab" * 32,
        "mime_type": "video/mp2t",
    }
    with django_capture_on_commit_callbacks(execute=True):
        media = services.livestream_finished(
            stream_id=stream.pk, reason="the encoder stopped", recording=recording
        )
    assert media is not None and media.kind == "livestream_recording"
    assert media.processing_status == "pending"
    assert media.post_id == stream.post_id and not media.is_primary
    stream.refresh_from_db()
    assert stream.status == "ended" and stream.recording_media_id == media.pk and stream.ended_at
    messages = queued(broker, "media.video")
    assert [m.actor_name for m in messages] == ["process_livestream_recording_media"]
    assert messages[0].args == (str(media.pk),)
    # Idempotent: the ingest repeating itself after a crash does not make a second medium.
    assert (
        services.livestream_finished(stream_id=stream.pk, reason="again", recording=recording).pk == media.pk
    )
    assert Media.objects.filter(kind="livestream_recording").count() == 1
    # The public sees it on the post (it joined the public revision).
    d = client_for(None).get(f"/api/v1/content/posts/{post['id']}").json()
    assert [m["id"] for m in d["media"]] == [str(media.pk)]
    assert d["livestream"]["recording_media_id"] == str(media.pk)
    # The message was lost (a broker restart): the sweep re-queues the pending recording.
    broker.flush_all()
    Media.objects.filter(pk=media.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_pending_media(pending_grace_minutes=5)
    assert [r.media_id for r in report.rows] == [str(media.pk)]
    assert [m.actor_name for m in queued(broker, "media.video")] == ["process_livestream_recording_media"]


def test_a_stream_stops_when_its_post_is_hidden(user, ingest_up, platform):
    post, stream = published_stream(user, platform)
    services.livestream_went_live(stream_id=stream.pk, hls_folder=storage.live_folder(user.pk, stream.pk))
    assert services.livestream_should_stop(stream.pk) is None
    Post.objects.filter(pk=post["id"]).update(status=PostStatus.QUARANTINED)
    assert services.livestream_should_stop(stream.pk) == "post quarantined"
    Post.objects.filter(pk=post["id"]).update(status=PostStatus.PUBLISHED, deleted_at=timezone.now())
    assert services.livestream_should_stop(stream.pk) == "post deleted"


def test_moderators_see_live_streams_with_the_player_and_end_them(user, ingest_up, platform):
    post, stream = published_stream(user, platform)
    folder = storage.live_folder(user.pk, stream.pk)
    services.livestream_went_live(stream_id=stream.pk, hls_folder=folder)
    storage.save(f"{folder}/index.m3u8", io.BytesIO(b"#EXTM3U\n#EXTINF:2.0,\nseg_00000.ts\n"), None)
    services.livestream_segment_seen(stream.pk)
    moderator = make_moderator()
    page = login(moderator).get(QUEUE)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="pf-live-now"' in html and detail_url(Post.objects.get(pk=post["id"])) in html
    detail = login(moderator).get(detail_url(Post.objects.get(pk=post["id"]))).content.decode()
    assert 'id="pf-live-player"' in detail and "/m/l/" in detail and "hls.min.js" in detail
    assert 'value="end_livestream"' in detail
    r = login(moderator).post(decide_url(Post.objects.get(pk=post["id"])), {"op": "end_livestream"})
    assert r.status_code == 302
    stream.refresh_from_db()
    assert stream.status == "ended" and stream.end_reason == "ended by a moderator"
    assert 'id="pf-live-now"' not in login(moderator).get(QUEUE).content.decode()


# --- Mux -------------------------------------------------------------------------------------------------


@pytest.fixture
def mux(settings):
    with FakeMux() as server:
        settings.LIVESTREAM_PROVIDER = "mux"
        settings.MUX_API_URL = server.url
        settings.MUX_TOKEN_ID, settings.MUX_TOKEN_SECRET = "mux-id", "mux-secret"
        settings.MUX_WEBHOOK_SECRET = "whsec"
        yield server


def test_mux_provisions_ends_rotates_and_follows_signed_webhooks(
    user, mux, platform, django_capture_on_commit_callbacks
):
    post, stream = published_stream(user, platform)
    created = mux.calls[0]
    assert (created.method, created.path) == ("POST", "/video/v1/live-streams")
    assert created.body["playback_policies"] == ["public"] and created.body["passthrough"] == str(stream.pk)
    assert created.body["new_asset_settings"] == {"playback_policies": ["public"]}
    assert created.auth == mux.expected_auth
    remote = mux.streams[stream.provider_stream_id]
    assert post["livestream"]["stream_key"] == remote["stream_key"]
    assert stream.provider_playback_id == remote["playback_ids"][0]["id"]
    assert get_live_provider("mux").status(stream) == "idle"

    r = client_for(user).post(f"/api/v1/content/posts/{post['id']}/livestream/key")
    assert (
        r.status_code == 200
        and r.json()["livestream"]["stream_key"] == remote["stream_key"] != post["livestream"]["stream_key"]
    )

    def hook(kind, data):
        body = json.dumps({"type": kind, "data": data}).encode()
        return client_for(None).post(
            "/api/v1/live/mux/webhook", body, content_type="application/json",
            HTTP_MUX_SIGNATURE=sign_webhook(body, secret="whsec"),
        )  # fmt: skip

    assert hook("video.live_stream.active", {"id": stream.provider_stream_id}).status_code == 204
    live = client_for(None).get(f"/api/v1/content/posts/{post['id']}").json()["livestream"]
    assert live["status"] == "live"
    assert live["playback_url"] == f"https://stream.mux.com/{stream.provider_playback_id}.m3u8"
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).post(f"/api/v1/content/posts/{post['id']}/livestream/end", {}, format="json")
    assert r.status_code == 200
    assert [(c.method, c.path.rsplit("/", 1)[-1]) for c in mux.calls[-2:]] == [
        ("PUT", "complete"),
        ("PUT", "disable"),
    ]
    assert remote["status"] == "disabled" and get_live_provider("mux").status(stream) == "ended"
    assert (
        hook(
            "video.asset.live_stream_completed",
            {"id": "asset-1", "live_stream_id": stream.provider_stream_id},
        ).status_code
        == 204
    )
    assert LiveStream.objects.get(pk=stream.pk).provider_data["asset_id"] == "asset-1"
    get_live_provider("mux").delete(stream)
    assert stream.provider_stream_id not in mux.streams
    get_live_provider("mux").delete(stream)  # idempotent (404 is fine)


def test_mux_failures_are_503_with_the_reason_and_roll_back(user, mux, settings):
    mux.fail_next = 500
    r = client_for(user).post("/api/v1/content/posts", {"type": "livestream", "title": "x"}, format="json")
    assert r.status_code == 503 and r.json()["code"] == "livestream_unavailable"
    assert "Mux answered 500" in r.json()["detail"] and not Post.objects.exists()
    settings.MUX_TOKEN_SECRET = "wrong"
    with pytest.raises(LiveProviderError, match="401"):
        get_live_provider("mux").provision(stream_id="x")
    settings.MUX_TOKEN_ID = ""
    r = client_for(user).post("/api/v1/content/posts", {"type": "livestream", "title": "x"}, format="json")
    assert r.status_code == 503 and "MUX_TOKEN_ID" in r.json()["detail"]


def test_mux_signature_verification(settings):
    settings.MUX_WEBHOOK_SECRET = "whsec"
    body = b'{"type":"video.live_stream.active"}'
    now = 1_700_000_000
    good = sign_webhook(body, secret="whsec", stamp=now)
    assert verify_webhook(body, good, now=now + 10)
    assert not verify_webhook(body + b" ", good, now=now)  # body changed
    assert not verify_webhook(body, good, now=now + 3600)  # replayed later
    assert not verify_webhook(body, sign_webhook(body, secret="other", stamp=now), now=now)
    assert not verify_webhook(body, "garbage", now=now) and not verify_webhook(body, "", now=now)
    # Several v1 signatures (a secret being rolled): one valid is enough.
    assert verify_webhook(body, f"t={now},v1=00ff,{good.split(',')[1]}", now=now)


def test_status_changes_reach_the_author_as_events_and_notifications(
    user, ingest_up, platform, django_capture_on_commit_callbacks
):
    """DESIGN.md §10/§13: going live and ending are ``post.updated`` events with a ``livestream``
    object, and notifications (``livestream_live``, ``livestream_ended`` with the reason)."""
    from content import events
    from content.models import Notification

    data, stream = published_stream(user, platform)
    with django_capture_on_commit_callbacks(execute=True):
        services.livestream_went_live(stream_id=stream.pk, hls_folder=storage.live_folder(user.pk, stream.pk))
    with django_capture_on_commit_callbacks(execute=True):
        services.livestream_end(post_id=data["id"], actor=user)
    told = list(Notification.objects.filter(user=user).order_by("created_at").values_list("type", "reason"))
    assert told[-2:] == [("livestream_live", ""), ("livestream_ended", "ended by its author")]
    log = events.get_log().read(user.pk, "0-0", 0)
    live = [e.data["livestream"]["status"] for e in log if "livestream" in e.data]
    assert live[-2:] == ["live", "ended"]
