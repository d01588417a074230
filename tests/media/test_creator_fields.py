"""Alt text, focal point, processing progress and the quota call (DESIGN §9)."""

import pytest

from media.models import Media, ProcessingStatus, ProcessorRun
from media.progress import steps_progress
from tests.conftest import client_for
from tests.factories import MediaFactory, PostFactory, UploadFactory
from tests.media.helpers import jpeg_bytes, upload_file

pytestmark = pytest.mark.django_db


def _attach(client, post, **fields):
    return client.post(
        f"/api/v1/content/posts/{post.pk}/media", {"file": upload_file("a.jpg", jpeg_bytes()), **fields}
    )


def test_multipart_attach_with_alt_text_and_focus(user):
    post = PostFactory(author=user, type="image", body="")
    r = _attach(client_for(user), post, description="A red square on white.", focus="0.25,-0.5")
    assert r.status_code == 201, r.json()
    assert r.json()["description"] == "A red square on white."
    assert r.json()["focus"] == {"x": 0.25, "y": -0.5}
    row = Media.objects.get(pk=r.json()["id"])
    assert (row.description, row.focus_x, row.focus_y) == ("A red square on white.", 0.25, -0.5)


def test_json_attach_with_alt_text_and_focus_object(user):
    from tests.media.test_uploads import _put, _start

    data = jpeg_bytes()
    c = client_for(user)
    target = _start(c, data).json()
    assert _put(client_for(), target, data).status_code == 200
    post = PostFactory(author=user, type="image", body="")
    r = c.post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"upload_id": target["upload_id"], "description": "Alt", "focus": {"x": -1, "y": 1}},
        format="json",
    )
    assert r.status_code == 201, r.json()
    assert (r.json()["description"], r.json()["focus"]) == ("Alt", {"x": -1.0, "y": 1.0})


@pytest.mark.parametrize(
    "fields",
    [
        {"description": "x" * 1501},
        {"focus": "2,0"},
        {"focus": "0,-1.5"},
        {"focus": "zero,one"},
        {"focus": "1"},
    ],
)
def test_attach_refuses_bad_alt_text_and_focus(user, fields):
    post = PostFactory(author=user, type="image", body="")
    r = _attach(client_for(user), post, **fields)
    assert r.status_code == 400 and r.json()["code"] == "invalid"
    assert set(r.json()["errors"]) == set(fields)
    assert not Media.objects.filter(post=post).exists()


def test_patch_media_sets_and_clears_alt_text_and_focus(user, other_user):
    m = MediaFactory(post=PostFactory(author=user, type="image", body=""))
    c = client_for(user)
    r = c.patch(
        f"/api/v1/content/media/{m.pk}",
        {"description": "Now with alt", "focus": {"x": 0.1, "y": 0.2}},
        format="json",
    )
    assert r.status_code == 200, r.json()
    assert (r.json()["description"], r.json()["focus"]) == ("Now with alt", {"x": 0.1, "y": 0.2})
    m.refresh_from_db()
    assert (m.description, m.focus_x, m.focus_y) == ("Now with alt", 0.1, 0.2)
    r = c.patch(f"/api/v1/content/media/{m.pk}", {"focus": None}, format="json")
    assert r.status_code == 200 and r.json()["focus"] is None and r.json()["description"] == "Now with alt"
    # Validation, then who may: another user gets 404 on a draft; anonymous 401.
    bad = c.patch(f"/api/v1/content/media/{m.pk}", {"focus": {"x": 3, "y": 0}}, format="json")
    assert bad.status_code == 400 and "focus" in bad.json()["errors"]
    assert (
        client_for(other_user)
        .patch(f"/api/v1/content/media/{m.pk}", {"description": "pwn"}, format="json")
        .status_code
        == 404
    )
    assert (
        client_for().patch(f"/api/v1/content/media/{m.pk}", {"description": "pwn"}, format="json").status_code
        == 401
    )
    m.refresh_from_db()
    assert m.description == "Now with alt"


def _published_with_image(user, description="Old alt"):
    post = PostFactory(author=user, type="image", body="b", published=True)
    m = MediaFactory(post=post, processing_status=ProcessingStatus.READY, description=description)
    return post, m


