"""The moderators' admin (DESIGN.md §7) through its HTTP endpoints: the review queue, the detail page,
single and bulk decisions, claims, permissions, settings audit and the AI accuracy report."""

import importlib
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from content.models import PostStatus, PostType
from media import storage
from media.storage import verify_url_token
from moderation import services
from moderation.admin import preview_url
from moderation.models import (
    AccountAction,
    AccountStanding,
    AiReview,
    BlockedMedia,
    ModerationDecision,
    ModeratorNote,
    PlatformSettings,
    PostClaim,
)
from moderation.platform import get_platform_settings
from moderation.selectors import item_kinds_of
from tests.factories import (
    AiReviewFactory,
    MediaFactory,
    ModerationDecisionFactory,
    PollFactory,
    PostFactory,
    ProcessorRunFactory,
    ReportFactory,
    UserFactory,
)
from tests.media.helpers import jpeg_bytes

QUEUE = reverse("admin:moderation_reviewqueue_changelist")
ACCURACY = reverse("admin:moderation_reviewqueue_accuracy")


def detail_url(post):
    return reverse("admin:moderation_reviewqueue_change", args=[post.pk])


def decide_url(post):
    return reverse("admin:moderation_reviewqueue_decide", args=[post.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def moderators_group() -> Group:
    """The group the data migration created. Transactional tests elsewhere in the suite flush the
    database (and with it migration data): then run the migration's own function again."""
    group = Group.objects.filter(name="Moderators").first()
    if group is None:
        from django.db import connection
        from django.db.migrations.executor import MigrationExecutor

        migration = importlib.import_module("moderation.migrations.0003_moderators_group")
        state = MigrationExecutor(connection).loader.project_state(("moderation", "0003_moderators_group"))
        migration.create_group(state.apps, None)
        accounts = importlib.import_module("moderation.migrations.0008_moderators_account_permissions")
        accounts.add_permissions(state.apps, None)
        group = Group.objects.get(name="Moderators")
    return group


def make_moderator(**kwargs):
    user = UserFactory(is_staff=True, **kwargs)
    user.groups.add(moderators_group())
    return user


def login(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def queued(*, status=PostStatus.PENDING_REVIEW, minutes_ago=10, **kwargs):
    kwargs.setdefault(
        "moderation_state", "under_review" if status == PostStatus.PENDING_REVIEW else "flagged"
    )
    return PostFactory(status=status, submitted_at=timezone.now() - timedelta(minutes=minutes_ago), **kwargs)


def image_post(**kwargs):
    post = queued(type=PostType.IMAGE, body="", **kwargs)
    media = MediaFactory(post=post)
    media.variants = {
        name: {
            "key": f"media/{post.author_id}/{media.pk}/{name}.webp",
            "width": w,
            "height": w,
            "mime_type": "image/webp",
            "size_bytes": 100,
        }
        for name, w in (("thumb", 320), ("medium", 1280))
    }
    media.save()
    return post, media


@pytest.fixture
def moderator(db):
    return make_moderator()


@pytest.fixture
def mod_client(moderator):
    return login(moderator)


# --- the group --------------------------------------------------------------------------------------------


MODERATOR_PERMISSIONS = {
    "content.view_post",
    "content.review_post",
    "content.view_report",
    "media.view_media",
    "media.view_processorrun",
    "moderation.view_aireview",
    "moderation.view_moderationdecision",
    "moderation.view_blockedmedia",
    "moderation.add_blockedmedia",
    "moderation.change_blockedmedia",
    "moderation.view_reviewqueue",
    # issue 15: accounts, their standing and audit, internal notes (moderation/migrations/0006)
    "moderation.view_moderatedaccount",
    "moderation.view_accountstanding",
    "moderation.act_on_account",
    "moderation.view_accountaction",
    "moderation.view_moderatornote",
    "moderation.add_moderatornote",
}


def _perms(group):
    return {
        f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")
    }


@pytest.mark.django_db
def test_moderators_group_has_exactly_what_moderation_needs():
    assert _perms(moderators_group()) == MODERATOR_PERMISSIONS
    Group.objects.filter(name="Moderators").delete()
    assert _perms(moderators_group()) == MODERATOR_PERMISSIONS  # the migration's function, run again
    moderator = make_moderator()
    assert not moderator.has_perm("auth.change_user") and not moderator.has_perm("auth.view_user")
    assert not moderator.has_perm("moderation.change_platformsettings")
    assert moderator.has_perm("content.review_post")


# --- the queue --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_queue_lists_waiting_posts_oldest_first(mod_client):
    newest = queued(title="newest", minutes_ago=1)
    oldest = queued(title="oldest", minutes_ago=300)
    middle = queued(title="middle", status=PostStatus.QUARANTINED, minutes_ago=60)
    PostFactory(title="a draft")
    PostFactory(title="a published one", published=True)
    queued(title="deleted one", deleted_at=timezone.now())
    queued(title="rejected one", status=PostStatus.REJECTED)

    response = mod_client.get(QUEUE)

    assert response.status_code == 200
    listed = [p.title for p in response.context["cl"].result_list]
    assert listed == [oldest.title, middle.title, newest.title]
    html = response.content.decode()
    assert "a draft" not in html and "deleted one" not in html and "rejected one" not in html
    assert "AI accuracy" in html


@pytest.mark.django_db
def test_queue_row_shows_preview_score_labels_reports_author_history_and_claim(mod_client, moderator):
    post, media = image_post(title="sunset")
    PostFactory(author=post.author, status=PostStatus.REJECTED)
    PostFactory(author=post.author, status=PostStatus.REJECTED)
    AiReviewFactory(post=post, overall_score=0.1, decision="review")  # older
    AiReviewFactory(post=post, overall_score=0.55, labels=["suggestive", "alcohol"], decision="review")
    ReportFactory(post=post)
    ReportFactory(post=post)
    other = make_moderator(username="alice")
    PostClaim.objects.create(post=post, moderator=other, expires_at=timezone.now() + timedelta(minutes=5))

    html = mod_client.get(QUEUE).content.decode()

    assert 'class="pf-thumb" src="/m/' in html  # a signed media URL for the thumb variant
    row = mod_client.get(QUEUE).context["cl"].result_list[0]
    assert (row.author_posts, row.author_rejected, row.report_count) == (3, 2, 2)
    assert row.ai_score == pytest.approx(0.55)
    assert "3 posts" in html and "2 rejected" in html
    assert "0.55" in html and "suggestive" in html and "alcohol" in html
    assert ">alice<" in html
    # the author link lists the author's posts
    response = mod_client.get(
        reverse("admin:content_post_changelist") + f"?author__id__exact={post.author_id}"
    )
    assert response.status_code == 200 and len(response.context["cl"].result_list) == 3


@pytest.mark.django_db
def test_queue_thumbnail_url_is_served_to_the_moderator_only(mod_client):
    post, media = image_post()
    storage.save(media.variants["thumb"]["key"], io.BytesIO(jpeg_bytes()), "image/webp")
    row = mod_client.get(QUEUE).context["cl"].result_list[0]
    url = preview_url(row)
    assert mod_client.get(url).status_code == 200
    assert Client().get(url).status_code == 404  # the post is not public


@pytest.mark.django_db
def test_queue_filters_by_score_band_reported_status_type_and_search(mod_client, platform):
    platform(ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    clean = queued(title="clean one")
    AiReviewFactory(post=clean, overall_score=0.1)
    review = queued(title="review one")
    AiReviewFactory(post=review, overall_score=0.5, decision="review")
    flag = queued(title="flag one", status=PostStatus.QUARANTINED, type=PostType.LINK)
    AiReviewFactory(post=flag, overall_score=0.7, decision="quarantine")
    unscored = queued(title="no score", author=UserFactory(username="zed"))
    ReportFactory(post=review)

    def titles(query):
        response = mod_client.get(QUEUE + query)
        assert response.status_code == 200
        return {p.title for p in response.context["cl"].result_list}

    assert titles("?band=clean") == {"clean one"}
    assert titles("?band=review") == {"review one"}
    assert titles("?band=flag") == {"flag one"}
    assert titles("?band=none") == {"no score"}
    assert titles("?reported=yes") == {"review one"}
    assert titles("?reported=no") == {"clean one", "flag one", "no score"}
    assert titles("?status=quarantined") == {"flag one"}
    assert titles("?type__exact=link") == {"flag one"}
    assert titles("?q=zed") == {unscored.title}
    assert titles("?q=review") == {"review one"}

    platform(ai_review_threshold=0.05, ai_revoke_threshold=0.6)  # bands follow the settings
    assert titles("?band=review") == {"clean one", "review one"}


def _fill_queue(n):
    for i in range(n):
        post, media = image_post(title=f"post {i}", minutes_ago=n - i)
        AiReviewFactory(post=post, overall_score=0.4, labels=["x"], decision="review")
        ReportFactory(post=post)
        if i % 3 == 0:
            PostClaim.objects.create(
                post=post, moderator=UserFactory(), expires_at=timezone.now() + timedelta(minutes=5)
            )
        if i % 2 == 0:
            video = queued(type=PostType.VIDEO, title=f"video {i}")
            m = MediaFactory(post=video, kind="video", mime_type="video/mp4")
            m.variants = {"poster_thumb": {"key": f"media/{video.author_id}/{m.pk}/poster_thumb.jpg"}}
            m.save()


@pytest.mark.django_db
def test_queue_page_costs_a_fixed_number_of_queries(mod_client, django_assert_max_num_queries):
    _fill_queue(20)
    mod_client.get(QUEUE)  # warm the platform-settings cache and the content types
    with django_assert_max_num_queries(12) as small:
        assert mod_client.get(QUEUE).status_code == 200
    _fill_queue(40)
    with django_assert_max_num_queries(len(small.captured_queries)) as large:
        response = mod_client.get(QUEUE)
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 50  # a full page of 60 image and 30 video posts
    assert len(large.captured_queries) == len(small.captured_queries)
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = mod_client.get(QUEUE + "?band=review&reported=yes&q=post&p=2")
        assert len(response.context["cl"].result_list) == 10


# --- the detail page --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_detail_page_shows_the_post_as_a_viewer_would_with_reviews_reports_and_history(mod_client):
    post, image = image_post(title="Holiday", link_url="https://example.org/x")
    post.body = "Look at *this*"
    post.save()
    video = MediaFactory(post=post, kind="video", mime_type="video/mp4", position=1)
    video.variants = {
        n: {"key": f"media/{post.author_id}/{video.pk}/{n}.{ext}", "mime_type": mt}
        for n, ext, mt in (
            ("360p", "mp4", "video/mp4"),
            ("720p", "mp4", "video/mp4"),
            ("poster", "jpg", "image/jpeg"),
        )
    }
    video.save()
    audio = MediaFactory(post=post, kind="audio", mime_type="audio/mpeg", position=2)
    audio.variants = {"m4a": {"key": f"media/{post.author_id}/{audio.pk}/m4a.m4a", "mime_type": "audio/mp4"}}
    audio.metadata = {"waveform": [0.0, 0.5, 1.0, 0.25]}
    audio.save()
    AiReviewFactory(
        post=post, overall_score=0.45, scores={"nudity": 0.45, "profanity": 0.1}, decision="review"
    )
    AiReviewFactory(post=post, overall_score=None, scores={}, decision="error", error="provider timed out")
    ReportFactory(post=post, reason="spam", detail="buy now")
    ModerationDecisionFactory(post=post, action="reports", moderator=None, reason="3 distinct reports")

    response = mod_client.get(detail_url(post))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Holiday" in html and "Look at *this*" in html and "https://example.org/x" in html
    assert '<img class="pf-image" src="' in html and "medium.webp" not in html  # signed, never a raw key
    assert '<video class="pf-video" controls' in html and 'poster="' in html
    assert '<source src="' in html
    assert '<audio class="pf-audio" controls' in html
    assert '<svg class="pf-waveform"' in html and "M2.5 0.0V48.0" in html and 'viewBox="0 0 4 48"' in html
    assert "nudity 0.45" in html and "provider timed out" in html
    assert "buy now" in html and "3 distinct reports" in html
    # nothing is editable but the decision controls
    assert 'name="title"' not in html and 'name="body"' not in html and 'name="status"' not in html
    assert 'value="approve"' in html and 'value="reject"' in html and 'value="quarantine"' in html
    assert 'name="expected_status" value="pending_review"' in html

    # the video source is the 720p rendition
    item = next(i for i in response.context["media_items"] if i["media"].pk == video.pk)
    assert verify_url_token(item["video"].rsplit("/", 1)[-1]).key.endswith("/720p.mp4")
    assert verify_url_token(item["poster"].rsplit("/", 1)[-1]).key.endswith("/poster.jpg")


@pytest.mark.django_db
def test_detail_page_shows_a_poll(mod_client):
    poll = PollFactory(post=queued(type=PostType.POLL, body=""))
    html = mod_client.get(detail_url(poll.post)).content.decode()
    assert "Tea or coffee?" in html and "Coffee" in html and "Neither" in html


# --- single decisions -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_approve_from_the_detail_page(mod_client, moderator):
    post = queued()
    response = mod_client.post(decide_url(post), {"op": "approve", "expected_status": "pending_review"})
    assert response.status_code == 302 and response["Location"] == QUEUE
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == ("published", "approved")
    decision = ModerationDecision.objects.get(post=post)
    assert (decision.action, decision.moderator, decision.from_status, decision.to_status) == (
        "approve",
        moderator,
        "pending_review",
        "published",
    )
    assert any("Approved" in m and "published" in m for m in messages_of(response))


@pytest.mark.django_db
def test_reject_needs_a_reason_the_creator_sees(mod_client):
    post = queued()
    response = mod_client.post(decide_url(post), {"op": "reject", "expected_status": "pending_review"})
    post.refresh_from_db()
    assert post.status == "pending_review"
    assert any("reason" in m for m in messages_of(response))

    mod_client.post(
        decide_url(post), {"op": "reject", "expected_status": "pending_review", "reason": "Spam link"}
    )
    post.refresh_from_db()
    assert (post.status, post.rejection_reason) == ("rejected", "Spam link")
    assert ModerationDecision.objects.get(post=post, action="reject").reason == "Spam link"


@pytest.mark.django_db
def test_quarantine_from_the_detail_page(mod_client):
    post = queued()
    mod_client.post(decide_url(post), {"op": "quarantine", "expected_status": "pending_review"})
    post.refresh_from_db()
    assert (post.status, post.moderation_state) == ("quarantined", "flagged")
    assert ModerationDecision.objects.filter(post=post, action="quarantine").count() == 1


@pytest.mark.django_db
def test_second_moderator_is_told_it_was_already_decided(mod_client):
    post = queued()
    second = login(make_moderator())
    # both opened the page while it was pending review
    mod_client.post(decide_url(post), {"op": "approve", "expected_status": "pending_review"})
    response = second.post(
        decide_url(post), {"op": "reject", "expected_status": "pending_review", "reason": "nope"}, follow=True
    )
    post.refresh_from_db()
    assert post.status == "published"
    assert ModerationDecision.objects.filter(post=post).count() == 1
    assert "already decided: it is now published" in response.content.decode()


@pytest.mark.django_db
def test_a_claim_blocks_other_moderators_unless_they_take_over(mod_client, moderator):
    post = queued()
    mod_client.post(decide_url(post), {"op": "claim"})
    assert PostClaim.objects.get(post=post).moderator == moderator

    other = make_moderator(username="bob")
    other_client = login(other)
    html = other_client.get(detail_url(post)).content.decode()
    assert f"{moderator.username} is working on this post" in html
    assert 'name="take_over"' in html and 'value="take_over"' in html

    response = other_client.post(decide_url(post), {"op": "approve", "expected_status": "pending_review"})
    post.refresh_from_db()
    assert post.status == "pending_review"
    assert any("take it over" in m for m in messages_of(response))
    response = other_client.post(decide_url(post), {"op": "claim"})
    assert PostClaim.objects.get(post=post).moderator == moderator
    assert any("already claimed" in m for m in messages_of(response))

    other_client.post(decide_url(post), {"op": "take_over"})
    assert PostClaim.objects.get(post=post).moderator == other
    # now the first moderator is the one who has to take over
    mod_client.post(decide_url(post), {"op": "approve", "expected_status": "pending_review"})
    post.refresh_from_db()
    assert post.status == "pending_review"
    mod_client.post(
        decide_url(post), {"op": "approve", "expected_status": "pending_review", "take_over": "1"}
    )
    post.refresh_from_db()
    assert post.status == "published"
    assert not PostClaim.objects.filter(post=post).exists()


@pytest.mark.django_db
def test_release_a_claim(mod_client, moderator):
    post = queued()
    mod_client.post(decide_url(post), {"op": "claim"})
    assert "Release claim" in mod_client.get(detail_url(post)).content.decode()
    mod_client.post(decide_url(post), {"op": "release"})
    assert not PostClaim.objects.filter(post=post).exists()


@pytest.mark.django_db
def test_a_moderator_cannot_moderate_their_own_post(mod_client, moderator):
    post = queued(author=moderator)
    assert "your own post" in mod_client.get(detail_url(post)).content.decode()
    response = mod_client.post(decide_url(post), {"op": "approve", "expected_status": "pending_review"})
    post.refresh_from_db()
    assert post.status == "pending_review"
    assert any("cannot moderate their own posts" in m for m in messages_of(response))
    assert not ModerationDecision.objects.filter(post=post).exists()


@pytest.mark.django_db
def test_staff_without_review_permission_may_look_but_not_decide(moderator):
    post = queued()
    looker = UserFactory(is_staff=True)
    looker.user_permissions.add(
        Permission.objects.get(codename="view_reviewqueue"), Permission.objects.get(codename="view_post")
    )
    c = login(looker)
    assert c.get(detail_url(post)).status_code == 200  # may look
    assert "You may look but not decide" in c.get(detail_url(post)).content.decode()
    assert c.post(decide_url(post), {"op": "approve", "expected_status": "pending_review"}).status_code == 403
    assert c.post(decide_url(post), {"op": "claim"}).status_code == 403
    # the bulk action is refused as well
    c.post(QUEUE, {"action": "approve_selected", "_selected_action": [post.pk], "confirm": "yes", "index": 0})
    c.post(QUEUE, {"action": "approve_selected", "_selected_action": [post.pk], "confirm": "yes"})
    post.refresh_from_db()
    assert post.status == "pending_review"
    assert not ModerationDecision.objects.exists() and not PostClaim.objects.exists()
    # and a moderator's GET to the decide URL changes nothing
    assert login(moderator).get(decide_url(post)).status_code == 405


# --- bulk decisions ---------------------------------------------------------------------------------------


def _bulk(client, action, posts, **extra):
    return client.post(
        QUEUE, {"action": action, "_selected_action": [p.pk for p in posts], "index": 0, **extra}
    )


def _confirm(client, action, posts, **extra):
    data = {"action": action, "_selected_action": [p.pk for p in posts], "confirm": "yes"}
    data.update({f"expected_{p.pk}": p.status for p in posts})
    data.update(extra)
    return client.post(QUEUE, data)


@pytest.mark.django_db
def test_bulk_approve_asks_for_confirmation_then_approves(mod_client):
    posts = [queued(title=f"bulk {i}") for i in range(3)]
    response = _bulk(mod_client, "approve_selected", posts)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Approve these posts?" in html and all(p.title in html for p in posts)
    assert 'name="expected_' in html and 'name="confirm" value="yes"' in html
    assert all(p.status == "pending_review" for p in posts if not p.refresh_from_db())

    response = _confirm(mod_client, "approve_selected", posts)
    assert response.status_code == 302
    assert {p.status for p in posts if not p.refresh_from_db()} == {"published"}
    assert ModerationDecision.objects.filter(action="approve").count() == 3
    assert "Approved 3 posts." in messages_of(response)


@pytest.mark.django_db
def test_bulk_reject_needs_a_reason(mod_client):
    posts = [queued(), queued(status=PostStatus.QUARANTINED)]
    html = _bulk(mod_client, "reject_selected", posts).content.decode()
    assert '<textarea id="pf-reason" name="reason"' in html

    response = _confirm(mod_client, "reject_selected", posts)
    assert response.status_code == 200  # shown again, with the error
    assert {p.status for p in posts if not p.refresh_from_db()} == {"pending_review", "quarantined"}

    _confirm(mod_client, "reject_selected", posts, reason="Off-topic")
    assert {(p.status, p.rejection_reason) for p in posts if not p.refresh_from_db()} == {
        ("rejected", "Off-topic")
    }
    assert ModerationDecision.objects.filter(action="reject").count() == 2


@pytest.mark.django_db
def test_bulk_quarantine_and_claim(mod_client, moderator):
    posts = [queued(), queued()]
    _confirm(mod_client, "claim_selected", posts)
    assert PostClaim.objects.filter(moderator=moderator).count() == 2
    _confirm(mod_client, "release_selected", posts)
    assert not PostClaim.objects.exists()
    _confirm(mod_client, "quarantine_selected", posts)
    assert {p.status for p in posts if not p.refresh_from_db()} == {"quarantined"}


@pytest.mark.django_db
def test_bulk_second_moderator_gets_already_decided_and_nothing_changes(mod_client):
    a, b = queued(title="first"), queued(title="second")
    second = login(make_moderator())
    # the second moderator's confirmation page was rendered while both were pending
    mod_client.post(decide_url(a), {"op": "quarantine", "expected_status": "pending_review"})
    response = _confirm(second, "approve_selected", [PostFactory.build(pk=a.pk, status="pending_review"), b])
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, b.status) == ("quarantined", "published")
    assert ModerationDecision.objects.filter(post=a).count() == 1
    msgs = messages_of(response)
    assert "Approved 1 post." in msgs
    assert any("first" in m and "already decided: it is now quarantined" in m for m in msgs)

    # a post decided before the confirmation page is shown is listed as already decided
    html = _bulk(second, "reject_selected", [a]).content.decode()
    assert "already decided: it is now published" not in html
    html = _bulk(second, "approve_selected", [b]).content.decode()
    assert "already decided: it is now published" in html


@pytest.mark.django_db
def test_bulk_respects_claims_unless_take_over(mod_client, moderator):
    post = queued()
    PostClaim.objects.create(
        post=post, moderator=UserFactory(), expires_at=timezone.now() + timedelta(minutes=5)
    )
    response = _confirm(mod_client, "approve_selected", [post])
    post.refresh_from_db()
    assert post.status == "pending_review"
    assert any("take it over" in m for m in messages_of(response))
    _confirm(mod_client, "approve_selected", [post], take_over="1")
    post.refresh_from_db()
    assert post.status == "published"


# --- who may reach what -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_moderator_cannot_touch_platform_settings_or_users(mod_client):
    ps = PlatformSettings.objects.create()
    assert (
        mod_client.get(reverse("admin:moderation_platformsettings_change", args=[ps.pk])).status_code == 403
    )
    response = mod_client.post(
        reverse("admin:moderation_platformsettings_change", args=[ps.pk]),
        {"ai_review_threshold": 0.9},
    )
    assert response.status_code == 403
    assert mod_client.get(reverse("admin:auth_user_changelist")).status_code == 403
    assert mod_client.get(reverse("admin:auth_group_changelist")).status_code == 403
    index = mod_client.get(reverse("admin:index")).content.decode()
    assert "Review queue" in index and "Platform settings" not in index and "Users" not in index


@pytest.mark.django_db
def test_creator_cannot_reach_the_admin(user):
    c = login(user)
    response = c.get(QUEUE)
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]
    post = queued()
    response = c.post(decide_url(post), {"op": "approve"})
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]
    post.refresh_from_db()
    assert post.status == "pending_review"


@pytest.mark.django_db
def test_settings_change_by_a_superuser_is_audited():
    admin_user = UserFactory(is_staff=True, is_superuser=True)
    c = login(admin_user)
    ps = get_platform_settings(fresh=True)
    url = reverse("admin:moderation_platformsettings_change", args=[ps.pk])
    assert c.get(url).status_code == 200
    data = {
        "moderation_mode": "ai_prescreen",
        "ai_review_threshold": "0.4",
        "ai_revoke_threshold": "0.8",
        "report_threshold": "3",
        "post_processing_enabled": "on",
        "processor_event_trigger_media_enabled": "on",
        "media_sweep_cron": "*/15 * * * *",
        "trust_min_account_age_days": "0",
        "trust_min_approved_posts": "0",
        "blocked_media_action": "refuse",
        "claim_minutes": "15",
    }
    assert c.post(url, data).status_code == 302
    assert get_platform_settings().ai_review_threshold == 0.4  # the cache was invalidated
    audit = ModerationDecision.objects.get(action="settings")
    assert audit.moderator == admin_user
    assert audit.details["ai_review_threshold"] == "0.4" and audit.details["ai_revoke_threshold"] == "0.8"


# --- the records behind the queue -------------------------------------------------------------------------


@pytest.mark.django_db
def test_processor_runs_are_read_only_with_a_step_timeline(mod_client):
    run = ProcessorRunFactory(
        result="failed",
        steps=[
            {
                "name": "probe",
                "status": "ok",
                "duration_ms": 12.0,
                "input": {"path": "x"},
                "output": {"w": 1},
            },
            {"name": "transcode", "status": "failed", "duration_ms": 80.0, "input": {}, "error": "boom"},
        ],
    )
    changelist = reverse("admin:media_processorrun_changelist")
    for query in ("", "?result__exact=failed", "?processor=image", f"?media__kind__exact={run.media.kind}"):
        response = mod_client.get(changelist + query)
        assert response.status_code == 200 and len(response.context["cl"].result_list) == 1
    html = mod_client.get(reverse("admin:media_processorrun_change", args=[run.pk])).content.decode()
    assert "transcode" in html and "80 ms" in html and "boom" in html and 'class="pf-bar"' in html
    assert 'type="submit"' not in html or 'name="_save"' not in html
    assert mod_client.post(reverse("admin:media_processorrun_change", args=[run.pk]), {}).status_code == 403

    media_html = mod_client.get(reverse("admin:media_media_change", args=[run.media.pk])).content.decode()
    assert f"?media__id__exact={run.media.pk}" in media_html and "1 run(s)" in media_html


@pytest.mark.django_db
def test_moderators_manage_the_blocklist(mod_client, moderator):
    post = queued()
    response = mod_client.post(
        reverse("admin:moderation_blockedmedia_add"),
        {"sha256": "a" * 64, "reason": "CSAM hash", "source_post": post.pk},
    )
    assert response.status_code == 302
    blocked = BlockedMedia.objects.get(sha256="a" * 64)
    assert (blocked.added_by, blocked.source_post_id) == (moderator, post.pk)
    change = reverse("admin:moderation_blockedmedia_change", args=[blocked.pk])
    mod_client.post(change, {"sha256": "a" * 64, "reason": "updated", "source_post": ""})
    blocked.refresh_from_db()
    assert blocked.reason == "updated"
    assert (
        mod_client.post(reverse("admin:moderation_blockedmedia_delete", args=[blocked.pk])).status_code == 403
    )
    assert mod_client.get(reverse("admin:moderation_aireview_changelist")).status_code == 200
    assert mod_client.get(reverse("admin:moderation_moderationdecision_changelist")).status_code == 200
    assert mod_client.get(reverse("admin:content_report_changelist")).status_code == 200
    assert mod_client.get(reverse("admin:content_post_changelist")).status_code == 200


# --- AI accuracy ------------------------------------------------------------------------------------------


def _outcome(ai_decision, score, human, *, days_ago=1, stale_after=False):
    post = PostFactory(status="published" if human == "approve" else "rejected")
    AiReviewFactory(post=post, decision=ai_decision, overall_score=score)
    if stale_after:
        AiReviewFactory(post=post, decision="stale", overall_score=0.99)
    d = ModerationDecisionFactory(post=post, action=human)
    ModerationDecision.objects.filter(pk=d.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return post


@pytest.mark.django_db
def test_accuracy_page_compares_ai_verdicts_with_human_decisions(mod_client):
    _outcome("publish", 0.1, "approve")  # true negative
    _outcome("publish", 0.2, "reject")  # false negative (reported later, rejected)
    _outcome("review", 0.5, "approve")  # false positive
    _outcome("review", 0.6, "reject", stale_after=True)  # stale review ignored
    _outcome("quarantine", 0.8, "approve")  # false positive
    _outcome("quarantine", 0.9, "reject")
    _outcome("quarantine", 0.9, "reject", days_ago=60)  # outside the default period
    PostFactory()  # no decision at all
    no_ai = PostFactory(status="published")
    ModerationDecisionFactory(post=no_ai, action="approve")
    # a post approved then rejected counts once, as rejected
    flip = _outcome("publish", 0.05, "approve", days_ago=2)
    ModerationDecisionFactory(post=flip, action="reject")

    response = mod_client.get(ACCURACY)

    assert response.status_code == 200
    report = response.context["report"]
    assert report.decided == 8 and report.without_ai == 1
    assert report.bands == {
        "clean": {"approve": 1, "reject": 2},
        "review": {"approve": 1, "reject": 1},
        "flag": {"approve": 1, "reject": 1},
    }
    assert (report.approved, report.false_positives) == (3, 2)
    assert (report.rejected, report.false_negatives) == (4, 2)
    assert report.false_positive_rate == pytest.approx(2 / 3)
    assert report.false_negative_rate == pytest.approx(0.5)
    by_t = {row.threshold: row for row in report.what_if}
    assert [row.threshold for row in report.what_if] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    # approved scores 0.1, 0.5, 0.8; rejected scores 0.2, 0.6, 0.9, 0.05
    assert (by_t[0.5].approved_at_or_above, by_t[0.5].rejected_below, by_t[0.5].rejected_at_or_above) == (
        2,
        2,
        2,
    )
    assert (by_t[0.1].approved_at_or_above, by_t[0.1].rejected_below) == (3, 1)
    assert (by_t[0.9].approved_at_or_above, by_t[0.9].rejected_below, by_t[0.9].rejected_at_or_above) == (
        0,
        3,
        1,
    )
    html = response.content.decode()
    assert '<td id="pf-fpr">67%</td>' in html and '<td id="pf-fnr">50%</td>' in html

    # a wider period takes the old one in; a bad period falls back to the default
    start = (timezone.localdate() - timedelta(days=90)).isoformat()
    report = mod_client.get(ACCURACY, {"from": start, "to": timezone.localdate().isoformat()}).context[
        "report"
    ]
    assert report.decided == 9 and report.bands["flag"]["reject"] == 2
    assert mod_client.get(ACCURACY, {"from": "2030-01-01", "to": "2020-01-01"}).context["report"].decided == 8


@pytest.mark.django_db
def test_accuracy_page_needs_the_queue_permission(user):
    staff = UserFactory(is_staff=True)
    assert login(staff).get(ACCURACY).status_code == 403
    assert login(user).get(ACCURACY).status_code == 302


@pytest.mark.django_db
def test_ai_review_records_are_listed(mod_client):
    review = AiReviewFactory(post=queued(), overall_score=0.33, decision="review")
    html = mod_client.get(reverse("admin:moderation_aireview_changelist")).content.decode()
    assert str(review.post_id) in html
    assert AiReview.objects.count() == 1


# --- issue 15: reports as items, accounts, mark sensitive, notes, ergonomics -----------------------------


def act_url(post):
    return reverse("admin:moderation_reviewqueue_act", args=[post.pk])


@pytest.mark.django_db
def test_decide_and_next_lands_on_the_next_item(mod_client):
    first = queued(title="first", minutes_ago=30)
    second = queued(title="second", minutes_ago=20)
    third = queued(title="third", minutes_ago=10)
    detail = mod_client.get(detail_url(first)).content.decode()
    assert f'data-pf-next="{detail_url(second)}"' in detail and 'data-pf-prev=""' in detail
    response = mod_client.post(decide_url(first), {"op": "approve", "expected_status": "pending_review"})
    assert response.status_code == 302 and response["Location"] == detail_url(second)
    response = mod_client.post(decide_url(second), {"op": "quarantine", "expected_status": "pending_review"})
    assert response["Location"] == detail_url(third)  # quarantined stays queued, but the next one is next
    response = mod_client.post(decide_url(third), {"op": "reject", "reason": "spam"})
    assert response["Location"] == detail_url(second)  # the queue's first item left: the quarantined one
    mod_client.post(decide_url(second), {"op": "approve"})
    assert mod_client.post(decide_url(first), {"op": "approve"})["Location"] == detail_url(first)  # refused
    # the last decision of an empty queue goes back to the list
    last = queued(title="last")
    assert mod_client.post(decide_url(last), {"op": "approve"})["Location"] == QUEUE


@pytest.mark.django_db
def test_keyboard_shortcuts_are_documented_on_the_list_and_the_detail_page(mod_client):
    post = queued()
    for url in (QUEUE, detail_url(post)):
        html = mod_client.get(url).content.decode()
        assert 'id="pf-shortcuts"' in html and "Keyboard shortcuts" in html
        for key, what in (("a", "approve"), ("r", "reject"), ("q", "quarantine"), ("s", "mark sensitive")):
            assert f"<kbd>{key}</kbd></th><td>{what}" in html
        assert "<kbd>j / k</kbd>" in html and "postflow.js" in html
    assert 'data-pf-page="list"' in mod_client.get(QUEUE).content.decode()


@pytest.mark.django_db
def test_chips_only_above_the_floor_and_flagged_media_blurred(mod_client, platform, settings):
    settings.MODERATION_CHIP_FLOOR = 0.2
    platform(ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    clean, _ = image_post(title="clean", minutes_ago=30)
    AiReviewFactory(post=clean, overall_score=0.0, scores={"nudity": 0.0, "violence": 0.0, "drugs": 0.0})
    flagged, _ = image_post(title="flagged", minutes_ago=20)
    AiReviewFactory(
        post=flagged,
        overall_score=0.8,
        scores={"nudity": 0.8, "violence": 0.25, "drugs": 0.01},
        decision="quarantine",
    )
    html = mod_client.get(QUEUE).content.decode()
    rows = html.split("<tr")
    clean_row = next(r for r in rows if ">clean</span>" in r)
    flagged_row = next(r for r in rows if ">flagged</span>" in r)
    assert "pf-label" not in clean_row and "pf-blurbox pf-blur" not in clean_row
    assert ">nudity<" in flagged_row and ">violence<" in flagged_row and ">drugs<" not in flagged_row
    assert "pf-blurbox pf-blur" in flagged_row
    assert "pf-blurbox pf-blur" in mod_client.get(detail_url(flagged)).content.decode()
    assert "pf-blurbox pf-blur" not in mod_client.get(detail_url(clean)).content.decode()


@pytest.mark.django_db
def test_a_reported_published_post_is_a_queue_item_with_its_reports_and_strikes(mod_client, moderator):
    post = PostFactory(title="reported one", published=True)
    ReportFactory(post=post, detail="ads everywhere")
    services.account_act(user_id=post.author_id, moderator=moderator, action="warn", reason="spam")
    response = mod_client.get(QUEUE + "?kind=reported")
    assert [p.title for p in response.context["cl"].result_list] == ["reported one"]
    html = response.content.decode()
    assert "pf-kind-reported" in html and "1 strike<" in html
    detail = mod_client.get(detail_url(post)).content.decode()
    assert "ads everywhere" in detail and 'value="dismiss"' in detail and 'value="sensitive"' in detail
    assert 'value="approve"' not in detail  # already public: keep it by dismissing the reports
    response = mod_client.post(decide_url(post), {"op": "dismiss", "reason": "fine"})
    assert response.status_code == 302
    post.refresh_from_db()
    assert post.status == "published" and not post.reports.filter(status="open").exists()
    assert post.reports.get().resolution_note == "fine"


@pytest.mark.django_db
def test_mark_sensitive_from_the_detail_page(mod_client):
    post = queued(title="graphic")
    response = mod_client.post(
        decide_url(post),
        {"op": "sensitive", "spoiler_text": "Medical imagery", "expected_status": "pending_review"},
    )
    assert response.status_code == 302
    post.refresh_from_db()
    assert (post.status, post.sensitive, post.spoiler_text) == ("published", True, "Medical imagery")
    assert ModerationDecision.objects.filter(post=post, action="sensitive").exists()


@pytest.mark.django_db
def test_account_actions_and_notes_from_a_post_and_from_the_accounts_admin(mod_client, moderator):
    post = queued(title="by a troll")
    author = post.author
    r = mod_client.post(act_url(post), {"op": "suspend", "reason": "ban evasion"})
    assert r.status_code == 302 and r["Location"] == detail_url(post)
    assert author.standing.status == "suspended"
    assert AccountAction.objects.get(user=author, action="suspend").post_id == post.pk
    mod_client.post(act_url(post), {"op": "note_post", "note": "looks like the old spam ring"})
    mod_client.post(act_url(post), {"op": "note_account", "note": "second account of user X"})
    assert set(ModeratorNote.objects.values_list("post_id", "user_id", "text")) == {
        (post.pk, None, "looks like the old spam ring"),
        (None, author.pk, "second account of user X"),
    }
    html = mod_client.get(detail_url(post)).content.decode()
    assert (
        "looks like the old spam ring" in html and "second account of user X" in html and "Suspended" in html
    )

    account = reverse("admin:moderation_moderatedaccount_change", args=[author.pk])
    accounts = reverse("admin:moderation_moderatedaccount_changelist")
    assert mod_client.get(accounts + "?standing=suspended").context["cl"].result_list[0] == author
    html = mod_client.get(account).content.decode()
    assert "ban evasion" in html and "by a troll" in html and "second account of user X" in html
    act = reverse("admin:moderation_moderatedaccount_act", args=[author.pk])
    assert mod_client.post(act, {"op": "restore"}).status_code == 302
    author.standing.refresh_from_db()
    assert author.standing.status == "good"
    mod_client.post(act, {"op": "limit", "reason": ""})  # a reason is required: refused
    author.standing.refresh_from_db()
    assert author.standing.status == "good"


@pytest.mark.django_db
def test_account_actions_need_the_permission(moderator):
    post = queued()
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_reviewqueue", "view_post", "view_moderatedaccount"])
    )
    c = login(viewer)
    assert c.get(detail_url(post)).status_code == 200
    assert c.post(act_url(post), {"op": "suspend", "reason": "x"}).status_code == 403
    assert not AccountAction.objects.exists()


KINDS = ("text", "link", "poll", "image", "video", "audio")


def _bulk_queue(n: int) -> None:
    """``n`` queue items of mixed kinds, bulk-created: held, quarantined and reported posts of every
    type, with media, AI reviews, reports, claims and account standing."""
    from django.contrib.auth import get_user_model

    from content.models import Post, Report
    from media.models import Media

    User = get_user_model()
    start = User.objects.count()
    authors = User.objects.bulk_create(
        [User(username=f"bulk{start + i}", date_joined=timezone.now() - timedelta(days=9)) for i in range(50)]
    )
    AccountStanding.objects.bulk_create(
        [
            AccountStanding(user=a, strikes=i % 4, status="limited" if i % 10 == 0 else "good")
            for i, a in enumerate(authors)
        ]
    )
    now = timezone.now()
    posts = []
    for i in range(n):
        state = i % 3  # held, quarantined, reported
        posts.append(
            Post(
                author=authors[i % len(authors)],
                type=KINDS[i % len(KINDS)],
                title=f"bulk {i}",
                status=("pending_review", "quarantined", "published")[state],
                moderation_state=("under_review", "flagged", "clean")[state],
                submitted_at=now - timedelta(seconds=n - i),
                published_at=now if state == 2 else None,
                sensitive=i % 7 == 0,
            )
        )
    Post.objects.bulk_create(posts, batch_size=1000)
    media = []
    for p in posts:
        if p.type in ("image", "video", "audio"):
            m = Media(
                post=p,
                owner_id=p.author_id,
                kind=p.type,
                original_key=f"media/{p.author_id}/x/o",
                mime_type="x/y",
                sha256="0" * 64,
                processing_status="ready",
            )
            m.variants = {
                "thumb": {"key": f"media/{p.author_id}/{m.pk}/thumb.jpg"},
                "poster_thumb": {"key": f"media/{p.author_id}/{m.pk}/pt.jpg"},
            }
            media.append(m)
    Media.objects.bulk_create(media, batch_size=1000)
    AiReview.objects.bulk_create(
        [
            AiReview(
                post=p,
                provider="stub",
                overall_score=(i % 10) / 10,
                scores={"nudity": (i % 10) / 10},
                labels=[],
                decision="review",
            )
            for i, p in enumerate(posts)
        ],
        batch_size=1000,
    )
    reporters = User.objects.bulk_create([User(username=f"rep{start + i}") for i in range(3)])
    Report.objects.bulk_create(
        [
            Report(post=p, reporter=reporters[j], reason="spam")
            for i, p in enumerate(posts)
            if i % 3 == 2 or i % 5 == 0
            for j in range(1 + i % 3)
        ],
        batch_size=1000,
    )
    PostClaim.objects.bulk_create(
        [PostClaim(post=p, moderator=authors[0], expires_at=now + timedelta(minutes=5)) for p in posts[::11]]
    )


@pytest.mark.django_db
def test_queue_page_costs_a_fixed_number_of_queries_with_10000_mixed_items(
    mod_client, django_assert_max_num_queries
):
    _bulk_queue(60)
    mod_client.get(QUEUE)  # warm the platform-settings cache and the content types
    with django_assert_max_num_queries(14) as small:
        assert mod_client.get(QUEUE).status_code == 200
    _bulk_queue(10_000)
    with django_assert_max_num_queries(len(small.captured_queries)) as large:
        response = mod_client.get(QUEUE)
        assert response.status_code == 200
        rows = response.context["cl"].result_list
        assert len(rows) == 50
    assert len(large.captured_queries) == len(small.captured_queries)
    for query in ("?kind=reported&p=7", "?band=review&type__exact=video", "?q=bulk&reported=yes"):
        with django_assert_max_num_queries(len(small.captured_queries)):
            more = mod_client.get(QUEUE + query)
            assert more.status_code == 200 and len(more.context["cl"].result_list) == 50
        rows = [*rows, *more.context["cl"].result_list]
    assert {r.type for r in rows} == set(KINDS)
    assert {k.name for r in rows for k in item_kinds_of(r)} == {"held", "quarantined", "reported"}
    post = rows[10]
    with django_assert_max_num_queries(40):
        assert mod_client.get(detail_url(post)).status_code == 200
