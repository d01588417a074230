"""The media lifecycle with a real Dramatiq worker over the StubBroker (committed rows)."""

import io
import os
import shutil
import threading
import time
from urllib.parse import urlsplit

import pytest
from PIL import Image

from content.models import Post
from media import pipeline, processing, scratch
from media.middleware import JobContext
from media.models import Media, ProcessingStatus, ProcessorRun
from media.processors.base import MediaTooLarge, ProcessorResult, StepLog
from media.processors.image import ImageProcessor
from media.tasks import process_image_media
from tests.conftest import client_for, queued
from tests.factories import PostFactory, UserFactory
from tests.media.helpers import jpeg_bytes, upload_file

pytestmark = pytest.mark.django_db(transaction=True)


def _drain(broker, worker, *queues):
    for q in queues or ("media.image",):
        broker.join(q, fail_fast=False)
    worker.join()


def _attach(user, post, data=None, name="a.jpg"):
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"file": upload_file(name, data or jpeg_bytes(800, 600))},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    return r.json()


def test_attach_process_ready_then_publish(broker, worker, platform):
    platform(moderation_mode="reactive_only")
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    media = _attach(user, post)
    assert media["processing_status"] == "pending"
    r = client_for(user).post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code == 202 and r.json()["publish_requested"] is True
    _drain(broker, worker)
    row = Media.objects.get(pk=media["id"])
    assert row.processing_status == ProcessingStatus.READY, row.processing_error
    assert (row.width, row.height) == (800, 600) and row.blurhash
    assert {"thumb", "small"} <= set(row.variants)
    assert Post.objects.get(pk=post.pk).status == "published"
    run = ProcessorRun.objects.get(media=row)
    assert run.result == "succeeded" and run.attempt == 1 and run.queue == "media.image"
    assert run.actor == "process_image_media" and run.message_id and run.duration_ms > 0
    assert {s["name"] for s in run.steps} >= {"download", "store"} and all(
        s["status"] in ("ok", "skipped") for s in run.steps
    )
    # viewers get signed variant URLs that work without credentials once published
    data = client_for().get(f"/api/v1/content/media/{row.pk}").json()
    assert data["original_url"] is None  # the original (EXIF!) is only for its owner
    url = urlsplit(data["variants"]["small"]["url"])
    resp = client_for().get(url.path)
    assert resp.status_code == 200 and resp["X-Content-Type-Options"] == "nosniff"
    Image.open(io.BytesIO(b"".join(resp.streaming_content))).verify()


def test_without_publish_request_post_returns_to_draft(broker, worker):
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    _attach(user, post)
    assert Post.objects.get(pk=post.pk).status == "processing"
    _drain(broker, worker)
    assert Post.objects.get(pk=post.pk).status == "draft"


def test_same_message_twice_processes_once(broker, worker):
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    media = _attach(user, post)
    process_image_media.send(media["id"])  # a duplicate delivery
    _drain(broker, worker)
    assert ProcessorRun.objects.filter(media_id=media["id"], result="succeeded").count() == 1
    assert ProcessorRun.objects.filter(media_id=media["id"]).count() == 1
    assert Media.objects.get(pk=media["id"]).attempts == 1


def test_stale_attempt_never_overwrites_newer_one(broker, settings):
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    media = _attach(user, post)
    broker.flush_all()
    old = processing.claim(media["id"], "image")
    # The old attempt hangs; the sweep declares it stuck and a newer attempt finishes the job.
    Media.objects.filter(pk=media["id"]).update(processing_status="pending", attempt_token=None)
    pipeline.run(media["id"], kind="image")
    newer = Media.objects.get(pk=media["id"])
    assert newer.processing_status == "ready"
    # Now the old attempt wakes up with a result of its own: it must change nothing.
    assert (
        processing.complete(old, ProcessorResult(width=1, height=1, metadata={"late": True}), {}, StepLog())
        is False
    )
    after = Media.objects.get(pk=media["id"])
    assert (after.width, after.variants, "late" in after.metadata) == (newer.width, newer.variants, False)
    assert ProcessorRun.objects.get(pk=old.run.pk).result == "skipped"


