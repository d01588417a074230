"""Every post transition, allowed and refused (DESIGN.md §3)."""

import re

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.errors import InvalidTransition, MediaFailed, NotFound, PermissionDenied, ValidationFailed
from content import services
from content import services as content_services
from content.locks import post_lock
from content.models import ModerationState, Post, PostStatus, PostType
from media.models import ProcessingStatus
from moderation.models import ModerationDecision
from tests.conftest import queued
from tests.factories import MediaFactory, PollFactory, PostFactory, ReportFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_create_text_post_is_draft(user):
    post = services.post_create(author=user, type="text", title="t", body="b")
    assert (post.status, post.moderation_state) == ("draft", "unreviewed")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"type": "text", "body": "  "}, "body"),
        ({"type": "link", "link_url": ""}, "link_url"),
        ({"type": "link", "link_url": "javascript:alert(1)"}, "link_url"),
        ({"type": "link", "link_url": "ftp://example.com/x"}, "link_url"),
        ({"type": "poll"}, "poll"),
        ({"type": "text", "body": "x", "poll": {"question": "q", "options": ["a", "b"]}}, "poll"),
    ],
)
def test_create_validates_type_requirements(user, kwargs, field):
    with pytest.raises(ValidationFailed) as err:
        services.post_create(author=user, **kwargs)
    assert field in err.value.extra["errors"]


@pytest.mark.parametrize("options", [["only one"], [f"o{i}" for i in range(11)], ["same", "SAME"], ["a", ""]])
def test_poll_option_rules(user, options):
    with pytest.raises(ValidationFailed):
        services.post_create(author=user, type="poll", poll={"question": "q?", "options": options})


def test_poll_post_created_with_options(user):
    post = services.post_create(author=user, type="poll", poll={"question": "q?", "options": ["a", "b", "c"]})
    assert [o.text for o in post.poll.options.all()] == ["a", "b", "c"]


def test_publish_reactive_only_publishes(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user)
    post = services.post_publish(post_id=post.pk, actor=user)
    assert post.status == PostStatus.PUBLISHED and post.published_at is not None


def test_publish_ai_prescreen_waits_for_review_and_sends_after_commit(
    user, platform, broker, django_capture_on_commit_callbacks
):
    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post = services.post_publish(post_id=post.pk, actor=user)
        assert queued(broker, "moderation") == []  # nothing before commit
    assert (post.status, post.moderation_state) == ("pending_review", "under_review")
    for cb in callbacks:
        cb()
    messages = queued(broker, "moderation")
    assert [(m.actor_name, m.args) for m in messages] == [("review_post", (str(post.pk), post.revision))]


def test_publish_rolled_back_sends_nothing(user, platform, broker):
    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.post_publish(post_id=post.pk, actor=user)
        raise RuntimeError("request failed later")
    assert queued(broker, "moderation") == []
    assert Post.objects.get(pk=post.pk).status == PostStatus.DRAFT


@pytest.mark.parametrize("status", ["pending_review", "published", "quarantined", "rejected"])
def test_publish_refused_from_other_states(user, status):
    post = PostFactory(author=user, status=status)
    with pytest.raises(InvalidTransition):
        services.post_publish(post_id=post.pk, actor=user)


def test_publish_by_other_user_is_not_found(user, other_user):
    post = PostFactory(author=user)
    with pytest.raises(NotFound):
        services.post_publish(post_id=post.pk, actor=other_user)


def test_publish_image_post_needs_ready_image(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user, type=PostType.IMAGE, body="")
    with pytest.raises(ValidationFailed) as err:
        services.post_publish(post_id=post.pk, actor=user)
    assert err.value.code == "media_required"


def test_publish_with_failed_media_is_409(user):
    post = PostFactory(author=user, type=PostType.IMAGE)
    MediaFactory(post=post, processing_status=ProcessingStatus.FAILED)
    with pytest.raises(MediaFailed):
        services.post_publish(post_id=post.pk, actor=user)


def test_publish_while_media_pending_is_requested_then_completes(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user, type=PostType.IMAGE, status=PostStatus.PROCESSING)
    media = MediaFactory(post=post, processing_status=ProcessingStatus.PROCESSING)
    post = services.post_publish(post_id=post.pk, actor=user)
    assert (post.status, post.publish_requested) == ("processing", True)
    media.processing_status = ProcessingStatus.READY
    media.save()
    post = services.post_media_settled(post_id=post.pk)
    assert post.status == PostStatus.PUBLISHED and not post.publish_requested


