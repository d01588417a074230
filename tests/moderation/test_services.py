"""The public moderation transitions (moderation.services, content.post_hold_for_reports) and the
rules they share (moderation.policy): state, audit rows and typed errors (DESIGN.md §3, §6, §7)."""

import ast
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from config.api import exception_handler
from config.errors import InvalidTransition, NotFound, PermissionDenied
from content import services as content_services
from content.locks import post_lock
from content.models import Post
from moderation import policy, services
from moderation import services as moderation_services
from moderation.models import AiReview, BlockedMedia, ModerationDecision
from tests.factories import (
    AiReviewFactory,
    EstablishedUserFactory,
    MediaFactory,
    ModerationDecisionFactory,
    PostFactory,
    ReportFactory,
    UserFactory,
)

ROOT = Path(__file__).resolve().parents[2]


def _state(post):
    post.refresh_from_db()
    return post.status, post.moderation_state


def _verdict(post, overall, *, revision=None):
    return services.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision if revision is None else revision,
        provider="stub",
        model="stub-1",
        scores={"stub": overall},
        overall=overall,
        labels=[],
        duration_ms=1.0,
    )


# --- human decisions ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["pending_review", "quarantined"])
def test_approve_publishes_and_audits(staff, status):
    post = PostFactory(status=status, moderation_state="under_review")
    services.post_approve(post_id=post.pk, moderator=staff, reason="fine")
    assert _state(post) == ("published", "approved")
    assert post.published_at is not None
    decision = ModerationDecision.objects.get(post=post)
    assert (decision.action, decision.moderator, decision.reason) == ("approve", staff, "fine")
    assert (decision.from_status, decision.to_status) == (status, "published")
    assert (decision.from_moderation_state, decision.to_moderation_state) == ("under_review", "approved")


@pytest.mark.django_db
def test_approve_refused_from_draft_and_for_deciding_own_post(staff):
    draft = PostFactory(status="draft")
    with pytest.raises(InvalidTransition) as err:
        services.post_approve(post_id=draft.pk, moderator=staff)
    assert err.value.code == "invalid_transition"
    own = PostFactory(author=staff, status="pending_review")
    with pytest.raises(PermissionDenied):
        services.post_approve(post_id=own.pk, moderator=staff)
    assert _state(draft)[0] == "draft" and _state(own)[0] == "pending_review"
    assert not ModerationDecision.objects.exists()


@pytest.mark.django_db
def test_reject_with_reason_is_final_and_blocklists_media(staff):
    post = PostFactory(type="image", status="published", publish_requested=True)
    media = MediaFactory(post=post)
    services.post_reject(post_id=post.pk, moderator=staff, reason="spam ring")
    assert _state(post) == ("rejected", "rejected")
    assert (post.rejection_reason, post.publish_requested) == ("spam ring", False)
    blocked = BlockedMedia.objects.get(sha256=media.sha256)
    assert (blocked.reason, blocked.source_post_id, blocked.added_by) == ("spam ring", post.pk, staff)
    assert ModerationDecision.objects.get(post=post).reason == "spam ring"
    with pytest.raises(services.AlreadyDecided):  # final: nothing moves it again
        services.post_approve(post_id=post.pk, moderator=staff)


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["", "   \n"])
def test_reject_without_reason_is_refused_by_the_service(staff, reason):
    post = PostFactory(status="pending_review", moderation_state="under_review")
    MediaFactory(post=post)
    with pytest.raises(services.ReasonRequired) as err:
        services.post_reject(post_id=post.pk, moderator=staff, reason=reason)
    assert (err.value.code, err.value.status_code) == ("reason_required", 400)
    assert err.value.extra["errors"] == {"reason": ["Required for this decision."]}
    assert _state(post) == ("pending_review", "under_review")
    assert not ModerationDecision.objects.exists() and not BlockedMedia.objects.exists()


