"""Appeals (DESIGN.md §10): the creator's API, the rules (latest reject or quarantine, AI or human,
once per decision, within the window), the Appeals queue in the admin, grant / deny with audit rows,
the own-decision rule, and the creator told by notification, event and email."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.test import Client
from django.utils import timezone

from content import events, notifications
from content.models import Notification
from moderation import services
from moderation.models import Appeal, BlockedMedia, ModerationDecision
from tests.conftest import client_for, queued
from tests.factories import MediaFactory, PostFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_log(settings):
    settings.EVENTS_REDIS_URL = None
    events.reset_log()
    yield
    events.reset_log()


@pytest.fixture
def moderator(db):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="review_post"))
    return user


def _rejected(moderator, reason="Spam"):
    post = PostFactory(status="pending_review", moderation_state="under_review")
    services.post_reject(post_id=post.pk, moderator=moderator, reason=reason)
    return post


def _appeal(post, text="Please look again: it is my own photo."):
    return client_for(post.author).post(
        f"/api/v1/content/posts/{post.pk}/appeal", {"text": text}, format="json"
    )


def test_appeal_a_rejection_and_read_it(moderator):
    post = _rejected(moderator, reason="Looks like spam")
    r = _appeal(post)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "open" and body["text"].startswith("Please look again")
    assert body["appealed_decision"]["source"] == "human"
    assert (body["appealed_decision"]["action"], body["appealed_decision"]["reason"]) == (
        "reject",
        "Looks like spam",
    )
    appeal = Appeal.objects.get(pk=body["id"])
    assert appeal.decision == ModerationDecision.objects.get(post=post, action="reject")
    r = client_for(post.author).get(f"/api/v1/content/posts/{post.pk}/appeal")
    assert r.status_code == 200 and r.json()["id"] == appeal.pk

    r = _appeal(post)
    assert (r.status_code, r.json()["code"]) == (409, "already_appealed"), "once per decision"


def test_appeal_an_ai_quarantine(django_capture_on_commit_callbacks):
    post = PostFactory(status="pending_review", moderation_state="under_review")
    review = services.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision,
        provider="stub",
        model="m",
        scores={"nudity": 0.95},
        overall=0.95,
        labels=["nudity"],
        duration_ms=1,
    )
    r = _appeal(post)
    assert r.status_code == 201, r.content
    assert r.json()["appealed_decision"] == {
        "source": "ai",
        "action": "quarantine",
        "reason": "nudity",
        "decided_at": r.json()["appealed_decision"]["decided_at"],
    }
    assert Appeal.objects.get().ai_review == review


@pytest.mark.parametrize("status", ["draft", "published", "pending_review"])
def test_nothing_to_appeal(status):
    post = PostFactory(status=status)
    r = _appeal(post)
    assert (r.status_code, r.json()["code"]) == (409, "appeal_not_allowed")


def test_window_closed(moderator, settings):
    post = _rejected(moderator)
    ModerationDecision.objects.filter(post=post).update(
        created_at=timezone.now() - timedelta(days=settings.APPEAL_WINDOW_DAYS, minutes=1)
    )
    r = _appeal(post)
    assert (r.status_code, r.json()["code"]) == (409, "appeal_window_closed")


@pytest.mark.parametrize("text", ["", "   ", "x" * 2001])
def test_text_limits(moderator, text):
    post = _rejected(moderator)
    r = _appeal(post, text=text)
    assert (r.status_code, r.json()["code"]) == (400, "invalid")
    assert not Appeal.objects.exists()


def test_others_cannot_appeal_or_read(moderator, other_user):
    post = _rejected(moderator)
    _appeal(post)
    for who in (other_user, moderator):
        c = client_for(who)
        assert (
            c.post(f"/api/v1/content/posts/{post.pk}/appeal", {"text": "x"}, format="json").status_code == 404
        )
        assert c.get(f"/api/v1/content/posts/{post.pk}/appeal").status_code == 404
    assert client_for().get(f"/api/v1/content/posts/{post.pk}/appeal").status_code == 401
    assert Appeal.objects.count() == 1


def test_grant_publishes_audits_unblocks_and_tells_the_creator(
    moderator, broker, django_capture_on_commit_callbacks
):
    first = _rejected(moderator)
    MediaFactory(post=first, sha256="a" * 64)
    post = PostFactory(status="pending_review", moderation_state="under_review")
    MediaFactory(post=post, sha256="b" * 64)
    services.post_reject(post_id=post.pk, moderator=moderator, reason="Bad")
    assert BlockedMedia.objects.filter(sha256="b" * 64).exists()
    appeal_id = _appeal(post).json()["id"]
    other = UserFactory(is_staff=True)
    with django_capture_on_commit_callbacks(execute=True):
        services.appeal_decide(appeal_id=appeal_id, moderator=other, grant=True, reason="Fair point")
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == ("published", "approved")
    assert not BlockedMedia.objects.filter(sha256="b" * 64).exists()
    audit = ModerationDecision.objects.get(post=post, action="appeal_grant")
    assert (audit.moderator, audit.reason, audit.from_status, audit.to_status) == (
        other,
        "Fair point",
        "rejected",
        "published",
    )
    assert audit.details == {"appeal_id": appeal_id}
    n = Notification.objects.get(user=post.author, type="appeal_decided")
    assert (n.appeal_id, n.reason, n.data["outcome"]) == (appeal_id, "Fair point", "granted")
    log = [
        (e.type, e.data.get("type") or e.data.get("status"))
        for e in events.get_log().read(post.author_id, "0-0", 0)
    ]
    assert ("post.updated", "published") in log and ("notification", "appeal_decided") in log
    [message] = [m for m in queued(broker, "notifications") if m.args == (n.pk,)]
    notifications.send_email(message.args[0])
    assert "Fair point" in mail.outbox[-1].body
    r = client_for(post.author).get(f"/api/v1/content/posts/{post.pk}/appeal")
    assert (r.json()["status"], r.json()["decision_reason"]) == ("granted", "Fair point")
    with pytest.raises(services.AlreadyDecided):
        services.appeal_decide(appeal_id=appeal_id, moderator=other, grant=False, reason="again")


def test_deny_is_final_and_own_decision_needs_superuser(moderator):
    post = _rejected(moderator)
    appeal_id = _appeal(post).json()["id"]
    with pytest.raises(services.OwnDecision):
        services.appeal_decide(appeal_id=appeal_id, moderator=moderator, grant=False, reason="No")
    with pytest.raises(services.ReasonRequired):
        services.appeal_decide(
            appeal_id=appeal_id, moderator=UserFactory(is_staff=True), grant=False, reason=" "
        )
    boss = UserFactory(is_staff=True, is_superuser=True)
    services.appeal_decide(appeal_id=appeal_id, moderator=boss, grant=False, reason="Still spam")
    post.refresh_from_db()
    assert post.status == "rejected"
    assert ModerationDecision.objects.get(post=post, action="appeal_deny").moderator == boss
    assert Appeal.objects.get(pk=appeal_id).status == "denied"
    r = _appeal(post)
    assert (r.status_code, r.json()["code"]) == (409, "already_appealed"), "denied is final"


def test_admin_queue_oldest_first_and_decide(moderator):
    old = _rejected(moderator, reason="first reason")
    new = _rejected(moderator, reason="second reason")
    a_old = Appeal.objects.get(pk=_appeal(old, text="old appeal").json()["id"])
    Appeal.objects.filter(pk=a_old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    _appeal(new, text="new appeal")
    other = UserFactory(is_staff=True)
    other.user_permissions.add(Permission.objects.get(codename="review_post"))
    c = Client()
    c.force_login(other)
    page = c.get("/admin/moderation/appealqueue/").content.decode()
    assert page.index("old appeal") < page.index("new appeal")
    assert "first reason" in page, page[page.index("result_list") :][:3000]
    assert moderator.username in page
    detail = c.get(f"/admin/moderation/appealqueue/{a_old.pk}/decide/").content.decode()
    assert "old appeal" in detail and "first reason" in detail and "Grant" in detail
    r = c.post(f"/admin/moderation/appealqueue/{a_old.pk}/decide/", {"op": "grant", "reason": "ok then"})
    assert r.status_code == 302
    old.refresh_from_db()
    assert old.status == "published"
    assert "old appeal" not in c.get("/admin/moderation/appealqueue/").content.decode()

    # The moderator who rejected sees the appeal but may not decide it.
    mine = Client()
    mine.force_login(moderator)
    a_new = Appeal.objects.get(post=new)
    assert (
        "another moderator must decide"
        in mine.get(f"/admin/moderation/appealqueue/{a_new.pk}/decide/").content.decode()
    )
    mine.post(f"/admin/moderation/appealqueue/{a_new.pk}/decide/", {"op": "grant", "reason": "me"})
    assert Appeal.objects.get(pk=a_new.pk).status == "open"

    nobody = Client()
    nobody.force_login(UserFactory(is_staff=True))
    assert nobody.get("/admin/moderation/appealqueue/").status_code == 403