def test_media_settled_without_request_returns_to_draft(user):
    post = PostFactory(author=user, type=PostType.IMAGE, status=PostStatus.PROCESSING)
    MediaFactory(post=post, processing_status=ProcessingStatus.READY)
    assert services.post_media_settled(post_id=post.pk).status == PostStatus.DRAFT


def test_media_settled_waits_for_every_primary(user):
    post = PostFactory(author=user, type=PostType.IMAGE, status=PostStatus.PROCESSING)
    MediaFactory(post=post, processing_status=ProcessingStatus.READY)
    MediaFactory(post=post, processing_status=ProcessingStatus.PENDING)
    assert services.post_media_settled(post_id=post.pk).status == PostStatus.PROCESSING


def test_media_failed_with_publish_requested_returns_to_draft(user):
    post = PostFactory(author=user, type=PostType.IMAGE, status=PostStatus.PROCESSING, publish_requested=True)
    MediaFactory(post=post, processing_status=ProcessingStatus.FAILED)
    post = services.post_media_settled(post_id=post.pk)
    assert (post.status, post.publish_requested) == ("draft", False)
    assert "failed" in post.metadata["publish_error"]


def test_unpublish_and_edit_then_republish_reviews_again(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user, published=True, moderation_state=ModerationState.APPROVED)
    post = services.post_unpublish(post_id=post.pk, actor=user)
    assert (post.status, post.moderation_state, post.published_at) == ("draft", "unreviewed", None)
    post = services.post_update(post_id=post.pk, actor=user, body="edited")
    assert post.body == "edited"


@pytest.mark.parametrize("status", ["processing", "pending_review", "scheduled", "quarantined", "rejected"])
def test_edit_only_in_draft_or_published(user, status):
    post = PostFactory(author=user, status=status)
    with pytest.raises(InvalidTransition):
        services.post_update(post_id=post.pk, actor=user, body="new")


@pytest.mark.parametrize("status", ["draft", "pending_review", "quarantined", "rejected"])
def test_unpublish_only_from_published(user, status):
    post = PostFactory(author=user, status=status)
    with pytest.raises(InvalidTransition):
        services.post_unpublish(post_id=post.pk, actor=user)


def test_other_user_cannot_edit_published_post(user, other_user):
    post = PostFactory(author=user, published=True)
    with pytest.raises(PermissionDenied):
        services.post_update(post_id=post.pk, actor=other_user, body="x")


def test_soft_delete_keeps_row_and_hides_it(user):
    post = PostFactory(author=user, published=True)
    services.post_delete(post_id=post.pk, actor=user)
    assert Post.objects.get(pk=post.pk).deleted_at is not None
    with pytest.raises(NotFound):
        services.post_publish(post_id=post.pk, actor=user)


def test_poll_vote_replaces_previous_vote(user):
    poll = PollFactory(post__status=PostStatus.PUBLISHED)
    tea, coffee, _ = poll.options.all()
    services.poll_vote(post_id=poll.post.pk, user=user, option_ids=[tea.id])
    services.poll_vote(post_id=poll.post.pk, user=user, option_ids=[coffee.id])
    poll.refresh_from_db()
    assert [o.votes for o in poll.options.all()] == [0, 1, 0]
    assert poll.total_voters == 1


def test_multiple_choice_counts_voters_once(user, other_user):
    poll = PollFactory(post__status=PostStatus.PUBLISHED, multiple_choice=True)
    a, b, c = poll.options.all()
    services.poll_vote(post_id=poll.post.pk, user=user, option_ids=[a.id, b.id])
    services.poll_vote(post_id=poll.post.pk, user=other_user, option_ids=[b.id, c.id, c.id])
    poll.refresh_from_db()
    assert [o.votes for o in poll.options.all()] == [1, 2, 1]
    assert poll.total_voters == 2


def test_single_choice_refuses_two_options(user):
    poll = PollFactory(post__status=PostStatus.PUBLISHED)
    a, b, _ = poll.options.all()
    with pytest.raises(ValidationFailed):
        services.poll_vote(post_id=poll.post.pk, user=user, option_ids=[a.id, b.id])


def test_vote_refused_on_unpublished_poll_and_foreign_option(user):
    draft = PollFactory(post__author=user)
    with pytest.raises(InvalidTransition):
        services.poll_vote(post_id=draft.post.pk, user=user, option_ids=[draft.options.first().id])
    published = PollFactory(post__status=PostStatus.PUBLISHED)
    with pytest.raises(ValidationFailed):
        services.poll_vote(post_id=published.post.pk, user=user, option_ids=[draft.options.first().id])