def test_reason_required_leaves_the_api_as_a_stable_400():
    response = exception_handler(services.ReasonRequired(), {})
    assert response.status_code == 400
    assert response.data["code"] == "reason_required"
    assert response.data["detail"] == "Give the creator a reason for the rejection."


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["published", "pending_review"])
def test_quarantine_hides_and_audits(staff, status):
    post = PostFactory(status=status)
    services.post_quarantine(post_id=post.pk, moderator=staff)
    assert _state(post) == ("quarantined", "flagged")
    assert ModerationDecision.objects.get(post=post).action == "quarantine"


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["draft", "processing"])
def test_quarantine_refused_before_submission(staff, status):
    post = PostFactory(status=status)
    with pytest.raises(InvalidTransition):
        services.post_quarantine(post_id=post.pk, moderator=staff)
    assert _state(post)[0] == status


@pytest.mark.django_db
def test_decision_on_a_post_that_moved_on_is_already_decided(staff):
    other = UserFactory(is_staff=True)
    post = PostFactory(status="pending_review")
    services.post_quarantine(post_id=post.pk, moderator=staff, expected_status="pending_review")
    for decide in (services.post_approve, services.post_quarantine):
        with pytest.raises(services.AlreadyDecided) as err:
            decide(post_id=post.pk, moderator=other, expected_status="pending_review")
        assert (err.value.code, err.value.extra) == ("already_decided", {"status": "quarantined"})
    assert _state(post)[0] == "quarantined"
    assert ModerationDecision.objects.filter(post=post).count() == 1


@pytest.mark.django_db
def test_decision_on_missing_post_is_not_found(staff):
    for post_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        with pytest.raises(NotFound):
            services.post_approve(post_id=post_id, moderator=staff)


@pytest.mark.django_db
def test_claim_then_release(staff):
    other = UserFactory(is_staff=True)
    post = PostFactory(status="pending_review")
    claim = services.post_claim(post_id=post.pk, moderator=staff)
    assert claim.moderator == staff and claim.expires_at > timezone.now()
    with pytest.raises(services.ClaimedByOther):
        services.post_claim(post_id=post.pk, moderator=other)
    services.post_release_claim(post_id=post.pk, moderator=staff)
    assert services.post_claim(post_id=post.pk, moderator=other).moderator == other
    with pytest.raises(InvalidTransition):
        services.post_claim(post_id=PostFactory(status="published").pk, moderator=staff)


