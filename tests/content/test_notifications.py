"""Notifications (DESIGN.md §10): every decision and pipeline outcome that passes through a transition
writes one, with the moderator's reason; the list/read/preferences API; decision emails after commit."""

from __future__ import annotations

import pytest
from django.core import mail

from content import events, notifications
from content import services as content_services
from content.models import Notification, NotificationType
from media import processing
from media.models import ProcessingStatus
from moderation import services as mod_services
from tests.conftest import client_for, queued
from tests.factories import EstablishedUserFactory, MediaFactory, PostFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_log(settings):
    settings.EVENTS_REDIS_URL = None
    events.reset_log()
    yield
    events.reset_log()


def _log(user) -> list[events.Event]:
    return events.get_log().read(user.pk, "0-0", 0)


def _verdict(post, overall, labels=()):
    return mod_services.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision,
        provider="stub",
        model="stub-1",
        scores={"stub": overall},
        overall=overall,
        labels=list(labels),
        duration_ms=1.0,
    )


def test_reject_notifies_with_reason_event_and_queued_email(
    staff, broker, django_capture_on_commit_callbacks
):
    post = PostFactory(status="pending_review", moderation_state="under_review")
    with django_capture_on_commit_callbacks(execute=True):
        mod_services.post_reject(post_id=post.pk, moderator=staff, reason="Spam links")
    n = Notification.objects.get(user=post.author)
    assert (n.type, n.post_id, n.reason) == ("post_rejected", post.pk, "Spam links")
    types = [(e.type, e.data.get("status") or e.data.get("type")) for e in _log(post.author)]
    assert types == [("post.updated", "rejected"), ("notification", "post_rejected")]
    assert [e.data["reason"] for e in _log(post.author) if e.type == "notification"] == ["Spam links"]
    # The email leaves through the queue, not inside the transition.
    assert mail.outbox == []
    [message] = queued(broker, "notifications")
    assert message.actor_name == "send_notification_email" and message.args == (n.pk,)
    assert notifications.send_email(n.pk) is True
    [email] = mail.outbox
    assert email.to == [post.author.email] and "Spam links" in email.body and "appeal" in email.body
    assert notifications.send_email(n.pk) is False, "sent once"


def test_email_opt_out(staff, broker, django_capture_on_commit_callbacks):
    post = PostFactory(status="published", moderation_state="clean")
    r = client_for(post.author).patch(
        "/api/v1/content/notifications/preferences", {"email_notifications": False}, format="json"
    )
    assert r.status_code == 200 and r.json() == {"email_notifications": False}
    with django_capture_on_commit_callbacks(execute=True):
        mod_services.post_quarantine(post_id=post.pk, moderator=staff, reason="Needs a look")
    n = Notification.objects.get(user=post.author)
    assert n.type == "post_quarantined"
    assert queued(broker, "notifications") == []
    assert notifications.send_email(n.pk) is False and mail.outbox == []


@pytest.mark.parametrize(
    "overall, kind, status",
    [
        (0.0, "post_published", "published"),
        (0.5, "post_held", "pending_review"),
        (0.9, "post_quarantined", "quarantined"),
    ],
)
def test_ai_verdicts_notify(overall, kind, status, django_capture_on_commit_callbacks):
    post = PostFactory(status="pending_review", moderation_state="under_review")
    with django_capture_on_commit_callbacks(execute=True):
        _verdict(post, overall, labels=["nudity"] if overall > 0.7 else [])
    n = Notification.objects.get(user=post.author)
    assert n.type == kind and n.post_id == post.pk
    if kind == "post_quarantined":
        assert "nudity" in n.reason
    post.refresh_from_db()
    assert post.status == status


def test_stale_verdict_notifies_nothing(django_capture_on_commit_callbacks):
    post = PostFactory(status="published", moderation_state="clean")
    with django_capture_on_commit_callbacks(execute=True):
        _verdict(post, 0.9)
    assert not Notification.objects.exists() and _log(post.author) == []


def test_rolled_back_transition_leaves_no_event(staff):
    post = PostFactory(status="pending_review", moderation_state="under_review")
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        mod_services.post_approve(post_id=post.pk, moderator=staff)
        raise RuntimeError
    assert not Notification.objects.exists()
    assert _log(post.author) == []


def test_reports_hold_notifies(platform, django_capture_on_commit_callbacks):
    platform(report_threshold=1)
    post = PostFactory(published=True)
    with django_capture_on_commit_callbacks(execute=True):
        content_services.report_create(post_id=post.pk, reporter=EstablishedUserFactory(), reason="spam")
    assert Notification.objects.get(user=post.author).type == "post_held"