def test_report_threshold_sends_post_to_review(platform):
    platform(report_threshold=2)
    post = PostFactory(published=True)
    services.report_create(post_id=post.pk, reporter=UserFactory(), reason="spam")
    post.refresh_from_db()
    assert post.status == PostStatus.PUBLISHED
    services.report_create(post_id=post.pk, reporter=UserFactory(), reason="hate")
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == ("pending_review", "under_review")
    assert ModerationDecision.objects.filter(post=post, action="reports").count() == 1


def test_report_once_per_user_and_not_own_post(user):
    post = PostFactory(published=True)
    ReportFactory(post=post, reporter=user)
    with pytest.raises(Exception) as err:
        services.report_create(post_id=post.pk, reporter=user, reason="spam")
    assert err.value.code == "already_reported"
    with pytest.raises(ValidationFailed):
        services.report_create(post_id=post.pk, reporter=post.author, reason="spam")


def test_report_only_published(user):
    post = PostFactory(status=PostStatus.DRAFT)
    with pytest.raises(NotFound):  # a draft of someone else is invisible
        services.report_create(post_id=post.pk, reporter=user, reason="spam")


# --- the one post lock, and what a transition writes ------------------------------------------------------


def test_post_lock_hides_what_the_actor_may_not_see(user, other_user):
    draft = PostFactory(author=user)
    published = PostFactory(author=user, published=True)
    with transaction.atomic():
        assert post_lock(post_id=draft.pk, actor=user) == draft
        with pytest.raises(NotFound):  # someone else's draft: 404, never 403
            post_lock(post_id=draft.pk, actor=other_user)
        with pytest.raises(PermissionDenied):
            post_lock(post_id=published.pk, actor=other_user)
        assert post_lock(post_id=published.pk, actor=other_user, owner_only=False) == published
        for bad in ("not-a-uuid", None, "00000000-0000-0000-0000-000000000000"):
            with pytest.raises(NotFound):
                post_lock(post_id=bad)


def test_post_lock_skips_deleted_posts_unless_asked(user):
    post = PostFactory(author=user, deleted_at=timezone.now())
    with transaction.atomic():
        with pytest.raises(NotFound):
            post_lock(post_id=post.pk)
        assert post_lock(post_id=post.pk, include_deleted=True) == post


def _updated_columns(queries) -> set[str]:
    """Columns set by the UPDATEs of content_post among captured queries."""
    columns = set()
    for q in queries:
        sql = q["sql"]
        if sql.startswith('UPDATE "content_post" SET'):
            assignments = sql.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
            columns |= set(re.findall(r'"(\w+)" = ', assignments))
    return columns


def test_transitions_write_only_the_columns_they_change(user, platform):
    platform(moderation_mode="reactive_only")
    post = PostFactory(author=user)
    with CaptureQueriesContext(connection) as ctx:
        services.post_update(post_id=post.pk, actor=user, body="new body")
    assert _updated_columns(ctx.captured_queries) == {*services.EDITABLE_FIELDS, "revision", "updated_at"}
    with CaptureQueriesContext(connection) as ctx:
        services.post_publish(post_id=post.pk, actor=user)
    fks = {"public_revision", "pending_revision"}
    assert _updated_columns(ctx.captured_queries) == {
        f"{f}_id" if f in fks else f for f in services.SUBMIT_FIELDS
    }
    with CaptureQueriesContext(connection) as ctx:
        services.post_unpublish(post_id=post.pk, actor=user)
    # The draft takes the latest version's content (an edit still waiting included).
    assert _updated_columns(ctx.captured_queries) == {
        *services.REVISION_FIELDS,
        "status",
        "moderation_state",
        "published_at",
        "scheduled_at",
        "public_revision_id",
        "pending_revision_id",
        "revision",
        "updated_at",
    }
    media_post = PostFactory(author=user, type=PostType.IMAGE, status=PostStatus.PROCESSING)
    MediaFactory(post=media_post, processing_status=ProcessingStatus.READY)
    with CaptureQueriesContext(connection) as ctx:
        services.post_media_settled(post_id=media_post.pk)
    assert _updated_columns(ctx.captured_queries) == {"status", "publish_requested", "metadata", "updated_at"}


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
