"""Regression tests for the code review's findings: each would fail without its fix."""

import io
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from config.errors import InvalidTransition, MediaFailed
from content import services as content_services
from content.models import Post
from content.sweep import sweep_stuck_posts
from media.models import Media
from media.services import media_detach, safe_filename
from media.sweep import sweep_candidates
from moderation import services as moderation_services
from moderation.models import AiReview, BlockedMedia
from tests.conftest import client_for, queued
from tests.factories import MediaFactory, PostFactory, UserFactory
from tests.media.helpers import jpeg_bytes, sha256, upload_file

pytestmark = pytest.mark.django_db


def test_non_primary_media_holds_publishing_until_processed(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user, type="text", body="hello")
    MediaFactory(post=post, is_primary=False, processing_status="pending")
    post = content_services.post_publish(post_id=post.pk, actor=user)
    assert (post.status, post.publish_requested) == ("processing", True)  # not published with unseen media


def test_failed_medium_wins_over_one_still_processing(user):
    post = PostFactory(author=user, type="image", status="processing")
    MediaFactory(post=post, processing_status="failed")
    MediaFactory(post=post, processing_status="processing")
    with pytest.raises(MediaFailed):
        content_services.post_publish(post_id=post.pk, actor=user)


def test_review_refuses_to_judge_unprocessed_media(user, platform):
    from moderation.providers.base import ProviderError
    from moderation.review import build_input

    post = PostFactory(author=user, type="image")
    MediaFactory(post=post, processing_status="pending")
    with pytest.raises(ProviderError):
        build_input(post, Path("/tmp"))


def test_verdict_in_flight_when_reports_arrive_is_stale(platform):
    platform(moderation_mode="ai_prescreen", report_threshold=1)
    post = PostFactory()
    post = content_services.post_publish(post_id=post.pk, actor=post.author)
    revision = post.revision
    moderation_services.ai_verdict_apply(
        post_id=post.pk,
        revision=revision,
        provider="stub",
        model="",
        scores={},
        overall=0.0,
        labels=[],
        duration_ms=1,
    )
    content_services.report_create(post_id=post.pk, reporter=UserFactory(), reason="hate")
    post.refresh_from_db()
    assert post.status == "pending_review"
    late = moderation_services.ai_verdict_apply(
        post_id=post.pk,
        revision=revision,
        provider="stub",
        model="",
        scores={},
        overall=0.0,
        labels=[],
        duration_ms=1,
    )
    post.refresh_from_db()
    assert late.decision == "stale" and post.status == "pending_review"


def test_duplicate_verdict_for_the_same_revision_is_stale(platform):
    platform(moderation_mode="ai_prescreen")
    post = PostFactory()
    post = content_services.post_publish(post_id=post.pk, actor=post.author)
    first = moderation_services.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision,
        provider="stub",
        model="",
        scores={},
        overall=0.5,
        labels=[],
        duration_ms=1,
    )
    second = moderation_services.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision,
        provider="stub",
        model="",
        scores={},
        overall=0.0,
        labels=[],
        duration_ms=1,
    )
    post.refresh_from_db()
    assert (first.decision, second.decision, post.status) == ("review", "stale", "pending_review")


def test_broker_down_at_publish_still_answers_and_the_sweep_queues_the_review(
    user, platform, broker, monkeypatch, django_capture_on_commit_callbacks
):
    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user)

    def down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(broker, "enqueue", down)
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code == 202 and r.json()["status"] == "pending_review"
    monkeypatch.undo()
    Post.objects.filter(pk=post.pk).update(submitted_at=timezone.now() - timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_stuck_posts()
    assert report.reviews_queued == [str(post.pk)]
    assert [m.args[0] for m in queued(broker, "moderation")] == [str(post.pk)]
    assert sweep_stuck_posts().reviews_queued == [str(post.pk)]  # until the review is recorded...
    AiReview.objects.create(
        post=post,
        post_revision=Post.objects.get(pk=post.pk).revision,
        provider="stub",
        decision="review",
        overall_score=0.4,
    )
    assert sweep_stuck_posts().reviews_queued == []  # ...then never again


def test_sweep_settles_a_post_left_processing(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user, type="image", status="processing", publish_requested=True)
    MediaFactory(post=post, processing_status="ready")
    Post.objects.filter(pk=post.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    assert sweep_stuck_posts().settled == [str(post.pk)]
    assert Post.objects.get(pk=post.pk).status == "published"


def test_permanent_failures_are_not_swept(db):
    bomb = MediaFactory(processing_status="failed", attempts=1, failed_permanently=True)
    flaky = MediaFactory(processing_status="failed", attempts=1)
    ids = set(
        sweep_candidates(
            statuses=["failed"],
            stuck_minutes=-1,
            kinds=None,
            include_exhausted=False,
            pending_grace_minutes=5,
        ).values_list("pk", flat=True)
    )
    assert ids == {flaky.pk}
    assert bomb.pk in set(
        sweep_candidates(
            statuses=["failed"], stuck_minutes=-1, kinds=None, include_exhausted=True, pending_grace_minutes=5
        ).values_list("pk", flat=True)
    )


def test_retry_refused_for_media_of_published_posts(user):
    media = MediaFactory(post=PostFactory(author=user, published=True), processing_status="failed")
    from media.services import media_retry

    with pytest.raises(InvalidTransition):
        media_retry(media_id=media.pk, actor=user)


def test_detaching_the_blocklisted_file_clears_the_flag(user, platform, django_capture_on_commit_callbacks):
    platform(blocked_media_action="quarantine", post_processing_enabled=False)
    data = jpeg_bytes(16, 16, (5, 5, 5))
    BlockedMedia.objects.create(sha256=sha256(data))
    post = PostFactory(author=user, type="image", body="")
    with django_capture_on_commit_callbacks(execute=True):
        media = (
            client_for(user)
            .post(
                f"/api/v1/content/posts/{post.pk}/media",
                {"file": upload_file("a.jpg", data)},
                format="multipart",
            )
            .json()
        )
    assert Post.objects.get(pk=post.pk).blocked_media is True
    with django_capture_on_commit_callbacks(execute=True):
        media_detach(post_id=post.pk, media_id=media["id"], actor=user)
    assert Post.objects.get(pk=post.pk).blocked_media is False


def test_filenames_are_made_safe_for_headers():
    assert safe_filename('a\nb".jpg') == "ab.jpg"
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\photos\\x.png") == "x.png"
    assert safe_filename("\x00") == "upload"


def test_metrics_refuse_relayed_requests_without_token():
    r = client_for().get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert r.status_code == 404


def test_healthz_checks_dependencies_and_livez_only_liveness():
    assert set(client_for().get("/healthz").json()["checks"]) == {"database", "broker", "storage"}
    assert client_for().get("/livez").json() == {"status": "ok"}


def test_embedded_start_recovers_lost_work(broker, django_capture_on_commit_callbacks):
    from media.management.commands.runserver import recover_embedded_work

    lost = MediaFactory(processing_status="processing")
    Media.objects.filter(pk=lost.pk).update(updated_at=timezone.now() - timedelta(seconds=5))
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        recover_embedded_work(out)
    assert "1 media re-queued" in out.getvalue()
    assert [m.args[0] for m in queued(broker, "media.image")] == [str(lost.pk)]


def test_out_of_range_thresholds_refuse_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "AI_REVIEW_THRESHOLD": "30",
            "POSTFLOW_VAR_DIR": str(tmp_path),
            "SECRET_KEY": secrets.token_urlsafe(40),
        },
    )
    assert result.returncode != 0 and "AI thresholds" in result.stderr