def test_patch_alt_text_of_a_published_post_waits_for_the_prescreen(user, other_user, platform):
    from content.models import PostRevision
    from moderation.services import ai_verdict_apply

    platform(moderation_mode="ai_prescreen")
    post, m = _published_with_image(user)
    r = client_for(user).patch(f"/api/v1/content/media/{m.pk}", {"description": "New alt"}, format="json")
    assert r.status_code == 202, r.content
    assert r.json()["description"] == "Old alt", "the medium's JSON shows what the public sees"
    m.refresh_from_db()
    assert m.description == "Old alt"
    post.refresh_from_db()
    pending = post.pending_revision
    assert pending.status == "pending" and list(pending.items.values_list("description", flat=True)) == [
        "New alt"
    ]
    public = client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").json()
    assert public["media"][0]["description"] == "Old alt" and public["pending_revision"] is None
    assert client_for(other_user).get(f"/api/v1/content/media/{m.pk}").json()["description"] == "Old alt"
    owner = client_for(user).get(f"/api/v1/content/posts/{post.pk}").json()
    assert owner["pending_revision"]["media"][0]["description"] == "New alt"
    ai_verdict_apply(
        post_id=post.pk,
        revision=pending.number,
        provider="stub",
        model="stub",
        scores={},
        overall=0.01,
        labels=[],
        duration_ms=1.0,
    )
    m.refresh_from_db()
    assert m.description == "New alt"
    assert client_for(other_user).get(f"/api/v1/content/media/{m.pk}").json()["description"] == "New alt"
    assert PostRevision.objects.filter(post=post, status="cleared").get().pk == pending.pk


def test_patch_alt_text_of_a_published_post_is_public_at_once_in_reactive_only(user, other_user, platform):
    platform(moderation_mode="reactive_only")
    post, m = _published_with_image(user)
    r = client_for(user).patch(f"/api/v1/content/media/{m.pk}", {"description": "New alt"}, format="json")
    assert r.status_code == 200 and r.json()["description"] == "New alt"
    assert client_for(other_user).get(f"/api/v1/content/media/{m.pk}").json()["description"] == "New alt"
    post.refresh_from_db()
    assert post.pending_revision_id is None and post.edited_at is not None


def test_patch_focus_of_a_published_post_changes_in_place(user, other_user, platform):
    platform(moderation_mode="ai_prescreen")
    post, m = _published_with_image(user)
    r = client_for(user).patch(
        f"/api/v1/content/media/{m.pk}", {"focus": {"x": 0.5, "y": -0.5}}, format="json"
    )
    assert r.status_code == 200 and r.json()["focus"] == {"x": 0.5, "y": -0.5}
    assert client_for(other_user).get(f"/api/v1/content/media/{m.pk}").json()["focus"] == {
        "x": 0.5,
        "y": -0.5,
    }
    post.refresh_from_db()
    assert post.pending_revision_id is None and not post.revisions.exclude(status="cleared").exists()


def test_patch_media_of_others_or_of_a_quarantined_post_is_refused(user, other_user):
    post, m = _published_with_image(user)
    assert (
        client_for(other_user)
        .patch(f"/api/v1/content/media/{m.pk}", {"description": "x"}, format="json")
        .status_code
        == 403
    )
    post.status = "quarantined"
    post.save(update_fields=["status"])
    r = client_for(user).patch(f"/api/v1/content/media/{m.pk}", {"description": "late"}, format="json")
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    m.refresh_from_db()
    assert m.description == "Old alt"


def test_focus_is_constrained_in_the_database(user):
    from django.db import IntegrityError, transaction

    m = MediaFactory(post=PostFactory(author=user, type="image", body=""))
    with pytest.raises(IntegrityError), transaction.atomic():
        Media.objects.filter(pk=m.pk).update(focus_x=1.5, focus_y=0)


