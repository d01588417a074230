"""Reports as queue items and their weight (DESIGN.md §11, moderation/policy.py): every open report
queues its post; only weighty reports hide it; decisions resolve reports, dismissing keeps the post;
the hostile-user attack of issue 15 no longer hides anything, a legitimate group still does."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from content import services as content_services
from content.models import PostStatus, Report, ReportStatus
from moderation import policy, services
from moderation.models import AccountActionKind, ModerationDecision
from moderation.selectors import item_kinds_of, queue_page, review_queue
from tests.conftest import client_for
from tests.factories import EstablishedUserFactory, PostFactory, UserFactory
from tests.moderation.test_admin import make_moderator

pytestmark = pytest.mark.django_db


@pytest.fixture
def moderator():
    return make_moderator()


def report(post, reporter, reason="spam"):
    return content_services.report_create(post_id=post.pk, reporter=reporter, reason=reason)


def status_of(post) -> str:
    post.refresh_from_db()
    return post.status


def api_report(post, reporter):
    return client_for(reporter).post(
        f"/api/v1/content/posts/{post.pk}/report", {"reason": "spam"}, format="json"
    )


# --- the attack of issue 15, and the legitimate case -----------------------------------------------------


def test_three_accounts_registered_a_second_ago_cannot_hide_a_post(platform):
    platform(report_threshold=3)
    post = PostFactory(published=True)
    sockpuppets = []
    for i in range(3):
        r = client_for().post(
            "/api/v1/auth/register",
            {"username": f"sock{i}", "password": "a-long-enough-pass-1"},
            format="json",
        )
        assert r.status_code == 201
        sockpuppets.append(r.json()["token"])
    for token in sockpuppets:
        c = client_for()
        c.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert (
            c.post(f"/api/v1/content/posts/{post.pk}/report", {"reason": "spam"}, format="json").status_code
            == 201
        )
    assert status_of(post) == PostStatus.PUBLISHED
    assert client_for().get(f"/api/v1/content/posts/{post.pk}").status_code == 200
    # ...but the moderators see every report: the post is a queue item, marked reported
    row = queue_page(review_queue().filter(pk=post.pk))[0]
    assert [k.name for k in item_kinds_of(row)] == ["reported"] and row.report_count == 3


def test_established_reporters_hide_a_post_at_the_threshold():
    post = PostFactory(published=True)
    for reporter in EstablishedUserFactory.create_batch(2):
        report(post, reporter)
        assert status_of(post) == PostStatus.PUBLISHED
    report(post, EstablishedUserFactory())
    assert status_of(post) == PostStatus.PENDING_REVIEW
    held = ModerationDecision.objects.get(post=post, action="reports")
    assert held.details["threshold"] == 3 and sorted(held.details["weights"].values()) == [1.0, 1.0, 1.0]


def test_after_an_approval_fresh_weightier_reports_are_needed(moderator):
    post = PostFactory(published=True)
    for reporter in EstablishedUserFactory.create_batch(3):
        report(post, reporter)
    assert status_of(post) == PostStatus.PENDING_REVIEW
    services.post_approve(post_id=post.pk, moderator=moderator)
    assert status_of(post) == PostStatus.PUBLISHED
    assert set(Report.objects.filter(post=post).values_list("status", "resolution")) == {
        ("resolved", "approve")
    }

    # The attack's second half: three more (even established) accounts right after the approval.
    for reporter in EstablishedUserFactory.create_batch(3):
        report(post, reporter)
    assert status_of(post) == PostStatus.PUBLISHED  # the threshold doubled to 6
    assert policy.hold_threshold(post) == 6
    row = queue_page(review_queue().filter(pk=post.pk))[0]
    assert row.report_count == 3 and row.reports_total == 6  # still in the queue, every report shown
    for reporter in EstablishedUserFactory.create_batch(3):
        report(post, reporter)
    assert status_of(post) == PostStatus.PENDING_REVIEW


def test_reporters_whose_reports_were_mostly_not_upheld_weigh_nothing(moderator, settings):
    settings.REPORT_TRACK_RECORD_MIN = 3
    serial = EstablishedUserFactory()
    for _ in range(3):
        earlier = PostFactory(published=True)
        report(earlier, serial)
        services.reports_dismiss(post_id=earlier.pk, moderator=moderator, note="nothing wrong")
    target = PostFactory(published=True)
    report(target, serial)
    assert policy.report_weights(target) == {serial.pk: 0.0}
    # one upheld report in the past does not save a record that is mostly wrong
    upheld = PostFactory(status=PostStatus.PUBLISHED)
    report(upheld, serial)
    services.post_reject(post_id=upheld.pk, moderator=moderator, reason="spam")
    assert policy.report_weights(target) == {serial.pk: 0.0}


def test_reporter_weight_rules(settings):
    settings.REPORT_MIN_ACCOUNT_AGE_HOURS = 24
    settings.REPORT_TRACK_RECORD_MIN = 3
    now = timezone.now()
    old = now - timedelta(days=2)
    w = policy.reporter_weight
    assert w(joined=now - timedelta(hours=23), status=None, upheld=5, not_upheld=0, now=now) == 0.0
    assert w(joined=old, status=None, upheld=0, not_upheld=0, now=now) == 1.0
    assert w(joined=old, status="suspended", upheld=0, not_upheld=0, now=now) == 0.0
    assert w(joined=old, status="limited", upheld=0, not_upheld=0, now=now) == 0.5
    assert w(joined=old, status=None, upheld=0, not_upheld=1, now=now) == 0.5
    assert w(joined=old, status=None, upheld=1, not_upheld=3, now=now) == 0.0
    assert w(joined=old, status=None, upheld=3, not_upheld=3, now=now) == 1.0


# --- reports as queue items: status, resolution, notes ---------------------------------------------------


def test_one_report_below_the_threshold_queues_the_post_without_hiding_it(platform):
    platform(report_threshold=3)
    post = PostFactory(published=True)
    quiet = PostFactory(published=True)
    report(post, EstablishedUserFactory())
    assert status_of(post) == PostStatus.PUBLISHED
    queued = set(review_queue().values_list("pk", flat=True))
    assert post.pk in queued and quiet.pk not in queued


def test_dismiss_keeps_the_post_and_records_who_when_and_the_note(moderator):
    post = PostFactory(published=True, moderation_state="clean")
    r1, r2 = report(post, EstablishedUserFactory()), report(post, UserFactory())
    services.reports_dismiss(post_id=post.pk, moderator=moderator, note="satire, allowed")
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == ("published", "clean")
    for r in (r1, r2):
        r.refresh_from_db()
        assert (r.status, r.resolution, r.resolved_by, r.resolution_note) == (
            ReportStatus.DISMISSED,
            "dismiss",
            moderator,
            "satire, allowed",
        )
        assert r.resolved_at is not None
    assert post.pk not in set(review_queue().values_list("pk", flat=True))
    assert ModerationDecision.objects.filter(post=post, action="dismiss", moderator=moderator).exists()
    with pytest.raises(services.AlreadyDecided):
        services.reports_dismiss(post_id=post.pk, moderator=moderator)


def test_dismissing_the_reports_that_hid_a_post_publishes_it_again(moderator, platform):
    platform(report_threshold=1)
    post = PostFactory(published=True, moderation_state="clean")
    report(post, EstablishedUserFactory())
    assert status_of(post) == PostStatus.PENDING_REVIEW
    services.reports_dismiss(post_id=post.pk, moderator=moderator)
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == ("published", "clean")
    assert client_for().get(f"/api/v1/content/posts/{post.pk}").status_code == 200


@pytest.mark.parametrize(
    "decide, resolution",
    [
        (lambda p, m: services.post_reject(post_id=p.pk, moderator=m, reason="hate"), "reject"),
        (lambda p, m: services.post_quarantine(post_id=p.pk, moderator=m), "quarantine"),
        (
            lambda p, m: services.post_mark_sensitive(post_id=p.pk, moderator=m, spoiler_text="gore"),
            "sensitive",
        ),
    ],
)
def test_any_decision_on_the_post_resolves_its_open_reports(moderator, decide, resolution):
    post = PostFactory(published=True)
    report(post, EstablishedUserFactory())
    decide(post, moderator)
    assert list(Report.objects.filter(post=post).values_list("status", "resolution", "resolved_by")) == [
        ("resolved", resolution, moderator.pk)
    ]
    rows = queue_page(review_queue().filter(pk=post.pk))
    assert all("reported" not in [k.name for k in item_kinds_of(row)] for row in rows)  # quarantined stays


def test_mark_sensitive_publishes_behind_a_content_warning(moderator):
    post = PostFactory(status=PostStatus.PENDING_REVIEW, moderation_state="under_review")
    services.post_mark_sensitive(
        post_id=post.pk, moderator=moderator, reason="graphic", spoiler_text="Surgery"
    )
    post.refresh_from_db()
    assert (post.status, post.moderation_state, post.sensitive, post.spoiler_text) == (
        "published",
        "approved",
        True,
        "Surgery",
    )
    decision = ModerationDecision.objects.get(post=post, action="sensitive")
    assert (decision.from_status, decision.to_status, decision.reason) == (
        "pending_review",
        "published",
        "graphic",
    )
    with pytest.raises(services.ValidationFailed):
        services.post_mark_sensitive(post_id=post.pk, moderator=moderator, spoiler_text="x" * 501)


def test_suspended_reporters_weigh_nothing(moderator):
    reporter = EstablishedUserFactory()
    post = PostFactory(published=True)
    report(post, reporter)
    services.account_act(
        user_id=reporter.pk, moderator=moderator, action=AccountActionKind.SUSPEND, reason="spam"
    )
    assert policy.report_weights(post) == {reporter.pk: 0.0}


def test_reports_and_notes_never_reach_the_api(moderator):
    post = PostFactory(published=True)
    report(post, EstablishedUserFactory())
    services.note_add(author=moderator, text="SECRET-NOTE on the post", post_id=post.pk)
    services.note_add(author=moderator, text="SECRET-NOTE on the account", user_id=post.author_id)
    for who in (post.author, UserFactory(), None):
        body = client_for(who).get(f"/api/v1/content/posts/{post.pk}").content.decode()
        assert "SECRET-NOTE" not in body
    with pytest.raises(services.ValidationFailed):
        services.note_add(author=moderator, text=" ", post_id=post.pk)