# --- the AI verdict ----------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "overall, state, decision",
    [
        (0.0, ("published", "clean"), "publish"),
        (0.29, ("published", "clean"), "publish"),
        (0.3, ("pending_review", "under_review"), "review"),
        (0.7, ("quarantined", "flagged"), "quarantine"),
        (1.0, ("quarantined", "flagged"), "quarantine"),
    ],
)
def test_ai_verdict_applies_its_band(platform, overall, state, decision):
    platform(ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    post = PostFactory(status="pending_review", moderation_state="under_review", revision=4)
    review = _verdict(post, overall)
    assert _state(post) == state
    assert (review.decision, review.post_revision, review.overall_score) == (decision, 4, overall)
    assert (post.published_at is not None) == (state[0] == "published")


@pytest.mark.django_db
def test_ai_verdict_for_old_revision_deleted_post_or_twice_is_stale(platform):
    platform(ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    post = PostFactory(status="pending_review", moderation_state="under_review", revision=3)
    assert _verdict(post, 0.9, revision=2).decision == "stale"
    assert _state(post) == ("pending_review", "under_review")
    assert _verdict(post, 0.5).decision == "review"  # the first verdict for revision 3 holds it
    assert _verdict(post, 0.0).decision == "stale"  # a redelivered message changes nothing
    assert _state(post) == ("pending_review", "under_review")
    gone = PostFactory(status="pending_review", moderation_state="under_review", deleted_at=timezone.now())
    assert _verdict(gone, 0.0).decision == "stale"
    assert _state(gone)[0] == "pending_review"


@pytest.mark.django_db
def test_ai_failure_is_recorded_and_fails_closed():
    post = PostFactory(status="pending_review", moderation_state="under_review")
    kwargs = {"post_id": post.pk, "revision": post.revision, "provider": "hive", "duration_ms": 2.0}
    services.ai_review_record_failure(error="ConnectionError: down", attempt=1, final=False, **kwargs)
    post.refresh_from_db()
    assert "ai_review_error" not in post.metadata
    services.ai_review_record_failure(error="ConnectionError: still down", attempt=2, final=True, **kwargs)
    assert _state(post) == ("pending_review", "under_review")
    assert post.metadata["ai_review_error"] == "ConnectionError: still down"
    assert list(
        AiReview.objects.filter(post=post).values_list("decision", "attempt").order_by("attempt")
    ) == [
        ("error", 1),
        ("error", 2),
    ]


# --- reports → hold ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_reports_hold_a_published_post_at_the_threshold(platform):
    platform(report_threshold=2)
    post = PostFactory(published=True, revision=5)
    ReportFactory(post=post, reporter=EstablishedUserFactory())
    assert content_services.post_hold_for_reports(post_id=post.pk).status == "published"
    assert not ModerationDecision.objects.filter(post=post).exists()
    ReportFactory(post=post, reporter=EstablishedUserFactory())
    held = content_services.post_hold_for_reports(post_id=post.pk)
    assert _state(post) == ("pending_review", "under_review")
    assert held.revision == post.revision == 6  # an AI verdict in flight for revision 5 is now stale
    assert post.submitted_at is not None
    decision = ModerationDecision.objects.get(post=post)
    assert (decision.action, decision.moderator, decision.reason) == (
        "reports",
        None,
        "2 reports weighing 2 (threshold 2)",
    )
    assert (decision.from_status, decision.to_status) == ("published", "pending_review")


@pytest.mark.django_db
def test_reports_before_the_last_approval_do_not_count(platform, staff):
    """After an approval only fresh reports count, and twice as many (moderation.policy)."""
    platform(report_threshold=2)
    post = PostFactory(published=True)
    ReportFactory(post=post, reporter=EstablishedUserFactory())
    ReportFactory(post=post, reporter=EstablishedUserFactory())
    ModerationDecisionFactory(post=post, moderator=staff, action="approve")
    assert policy.report_weights(post) == {} and policy.hold_threshold(post) == 4
    assert content_services.post_hold_for_reports(post_id=post.pk).status == "published"
    for reason in ("spam", "hate", "spam"):
        content_services.report_create(post_id=post.pk, reporter=EstablishedUserFactory(), reason=reason)
        assert _state(post)[0] == "published"
    content_services.report_create(post_id=post.pk, reporter=EstablishedUserFactory(), reason="hate")
    assert _state(post)[0] == "pending_review"


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["draft", "pending_review", "rejected"])
def test_hold_for_reports_only_from_published(status):
    post = PostFactory(status=status)
    with pytest.raises(InvalidTransition):
        content_services.post_hold_for_reports(post_id=post.pk)


# --- policy -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_band_for_follows_the_platform_thresholds(platform):
    platform(ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    cases = {
        None: "none",
        0.0: "clean",
        0.2999: "clean",
        0.3: "review",
        0.6999: "review",
        0.7: "flag",
        1.0: "flag",
    }
    assert {score: policy.band_for(score) for score in cases} == cases
    platform(ai_review_threshold=0.5, ai_revoke_threshold=0.9)
    assert [policy.band_for(s) for s in (0.4, 0.5, 0.9)] == ["clean", "review", "flag"]
    assert [policy.decision_for(s) for s in (0.4, 0.5, 0.9)] == ["publish", "review", "quarantine"]


@pytest.mark.django_db
def test_filter_by_band_matches_band_for(platform):
    platform(ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    scores = [0.0, 0.29, 0.3, 0.5, 0.7, 0.99, None]
    for score in scores:
        AiReviewFactory(overall_score=score)
    reviews = AiReview.objects.all()
    for band in policy.Band.values:
        got = sorted(
            (r.overall_score for r in policy.filter_by_band(reviews, band, field="overall_score")),
            key=lambda s: -1 if s is None else s,
        )
        want = [s for s in scores if policy.band_for(s) == band]
        assert got == sorted(want, key=lambda s: -1 if s is None else s), band
    assert policy.filter_by_band(reviews, "bogus", field="overall_score").count() == len(scores)
    with pytest.raises(ValueError):
        policy.band_q("bogus")


@pytest.mark.django_db
def test_needs_prescreen_by_mode_and_trust(platform):
    author = UserFactory()
    author.date_joined = timezone.now() - timedelta(days=30)
    author.save()
    post = PostFactory(author=author)
    platform(moderation_mode="ai_prescreen")
    assert policy.needs_prescreen(post) is True
    platform(moderation_mode="reactive_only", trust_min_account_age_days=0, trust_min_approved_posts=0)
    assert policy.needs_prescreen(post) is False
    platform(moderation_mode="reactive_only", trust_min_account_age_days=60)
    assert policy.needs_prescreen(post) is True  # account is 30 days old
    platform(moderation_mode="reactive_only", trust_min_account_age_days=0, trust_min_approved_posts=2)
    PostFactory(author=author, published=True)
    PostFactory(author=author, status="rejected", published_at=timezone.now())  # rejected ones do not count
    assert policy.needs_prescreen(post) is True
    PostFactory(author=author, published=True)
    assert policy.needs_prescreen(post) is False


def test_reject_is_the_decision_that_needs_a_reason():
    assert {"reject"} == policy.REASON_REQUIRED


# --- structure: one lock, no cycles ----------------------------------------------------------------------


def _project_imports(module: str) -> set[str]:
    """Project modules ``module`` imports anywhere in its file (module level or inside functions)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in {"config", "content", "media", "moderation"} and (
                (ROOT / (name.replace(".", "/") + ".py")).exists() or (ROOT / name.replace(".", "/")).is_dir()
            ):
                found.add(name)
    return found


def _reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for name in _project_imports(todo.pop()) - seen:
            seen.add(name)
            todo.append(name)
    return seen


def test_no_moderation_import_cycle_and_content_uses_only_the_policy_leaf():
    assert not {"moderation.tasks", "moderation.review"} & _reachable("moderation.services")
    leaf = _reachable("moderation.policy")
    assert not {"moderation.services", "moderation.tasks", "moderation.review", "content.services"} & leaf
    for module in ("content.services", "content.selectors", "content.locks"):
        assert "moderation.services" not in _reachable(module), module


def test_rows_are_locked_only_through_lock_rows_and_posts_only_through_post_lock():
    offenders = []
    for app in ("config", "content", "media", "moderation"):
        for path in (ROOT / app).rglob("*.py"):
            text = path.read_text()
            if path.name != "locking.py" and ".select_for_update(" in text:
                offenders.append(str(path.relative_to(ROOT)))
            if path.name != "locks.py" and "lock_rows(Post." in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.skipif(connection.vendor == "sqlite", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_post_lock_locks_the_post_row_but_not_its_author():
    post = PostFactory(status="pending_review")
    locked, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                post_lock(post_id=post.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(DatabaseError), transaction.atomic():
            Post.objects.select_for_update(nowait=True).get(pk=post.pk)
        with transaction.atomic():  # the author's row stays free (FOR UPDATE OF the post only)
            type(post.author).objects.select_for_update(nowait=True).get(pk=post.author_id)
    finally:
        release.set()
        holder.join()


@pytest.mark.django_db
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
    content_services.report_create(post_id=post.pk, reporter=EstablishedUserFactory(), reason="hate")
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


@pytest.mark.django_db
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