# --- progress ----------------------------------------------------------------------------------------
def test_progress_follows_the_running_attempts_ffmpeg_percent(user):
    m = MediaFactory(
        post=PostFactory(author=user, type="video", body=""),
        kind="video",
        processing_status=ProcessingStatus.PROCESSING,
    )
    run = ProcessorRun.objects.create(media=m, processor="video", result="running", steps=[])
    c = client_for(user)
    url = f"/api/v1/content/media/{m.pk}"
    assert c.get(url).json()["progress"] == 0.0
    probe = {"name": "probe", "status": "ok", "output": {}}
    values = []
    for percent in (10.0, 50.0, 100.0):
        run.steps = [probe, {"name": "transcode", "status": "running", "output": {"percent": percent}}]
        run.save(update_fields=["steps"])
        values.append(c.get(url).json()["progress"])
    assert values == sorted(values) and len(set(values)) == 3
    assert 0.05 < values[0] < 0.2 and 0.45 < values[1] < 0.55 and 0.9 < values[2] < 1.0
    Media.objects.filter(pk=m.pk).update(processing_status="ready")
    assert c.get(url).json()["progress"] == 1.0
    Media.objects.filter(pk=m.pk).update(processing_status="failed")
    assert c.get(url).json()["progress"] is None
    Media.objects.filter(pk=m.pk).update(processing_status="pending")
    assert c.get(url).json()["progress"] == 0.0


def test_steps_progress_counts_finished_steps_of_an_image():
    steps = [{"name": n, "status": "ok"} for n in ("open", "inspect", "decode", "normalize", "placeholder")]
    half = steps_progress("image", steps)
    full = steps_progress("image", steps + [{"name": f"variant:{v}", "status": "ok"} for v in "abcd"])
    assert 0.3 < half < 0.6 and full == 0.99
    assert steps_progress("thumbnail", steps) == half  # a preview thumbnail runs the image pipeline


def test_progress_with_a_real_audio_run(user, worker, broker, settings, tmp_path):
    """The runner's own steps drive the value: after a real ffmpeg run, the last recorded steps of the
    attempt give 0.99 (every step done) and the API then says 1.0 (ready)."""
    import shutil
    import subprocess

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed")
    wav = tmp_path / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2", str(wav)], check=True
    )
    post = PostFactory(author=user, type="audio", body="")
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media", {"file": upload_file("t.wav", wav.read_bytes())}
    )
    assert r.status_code == 201, r.json()
    broker.join("media.audio", timeout=60_000)
    worker.join()
    m = Media.objects.get(pk=r.json()["id"])
    assert m.processing_status == "ready"
    run = ProcessorRun.objects.filter(media=m).latest("started_at")
    assert steps_progress("audio", run.steps) == 0.99
    assert client_for(user).get(f"/api/v1/content/media/{m.pk}").json()["progress"] == 1.0


# --- quota -------------------------------------------------------------------------------------------
def test_quota_counts_what_the_quota_check_counts(user, other_user, settings):
    settings.MEDIA_USER_QUOTA_BYTES = 10_000
    MediaFactory(post=PostFactory(author=user, type="image", body=""), size_bytes=1200)
    MediaFactory(post=PostFactory(author=user, type="image", body=""), size_bytes=800)
    from django.utils import timezone

    MediaFactory(
        post=PostFactory(author=user, type="image", body=""), size_bytes=5000, purged_at=timezone.now()
    )
    UploadFactory(owner=user, declared_size=3000)
    MediaFactory(post=PostFactory(author=other_user, type="image", body=""), size_bytes=7777)
    r = client_for(user).get("/api/v1/content/me/quota")
    assert r.status_code == 200
    assert r.json() == {"used_bytes": 1200 + 800 + 3000, "limit_bytes": 10_000, "media_count": 2}
    # The same number refuses an upload that would cross the limit.
    big = client_for(user).post(
        "/api/v1/content/uploads",
        {"filename": "a.jpg", "content_type": "image/jpeg", "size": 10_000 - 5000 + 1},
        format="json",
    )
    assert big.status_code == 413 and big.json()["code"] == "quota_exceeded"
    assert big.json()["used_bytes"] == r.json()["used_bytes"]
    assert client_for().get("/api/v1/content/me/quota").status_code == 401