def test_reactive_publish_notifies_published(platform, django_capture_on_commit_callbacks):
    platform(moderation_mode="reactive_only")
    post = PostFactory()
    with django_capture_on_commit_callbacks(execute=True):
        content_services.post_publish(post_id=post.pk, actor=post.author)
    assert Notification.objects.get(user=post.author).type == "post_published"
    assert [e.data["status"] for e in _log(post.author) if e.type == "post.updated"] == ["published"]


def test_media_failure_notifies_media_failed(settings, django_capture_on_commit_callbacks):
    settings.MEDIA_MAX_ATTEMPTS = 1
    media = MediaFactory(processing_status=ProcessingStatus.PENDING)
    claim = processing.claim(media.pk, "image")
    from media.processors.base import ProcessingError, StepLog

    with django_capture_on_commit_callbacks(execute=True):
        processing.fail(claim, ProcessingError("Not an image."), StepLog(), retryable=False)
    n = Notification.objects.get(user=media.owner)
    assert n.type == "media_failed" and n.data == {"media_id": str(media.pk)} and "Not an image" in n.reason
    statuses = [e.data["processing_status"] for e in _log(media.owner) if e.type == "media.updated"]
    assert statuses == ["failed"]


def test_progress_writer_sends_throttled_real_progress(settings):
    settings.EVENTS_PROGRESS_INTERVAL_SECONDS = 0.0
    media = MediaFactory(processing_status=ProcessingStatus.PENDING)
    claim = processing.claim(media.pk, "image")
    write = processing.progress_writer(claim)
    step = {"name": "transcode", "status": "running", "input": {}, "output": {"percent": 12.5}}
    write([step])
    write([step])  # the same figure again: no new event
    write([{**step, "output": {"percent": 40.0}}])
    write([{**step, "status": "ok", "output": {"percent": 100.0}}])  # finished steps are not progress
    progress = [e.data["progress"] for e in _log(media.owner) if e.type == "media.updated"]
    assert progress == [12.5, 40.0]
    settings.EVENTS_PROGRESS_INTERVAL_SECONDS = 60.0
    write2 = processing.progress_writer(claim)
    write2([{**step, "output": {"percent": 50.0}}])
    write2([{**step, "output": {"percent": 60.0}}])  # within the interval: dropped
    progress = [e.data["progress"] for e in _log(media.owner) if e.type == "media.updated"]
    assert progress == [12.5, 40.0, 50.0]


# --- API -----------------------------------------------------------------------------------------------


def test_list_newest_first_unread_filter_and_mark_read(user, other_user):
    post = PostFactory(author=user)
    made = [
        notifications.notify(user=user, type=t, post=post, reason=f"r{i}")
        for i, t in enumerate(["post_held", "post_approved", "post_published"])
    ]
    notifications.notify(user=other_user, type="post_rejected", reason="not yours")
    c = client_for(user)
    r = c.get("/api/v1/content/notifications")
    assert r.status_code == 200
    got = r.json()["results"]
    assert [n["id"] for n in got] == [n.pk for n in reversed(made)]
    assert got[0] == {
        "id": made[2].pk,
        "type": "post_published",
        "post_id": str(post.pk),
        "appeal_id": None,
        "reason": "r2",
        "data": {},
        "read": False,
        "created_at": got[0]["created_at"],
    }
    r = c.post("/api/v1/content/notifications/read", {"up_to": made[1].pk}, format="json")
    assert r.status_code == 200 and r.json() == {"marked": 2}
    unread = c.get("/api/v1/content/notifications", {"unread": "true"}).json()["results"]
    assert [n["id"] for n in unread] == [made[2].pk]
    page = c.get("/api/v1/content/notifications", {"page_size": 1}).json()
    assert len(page["results"]) == 1 and page["next"]
    assert c.get(page["next"]).json()["results"][0]["id"] == made[1].pk


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/api/v1/content/notifications", {"unread": "maybe"}),
        ("get", "/api/v1/content/notifications", {"cursor": "cD1hYmM="}),
        ("post", "/api/v1/content/notifications/read", {"up_to": "x"}),
        ("post", "/api/v1/content/notifications/read", {}),
        ("patch", "/api/v1/content/notifications/preferences", {"email_notifications": "sometimes"}),
    ],
)
def test_bad_input_is_400(user, method, path, body):
    r = getattr(client_for(user), method)(path, body, format="json" if method != "get" else None)
    assert r.status_code == 400 and r.json()["code"] == "invalid"


def test_unknown_type_is_a_programming_error(user):
    with pytest.raises(ValueError):
        notifications.notify(user=user, type="post_exploded")
    assert NotificationType.ACCOUNT_SUSPENDED in NotificationType.values