def test_corrupt_file_fails_with_reason_and_retry_requeues(broker, worker):
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    data = jpeg_bytes(400, 300)
    media = _attach(user, post, data[: len(data) // 3])  # a truncated JPEG: sniffs as JPEG, will not decode
    _drain(broker, worker)
    row = Media.objects.get(pk=media["id"])
    assert row.processing_status == "failed" and row.processing_error
    c = client_for(user)
    r = c.post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code == 409 and r.json()["code"] == "media_failed"
    assert client_for(UserFactory()).post(f"/api/v1/content/media/{row.pk}/retry").status_code == 404
    r = c.post(f"/api/v1/content/media/{row.pk}/retry")
    assert r.status_code == 202 and r.json()["processing_status"] in ("pending", "processing")
    _drain(broker, worker)
    assert Media.objects.get(pk=row.pk).attempts == 1  # retried afresh, failed again for the same reason
    assert Media.objects.get(pk=row.pk).processing_status == "failed"
    assert client_for(user).post(f"/api/v1/content/media/{row.pk}/retry").status_code == 202


def test_poison_media_is_failed_after_max_claims(broker, settings):
    settings.MEDIA_MAX_ATTEMPTS = 2
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="", status="processing")
    media = _attach(user, post)
    # Two earlier claims died with their worker (SIGKILL): the row says processing, long ago.
    Media.objects.filter(pk=media["id"]).update(processing_status="pending", attempts=2)
    pipeline.run(media["id"], kind="image")
    row = Media.objects.get(pk=media["id"])
    assert row.processing_status == "failed" and "2 times" in row.processing_error
    assert ProcessorRun.objects.get(media=row).error_class == "AttemptsExhausted"


def test_processing_disabled_marks_ready_with_bypass(broker, platform):
    platform(post_processing_enabled=False)
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    media = _attach(user, post)
    assert media["processing_status"] == "ready" and media["metadata"]["bypass"] is True
    assert queued(broker, "media.image") == []
    assert Post.objects.get(pk=post.pk).status == "draft"


def test_trigger_off_queues_nothing_and_sweep_heals(broker, worker, platform):
    from django.core.management import call_command

    platform(processor_event_trigger_media_enabled=False)
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    media = _attach(user, post)
    time.sleep(0.2)
    assert queued(broker, "media.image") == []
    assert Media.objects.get(pk=media["id"]).processing_status == "pending"
    call_command("sweep_pending_media", "--pending-grace-minutes", "0", stdout=io.StringIO())
    _drain(broker, worker)
    assert Media.objects.get(pk=media["id"]).processing_status == "ready"


def test_unpublished_media_urls_work_only_for_owner_and_staff(broker, worker):
    from django.contrib.auth.models import Permission

    user, stranger, staff, bare_staff = (
        UserFactory(),
        UserFactory(),
        UserFactory(is_staff=True),
        UserFactory(is_staff=True),
    )
    staff.user_permissions.add(Permission.objects.get(codename="view_media", content_type__app_label="media"))
    post = PostFactory(author=user, type="image", body="")
    media = _attach(user, post)
    _drain(broker, worker)
    data = client_for(user).get(f"/api/v1/content/media/{media['id']}").json()
    path = urlsplit(data["variants"]["thumb"]["url"]).path
    assert client_for(user).get(path).status_code == 200
    assert client_for(staff).get(path).status_code == 200
    assert client_for(bare_staff).get(path).status_code == 404  # staff need media.view_media (issue 9)
    assert client_for().get(path).status_code == 404
    assert client_for(stranger).get(path).status_code == 404
    assert client_for(stranger).get(f"/api/v1/content/media/{media['id']}").status_code == 404
    original = urlsplit(data["original_url"]).path
    assert client_for(user).get(original).status_code == 200 and client_for().get(original).status_code == 404
    assert client_for(user).get(path[:-4] + "AAAA").status_code == 403  # tampered


def test_expired_url_is_refused(broker, worker, settings):
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    media = _attach(user, post)
    _drain(broker, worker)
    settings.MEDIA_URL_TTL_SECONDS = -1
    data = client_for(user).get(f"/api/v1/content/media/{media['id']}").json()
    r = client_for(user).get(urlsplit(data["variants"]["thumb"]["url"]).path)
    assert r.status_code == 403 and r.json()["code"] == "invalid_signature"


def _as_message(broker, message_id: str):
    """Run what follows as a worker would process message ``message_id`` (the JobContext middleware
    tells the claim which message it serves)."""
    from contextlib import contextmanager

    from dramatiq import Message

    @contextmanager
    def delivered():
        msg = Message(
            queue_name="media.image",
            actor_name="process_image_media",
            args=(),
            kwargs={},
            options={},
            message_id=message_id,
        )
        middleware = JobContext()
        middleware.before_process_message(broker, msg)
        try:
            yield
        finally:
            middleware.after_process_message(broker, msg)

    return delivered()


def test_redelivered_message_takes_over_but_duplicate_is_skipped(broker):
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    media = _attach(user, post)
    with _as_message(broker, "msg-1"):
        first = processing.claim(media["id"], "image")  # this attempt's worker will "die"
        assert first is not None
    with _as_message(broker, "msg-2"):  # a duplicate message while msg-1 is being processed
        assert processing.claim(media["id"], "image") is None
    with _as_message(broker, "msg-1"):  # Redis redelivers msg-1: its worker is dead
        second = processing.claim(media["id"], "image")
    assert second is not None and second.run.attempt == 2
    assert ProcessorRun.objects.get(pk=first.run.pk).error_class == "WorkerLost"  # same message id
    assert Media.objects.get(pk=media["id"]).attempts == 2


# --- per-user fairness, overruns, heartbeats (issue 9 rows 5 and 10) ---------------------------------

GATE = threading.Event()
GATED_WIDTH = 801  # images of this width wait for GATE: a deterministic "slow" job


class GatedImageProcessor(ImageProcessor):
    """The real image processor, except that images ``GATED_WIDTH`` wide first wait for ``GATE``
    (in short sleeps, so that Dramatiq's time limit can interrupt them)."""

    def process(self, *, source, workdir, steps):
        with Image.open(source) as im:
            gated = im.size[0] == GATED_WIDTH
        deadline = time.monotonic() + 30
        while gated and not GATE.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().process(source=source, workdir=workdir, steps=steps)


@pytest.fixture
def gated_images(monkeypatch):
    from media import processors

    GATE.clear()
    monkeypatch.setitem(processors.PROCESSOR_PATHS, "image", "tests.media.test_lifecycle.GatedImageProcessor")
    yield GATE
    GATE.set()


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_one_account_cannot_hold_every_worker_thread(broker, worker, settings, gated_images):
    """Three slow images of account A and one of B on a 2-thread worker: B's is processed while
    A's wait their turn, and waiting used none of A's attempts."""
    settings.MEDIA_MAX_CONCURRENT_PER_USER = 1
    settings.MEDIA_FAIRNESS_DELAY_MS = 100
    a, b = UserFactory(), UserFactory()
    slow = [
        _attach(a, PostFactory(author=a, type="image", body=""), jpeg_bytes(GATED_WIDTH, 600))["id"]
        for _ in range(3)
    ]
    fast = _attach(b, PostFactory(author=b, type="image", body=""), jpeg_bytes(640, 480))["id"]
    assert _wait(lambda: Media.objects.get(pk=fast).processing_status == "ready"), "B's image waited for A's"
    statuses = sorted(Media.objects.filter(pk__in=slow).values_list("processing_status", flat=True))
    assert statuses == ["pending", "pending", "processing"]  # one of A's at a time
    gated_images.set()
    _drain(broker, worker)
    rows = Media.objects.filter(pk__in=slow)
    assert {(m.processing_status, m.attempts) for m in rows} == {("ready", 1)}
    assert ProcessorRun.objects.filter(media__in=rows).count() == 3  # deferrals are not attempts


def test_without_the_cap_one_account_fills_the_threads(broker, worker, settings, gated_images):
    """The same load with the cap switched off (0): B's image waits behind A's. Shows the test above
    measures the cap, not luck."""
    settings.MEDIA_MAX_CONCURRENT_PER_USER = 0
    a, b = UserFactory(), UserFactory()
    for _ in range(2):
        _attach(a, PostFactory(author=a, type="image", body=""), jpeg_bytes(GATED_WIDTH, 600))
    fast = _attach(b, PostFactory(author=b, type="image", body=""), jpeg_bytes(640, 480))["id"]
    assert not _wait(lambda: Media.objects.get(pk=fast).processing_status == "ready", timeout=2)
    gated_images.set()
    _drain(broker, worker)
    assert Media.objects.get(pk=fast).processing_status == "ready"


def test_time_limit_overrun_fails_at_once_without_retry(broker, worker, platform, gated_images):
    from dramatiq.middleware import TimeLimit

    # The dramatiq CLI starts TimeLimit's watchdog at process boot; this in-process worker has none.
    watchdog = next(m for m in broker.middleware if isinstance(m, TimeLimit)).manager
    if not watchdog.is_alive():
        watchdog.start()
    platform(processor_event_trigger_media_enabled=False)
    user = UserFactory()
    media = _attach(user, PostFactory(author=user, type="image", body=""), jpeg_bytes(GATED_WIDTH, 600))
    process_image_media.send_with_options(args=(media["id"],), time_limit=1000)
    assert _wait(lambda: Media.objects.get(pk=media["id"]).processing_status == "failed", timeout=15)
    _drain(broker, worker)
    row = Media.objects.get(pk=media["id"])
    assert row.processing_status == "failed" and row.failed_permanently and row.attempts == 1
    assert "longer than the 1 s limit" in row.processing_error
    run = ProcessorRun.objects.get(media=row)  # one attempt: Dramatiq did not retry it
    assert (run.result, run.error_class) == ("failed", "TimeLimitExceeded")
    assert queued(broker, "media.image") == [] and not broker.dead_letters_by_queue["media.image"]


class _RefusingProcessor(ImageProcessor):
    def process(self, *, source, workdir, steps):
        raise MediaTooLarge("Too much decoded work for one file.")


def test_non_retryable_refusal_fails_once(broker, monkeypatch):
    from media import processors

    monkeypatch.setitem(processors.PROCESSOR_PATHS, "image", "tests.media.test_lifecycle._RefusingProcessor")
    user = UserFactory()
    media = _attach(user, PostFactory(author=user, type="image", body=""))
    pipeline.run(media["id"], kind="image")  # returns: nothing for the broker to retry
    row = Media.objects.get(pk=media["id"])
    assert (row.processing_status, row.attempts, row.failed_permanently) == ("failed", 1, True)
    assert row.processing_error == "Too much decoded work for one file."


def test_progress_writes_a_rate_limited_heartbeat(broker, settings):
    from datetime import timedelta

    from django.utils import timezone

    user = UserFactory()
    media = _attach(user, PostFactory(author=user, type="image", body=""))
    broker.flush_all()
    claim = processing.claim(media["id"], "image")
    old = timezone.now() - timedelta(minutes=10)
    Media.objects.filter(pk=claim.media.pk).update(heartbeat_at=old)
    settings.MEDIA_HEARTBEAT_SECONDS = 3600
    write = processing.progress_writer(claim)
    write([{"name": "decode", "status": "running"}])
    assert Media.objects.get(pk=claim.media.pk).heartbeat_at == old  # not more often than asked
    settings.MEDIA_HEARTBEAT_SECONDS = 0
    write([{"name": "decode", "status": "running"}])
    beat = Media.objects.get(pk=claim.media.pk).heartbeat_at
    assert beat > timezone.now() - timedelta(seconds=5)
    assert ProcessorRun.objects.get(pk=claim.run.pk).steps[0]["name"] == "decode"


def test_reaper_kills_processes_left_in_a_dead_workers_scratch_folder(tmp_path):
    """Issue 9 row 6: an ffmpeg whose worker was SIGKILLed keeps running (reparented to init). The
    reaper kills whatever still works in a dead worker's scratch folder, then removes the folder."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    gone = subprocess.Popen(["true"])
    gone.wait()  # a worker pid that no longer exists
    folder = Path(tempfile.mkdtemp(prefix=f"postflow-video-p{gone.pid}-"))
    (folder / "original.avi").write_bytes(b"x")
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", str(folder / "original.avi")],
        start_new_session=True,  # like ffmpeg: its own process group
    )
    mine = Path(tempfile.mkdtemp(prefix=f"postflow-video-p{os.getpid()}-"))  # a live worker's: kept
    try:
        cmdline = Path(f"/proc/{orphan.pid}/cmdline")
        assert _wait(lambda: str(folder).encode() in cmdline.read_bytes(), timeout=10)
        killed, removed = scratch.reap_orphans(force=True)
        _wait(lambda: orphan.poll() is not None, timeout=10)
        assert orphan.poll() == -9, (killed, removed, folder.exists(), scratch._processes_using(folder))
        assert (killed, removed) >= (1, 1) and not folder.exists() and mine.exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)


def test_services_and_sweep_never_import_the_actors():
    """Issue 10: the cycle media.services -> media.tasks -> runner -> media.services is gone. Only
    media.tasks imports the pipeline; services, processing and the sweep send actors by name."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for module in ("media/services.py", "media/processing.py", "media/sweep.py", "content/sweep.py"):
        tree = ast.parse((root / module).read_text())
        imported = {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        named = {
            f"{m}.{a.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for m in [node.module]
            for a in node.names
        }
        bad = {
            m
            for m in imported | named
            if m and (m.startswith("media.tasks") or m.startswith("media.pipeline"))
        }
        assert not bad, f"{module} imports {bad}"


def test_media_driven_post_transitions_check_their_from_states(broker):
    from config.errors import InvalidTransition
    from content.services import post_media_attached, post_processing_started

    user = UserFactory()
    draft = PostFactory(author=user, type="image", body="")
    media = _attach(user, draft)
    Media.objects.filter(pk=media["id"]).update(processing_status="failed")
    Post.objects.filter(pk=draft.pk).update(status="draft")
    processing.retry(media_id=media["id"], actor=user)  # the retry puts the draft back in processing
    assert Post.objects.get(pk=draft.pk).status == "processing"
    published = PostFactory(author=user, published=True)
    with pytest.raises(InvalidTransition):
        post_processing_started(post_id=published.pk)
    with pytest.raises(InvalidTransition):
        post_media_attached(post_id=published.pk, is_primary=True, blocked=True)
    assert Post.objects.get(pk=published.pk).blocked_media is False


def test_worker_found_blocklisted_bytes_flag_the_post_column(broker, platform):
    """Bytes sent straight to S3 are hashed in the worker: a blocklist hit sets Post.blocked_media
    (a column), and publishing then quarantines the post."""
    from moderation.models import BlockedMedia
    from tests.media.helpers import sha256

    platform(blocked_media_action="quarantine", moderation_mode="reactive_only")
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    data = jpeg_bytes(40, 30, (1, 2, 3))
    media = _attach(user, post, data)
    broker.flush_all()
    Media.objects.filter(pk=media["id"]).update(sha256="")  # as if it came through a presigned POST
    BlockedMedia.objects.create(sha256=sha256(data))
    pipeline.run(media["id"], kind="image")
    assert Post.objects.get(pk=post.pk).blocked_media is True
    assert "blocked_media" not in Post.objects.get(pk=post.pk).metadata
    r = client_for(user).post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code in (200, 202) and r.json()["status"] == "quarantined", r.content
